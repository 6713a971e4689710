"""Failures get Envoy's status, body and response flag; malformed input never breaks the proxy; clients
and upstreams that go away mid-exchange are noticed on the other side; timeouts and graceful drain."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from proxy.l7 import exchange
from tests.l7.conftest import (
    Proxy,
    UpstreamServer,
    build_request,
    cluster,
    eventually,
    free_port,
    simple_snapshot,
)

StartProxy = Callable[..., Awaitable[Proxy]]
StartUpstream = Callable[[str], Awaitable[UpstreamServer]]
RESET = "upstream connect error or disconnect/reset before headers. reset reason: "


async def test_connect_refused_is_503_uf(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    proxy = await start_proxy(simple_snapshot((cluster("v1", await free_port()), 100), connect_retries=0))
    client = await proxy.connect()
    response = await client.request()
    assert response.status == 503
    assert response.body.decode() == RESET + "connection failure"
    assert proxy.count(503, "UF") == 1
    await client.send(build_request())  # the downstream connection is still usable
    assert (await client.response()).status == 503


async def test_default_retries_exhausted_is_uf_urx(start_proxy: StartProxy) -> None:
    """Istio's default policy retries a failed connect twice; then Envoy flags UF,URX."""
    dead = await free_port()
    proxy = await start_proxy(simple_snapshot((cluster("v1", dead), 100)))
    response = await proxy.request()
    assert response.status == 503
    assert response.body.decode() == RESET + "connection failure"
    assert proxy.count(503, "UF,URX") == 1


async def test_failed_connect_is_retried_on_another_endpoint(start_proxy: StartProxy,
                                                             upstreams: StartUpstream) -> None:
    """One dead and one live endpoint in the subset: every request succeeds (retry on the other host)."""
    live = await upstreams("v1")
    dead = await free_port()
    proxy = await start_proxy(simple_snapshot((cluster("v1", dead, live, lb_policy="ROUND_ROBIN"), 100)))
    client = await proxy.connect()
    for _ in range(10):
        response = await client.request()
        assert response.status == 200, response.body
    assert proxy.count(200) == 10
    assert proxy.count(503, "UF") == proxy.count(503, "UF,URX") == 0


@pytest.fixture
async def unresponsive_port() -> AsyncIterator[int]:
    """A listener whose accept queue is full, so further connection attempts get no answer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    await asyncio.sleep(0.05)
    yield port
    for s in (*fillers, listener):
        s.close()


async def test_connect_timeout_is_503_uf(start_proxy: StartProxy, unresponsive_port: int) -> None:
    proxy = await start_proxy(simple_snapshot((cluster("v1", unresponsive_port, connect_timeout=0.2), 100),
                                              connect_retries=0))
    response = await proxy.request()
    assert response.status == 503
    assert response.body.decode() == RESET + "connection timeout"
    assert proxy.count(503, "UF") == 1


async def test_route_timeout_is_504_ut(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100), timeout=0.1))
    client = await proxy.connect()
    response = await client.request(path="/sleep/500")
    assert (response.status, response.body) == (504, b"upstream request timeout")
    assert proxy.count(504, "UT") == 1
    await eventually(lambda: v1.closed == 1)  # the upstream connection is not kept for reuse
    assert (await client.request(path="/fast")).status == 200


async def test_garbage_upstream_response_is_502_upe(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    response = await proxy.request(path="/garbage")
    assert (response.status, response.body.decode()) == (502, RESET + "protocol error")
    assert proxy.count(502, "UPE") == 1


async def test_upstream_closing_before_the_response_is_503_uc(start_proxy: StartProxy,
                                                              upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    response = await client.request(path="/drop")
    assert (response.status, response.body.decode()) == (503, RESET + "connection termination")
    assert proxy.count(503, "UC") == 1
    assert v1.accepted == 1  # a fresh connection that fails is not retried


async def test_upstream_closing_mid_response_closes_the_client(start_proxy: StartProxy,
                                                               upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(build_request(path="/truncate"))
    async with asyncio.timeout(5):
        head = await client.reader.readuntil(b"\r\n\r\n")
        rest = await client.reader.read()  # EOF, not a hang
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 1000" in head
    assert rest == b"0123456789"
    await eventually(lambda: proxy.count(200, "UC") == 1)


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : reviews\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: reviews\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: reviews\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\nHost: reviews\n\n",
    b"POST / HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n",
], ids=["garbage", "space-before-colon", "space-in-target", "cl-and-te", "differing-cl", "negative-cl",
        "missing-host", "two-hosts", "obs-fold", "bare-lf", "bad-chunk-size"])
async def test_malformed_request_is_400_and_the_proxy_goes_on(start_proxy: StartProxy, upstreams: StartUpstream,
                                                              request_bytes: bytes) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(request_bytes)
    response = await client.response()
    assert (response.status, response.body) == (400, b"Bad Request")
    assert response.header("connection") == "close"
    assert await client.at_eof()
    assert proxy.count(400, "DPE") == 1
    assert (await proxy.request()).status == 200  # the next connection is served


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST / HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"GET / HTTP/2.0\r\nHost: reviews\r\n\r\n", 505),
])
async def test_unsupported_framing_or_version(start_proxy: StartProxy, upstreams: StartUpstream,
                                              request_bytes: bytes, status: int) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(request_bytes)
    assert (await client.response()).status == status
    assert await client.at_eof()
    assert not v1.requests


@pytest.mark.parametrize("trickle", [False, True], ids=["one-write", "trickled"])
async def test_oversized_request_head_is_431(start_proxy: StartProxy, upstreams: StartUpstream,
                                             trickle: bool) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    data = b"GET / HTTP/1.1\r\nHost: reviews\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    if trickle:  # a head that never ends must not grow without bound either
        for i in range(0, len(data) - 4, 4096):
            await client.send(data[i:i + 4096])
            await asyncio.sleep(0.001)
    else:
        await client.send(data)
    response = await client.response()
    assert response.status == 431
    assert await client.at_eof()
    assert not v1.requests
    assert proxy.count(431, "DPE") == 1


async def test_malformed_pipelined_request_is_answered_after_the_ones_before(
        start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(build_request(path="/sleep/50") + b"NOT HTTP AT ALL\r\n\r\n")
    assert (await client.response()).json()["path"] == "/sleep/50"
    assert (await client.response()).status == 400
    assert await client.at_eof()


async def test_client_disconnect_mid_request_closes_the_upstream(start_proxy: StartProxy,
                                                                 upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(b"POST /sink HTTP/1.1\r\nHost: reviews\r\nContent-Length: 100000\r\n\r\n" + b"z" * 1000)
    await eventually(lambda: bool(v1.requests))
    client.writer.transport.abort()
    await eventually(lambda: v1.closed == 1)
    await eventually(lambda: proxy.count(0, "DC") == 1)
    assert proxy.state.metrics.downstream_active == 0
    assert not proxy.state.cluster_manager.pools[("127.0.0.1", v1.port)]  # nothing went back to the pool
    assert proxy.state.cluster_manager.active_requests() == 0


async def test_client_disconnect_while_waiting_for_the_response(start_proxy: StartProxy,
                                                                upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(build_request(path="/sleep/300"))
    await eventually(lambda: bool(v1.requests))
    # a reset (a FIN after a complete request is a half-close: the response would still be sent)
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.writer.transport.abort()
    await eventually(lambda: v1.closed == 1)
    assert proxy.count(0, "DC") == 1
    await eventually(lambda: proxy.state.metrics.upstream_active == 0)


async def test_client_half_close_after_pipelined_requests(start_proxy: StartProxy,
                                                          upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(build_request(path="/a") + build_request(path="/b"))
    client.writer.write_eof()  # like `printf ... | nc -N`: everything sent, then shutdown(SHUT_WR)
    assert [(await client.response()).json()["path"] for _ in range(2)] == ["/a", "/b"]
    assert await client.at_eof()


async def test_idle_keep_alive_connection_is_closed(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)), idle_timeout=0.2)
    client = await proxy.connect()
    assert (await client.request()).status == 200
    assert await client.at_eof()
    assert proxy.state.metrics.downstream_active == 0


async def test_an_idle_connection_drops_its_decoder_and_serves_the_next_request(start_proxy: StartProxy,
                                                                              upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)), request_headers_timeout=1.0)
    client = await proxy.connect()
    assert (await client.request(path="/one")).status == 200
    [conn] = proxy.downstreams()
    assert conn.decoder is None  # given up as soon as its first response ended
    assert (await client.request(path="/two")).status == 200
    await eventually(lambda: conn.decoder is None)  # later ones: at the watchdog's next tick
    # a request head still arriving keeps its decoder across ticks
    await client.send(b"GET /three HTTP/1.1\r\nHost: rev")
    await eventually(lambda: conn.decoder is not None and conn.decoder.in_head)
    conn.check_timeouts(asyncio.get_running_loop().time())
    assert conn.decoder is not None
    await client.send(b"iews\r\n\r\n")
    assert (await client.response()).status == 200
    assert [r.target for r in v1.requests] == ["/one", "/two", "/three"]


async def test_slow_request_head_gets_408(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)), request_headers_timeout=0.2)
    client = await proxy.connect()
    await client.send(b"GET / HTTP/1.1\r\nHost: rev")  # and nothing more
    response = await client.response()
    assert (response.status, response.body) == (408, b"request header timeout")
    assert await client.at_eof()
    assert not v1.requests


async def test_shutdown_closes_idle_connections_and_drains_busy_ones(start_proxy: StartProxy,
                                                                     upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    idle, busy = await proxy.connect(), await proxy.connect()
    assert (await idle.request()).status == 200
    await busy.send(build_request(path="/sleep/150"))
    await eventually(lambda: len(v1.requests) == 2)
    for conn in proxy.downstreams():
        conn.shutdown()
    assert await idle.at_eof()
    response = await busy.response()
    assert response.status == 200 and response.header("connection") == "close"
    assert await busy.at_eof()
    await eventually(lambda: not proxy.state.connections)


async def test_upstream_connection_count_stays_balanced(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    for path in ("/ok", "/drop", "/garbage", "/close", "/ok"):
        await proxy.request(path=path)
    v1.close_idle_connections()
    await eventually(lambda: proxy.state.metrics.upstream_active == 0)
    await eventually(lambda: proxy.state.metrics.downstream_active == 0)
    assert proxy.state.cluster_manager.active_requests() == 0


async def test_an_unexpected_exception_is_a_500_not_a_crash(start_proxy: StartProxy, upstreams: StartUpstream,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    with monkeypatch.context() as patch:
        patch.setattr(exchange, "route", broken)
        client = await proxy.connect()
        response = await client.request()
        assert (response.status, response.header("connection")) == (500, "close")
        assert await client.at_eof()
    assert (await proxy.request()).status == 200
