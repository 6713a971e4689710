"""Closed connections are freed by reference counting at once, not left as cycles for the garbage collector:
a connection's protocol object, its decoder and the llhttp parser refer to one another while it is open."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable

from proxy.l7.codec import RequestDecoder
from proxy.l7.downstream import HttpDownstream
from proxy.l7.response_decoder import ResponseDecoder
from proxy.l7.upstream import HttpUpstream
from tests.l7.conftest import Proxy, UpstreamServer, cluster, eventually, simple_snapshot

StartProxy = Callable[..., Awaitable[Proxy]]
StartUpstream = Callable[[str], Awaitable[UpstreamServer]]
RELEASED = (HttpDownstream, RequestDecoder, HttpUpstream, ResponseDecoder)


async def test_closed_connections_leave_no_cycles(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):  # closed by the proxy after `Connection: close`
            client = await proxy.connect()
            response = await client.request(headers=(("connection", "close"),))
            assert response.status == 200
            assert await client.at_eof()
        for _ in range(3):  # closed by the client, after a request and while idle
            client = await proxy.connect()
            assert (await client.request()).status == 200
            client.close()
        client = await proxy.connect()  # the upstream closes its connection after the response
        assert (await client.request(path="/close")).status == 200
        client.close()
        await eventually(lambda: proxy.state.metrics.downstream_active == 0 and v1.closed >= 1)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        cycles = [type(o).__name__ for o in gc.garbage if isinstance(o, RELEASED)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert cycles == []
