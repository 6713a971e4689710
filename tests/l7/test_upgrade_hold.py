"""Upgrade requests on a downstream connection: what follows the head waits for the upstream's answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from proxy.routing.match import HttpMatch, StringMatcher
from proxy.routing.snapshot import DirectResponse
from tests.l7.conftest import (
    Proxy,
    UpstreamServer,
    cluster,
    free_port,
    route,
    simple_snapshot,
    snapshot,
    vhost,
    weighted,
)

StartProxy = Callable[..., Awaitable[Proxy]]
StartUpstream = Callable[[str], Awaitable[UpstreamServer]]

UPGRADE = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"


async def test_pipelined_requests_around_a_refused_upgrade(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(b"GET /a HTTP/1.1\r\nHost: reviews\r\n\r\n"
                      b"GET /plain HTTP/1.1\r\nHost: reviews\r\n" + UPGRADE + b"\r\n"
                      b"GET /c HTTP/1.1\r\nHost: reviews\r\n\r\n")
    bodies = [(await client.response()).json()["path"] for _ in range(3)]
    assert bodies == ["/a", "/plain", "/c"]
    by_path = {r.target: r.connection for r in v1.requests}
    # /a's connection carried /plain (it was pooled), but the upgrade attempt's is never reused
    assert by_path["/a"] == by_path["/plain"] != by_path["/c"]


async def test_held_bytes_wait_for_the_answer(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(b"GET /sleep/200 HTTP/1.1\r\nHost: reviews\r\n" + UPGRADE + b"\r\n"
                      b"GET /next HTTP/1.1\r\nHost: reviews\r\n\r\n")
    first = await client.response()
    # the upstream answered the first (after 200 ms) before it ever saw the second
    assert first.status == 200 and [r.target for r in v1.requests] == ["/sleep/200"]
    assert (await client.response()).json()["path"] == "/next"


async def test_upgrade_answered_locally_then_the_next_request(start_proxy: StartProxy) -> None:
    # no endpoint listening: the upgrade request gets 503 UF, and what followed it is served in turn
    port = await free_port()
    proxy = await start_proxy(simple_snapshot((cluster("v1", port), 100), connect_retries=0))
    client = await proxy.connect()
    await client.send(b"GET /ws HTTP/1.1\r\nHost: reviews\r\n" + UPGRADE + b"\r\n"
                      b"GET /x HTTP/1.1\r\nHost: reviews\r\n\r\n")
    assert (await client.response()).status == 503
    assert (await client.response()).status == 503
    assert proxy.count(503, "UF") == 2


async def test_upgrade_to_a_direct_response_route(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    admin = HttpMatch(uri=StringMatcher("prefix", "/admin"))
    snap = snapshot(vhost(("reviews",), route(DirectResponse(403, b"no"), admin, name="admin"),
                          route(weighted((cluster("v1", v1), 100)))))
    proxy = await start_proxy(snap)
    client = await proxy.connect()
    await client.send(b"GET /public HTTP/1.1\r\nHost: reviews\r\n" + UPGRADE + b"\r\n"
                      b"GET /admin/x HTTP/1.1\r\nHost: reviews\r\n\r\n")
    assert (await client.response()).status == 200
    second = await client.response()
    assert (second.status, second.body) == (403, b"no")
    assert [r.target for r in v1.requests] == ["/public"]
