"""Fault injection (a route's `fault`): aborts are answered by the proxy with flag FI and never reach the
upstream; delays hold the request (flag DI) without blocking the connection's loop; the draws use
`state.rng`, so tests inject the random values instead of counting outcomes."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator

import pytest

from proxy.l7 import errors
from proxy.routing.snapshot import Fault
from tests.l7.conftest import (
    Proxy,
    UpstreamServer,
    build_request,
    cluster,
    eventually,
    simple_snapshot,
)

StartProxy = Callable[..., Awaitable[Proxy]]
StartUpstream = Callable[[str], Awaitable[UpstreamServer]]


class Draws:
    """Stands in for `state.rng`: `random()` returns the given values in order (and fails after them)."""

    def __init__(self, *values: float) -> None:
        self.values: Iterator[float] = iter(values)
        self.drawn = 0

    def random(self) -> float:
        self.drawn += 1
        return next(self.values)


async def test_abort_is_a_local_reply_with_fi(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100), fault=Fault(None, 0.0, 503, 100.0)))
    client = await proxy.connect()
    for _ in range(3):  # the connection stays usable after an abort
        response = await client.request()
        assert response.status == 503
        assert response.body == b"fault filter abort"
        assert response.header("content-type") == "text/plain"
    assert proxy.count(503, "FI") == 3
    assert v1.accepted == 0 and v1.requests == []


async def test_abort_follows_the_draw_against_the_percentage(start_proxy: StartProxy,
                                                             upstreams: StartUpstream) -> None:
    """0.49 * 100 < 50 aborts; 0.51 * 100 does not."""
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100), fault=Fault(None, 0.0, 418, 50.0)))
    proxy.state.rng = Draws(0.49, 0.51)  # type: ignore[assignment]
    client = await proxy.connect()
    first = await client.request(path="/first")
    second = await client.request(path="/second")
    assert first.status == 418 and first.body == b"fault filter abort"
    assert second.status == 200 and second.json()["path"] == "/second"
    assert [r.target for r in v1.requests] == ["/second"]
    assert proxy.count(418, "FI") == 1 and proxy.count(200) == 1


async def test_delay_holds_the_request_then_forwards_it(start_proxy: StartProxy,
                                                        upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100), fault=Fault(0.2, 100.0, None, 0.0)))
    loop = asyncio.get_running_loop()
    client = await proxy.connect()
    started = loop.time()
    response = await client.request("POST", path="/anything", body=b"x" * 5000)  # body held meanwhile
    elapsed = loop.time() - started
    assert response.status == 200
    assert response.json()["body_length"] == 5000
    assert elapsed >= 0.15  # a functional check that the delay happened, not a measurement
    assert proxy.count(200, "DI") == 1 and proxy.count(200) == 0


async def test_delay_then_abort(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    """Both fire: Envoy delays, then aborts; the flags are DI,FI and the upstream is never contacted."""
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100), fault=Fault(0.05, 100.0, 500, 100.0)))
    response = await proxy.request()
    assert response.status == 500 and response.body == b"fault filter abort"
    assert proxy.count(500, "DI,FI") == 1
    assert v1.accepted == 0


async def test_client_leaving_during_a_delay_is_dc(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100), fault=Fault(0.2, 100.0, None, 0.0)))
    client = await proxy.connect()
    await client.send(build_request())
    await eventually(lambda: any(d.exchange is not None for d in proxy.downstreams()))
    # a reset (a FIN after a complete request is a half-close: the response would still be sent)
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.writer.transport.abort()
    await eventually(lambda: proxy.count(0, "DI,DC") == 1)
    await asyncio.sleep(0.4)  # past the end of the delay: the cancelled request must not be sent
    assert v1.accepted == 0 and v1.requests == []
    assert sum(s.count for s in proxy.state.metrics.http.values()) == 1
    assert proxy.state.cluster_manager.active_requests() == 0


async def test_no_percentage_injects_nothing(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    """A delay and an abort without a percentage: no request is touched, and nothing is drawn."""
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100), fault=Fault(5.0, 0.0, 503, 0.0)))
    draws = Draws()
    proxy.state.rng = draws  # type: ignore[assignment]
    response = await proxy.request()
    assert response.status == 200
    assert proxy.count(200) == 1
    assert draws.drawn == 0
    assert len(v1.requests) == 1


@pytest.mark.parametrize(("flags", "expected"), [
    ("-", "DI"), ("FI", "DI,FI"), ("DC", "DI,DC"), ("UF,URX", "UF,DI,URX"), ("UT", "UT,DI"),
])
def test_delay_flag_takes_envoys_place(flags: str, expected: str) -> None:
    assert errors.with_delay(flags) == expected
