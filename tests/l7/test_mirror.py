"""Request mirroring: copies reach the mirror cluster with the authority suffixed `-shadow` and the
request body; the primary never waits for, nor sees, the mirror (a mirror that never answers leaves
every primary response untouched); the per-mirror draw uses `state.rng` (injected here)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace

import pytest

from proxy.l7 import mirror
from proxy.routing.snapshot import Fault, Mirror, Snapshot
from tests.l7.conftest import (
    Proxy,
    UpstreamServer,
    build_request,
    cluster,
    eventually,
    route,
    snapshot,
    vhost,
    weighted,
)

StartProxy = Callable[..., Awaitable[Proxy]]
StartUpstream = Callable[[str], Awaitable[UpstreamServer]]


class Draws:
    """Stands in for `state.rng`: `random()` returns the given values in order."""

    def __init__(self, *values: float) -> None:
        self.values: Iterator[float] = iter(values)

    def random(self) -> float:
        return next(self.values)


class HangingServer:
    """Accepts connections, records each request head, and never answers."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> HangingServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            try:
                self.heads.append(await reader.readuntil(b"\r\n\r\n"))
                await reader.read()  # until the proxy gives up
            except (ConnectionError, asyncio.IncompleteReadError):
                pass

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()


def mirrored(primary: UpstreamServer, *mirrors: tuple[UpstreamServer | HangingServer | int, float],
             timeout: float | None = None, fault: Fault | None = None) -> Snapshot:
    copies = tuple(
        Mirror(c.name, c, percent) for c, percent in
        ((cluster(f"m{i}", s if isinstance(s, int) else s.port), p) for i, (s, p) in enumerate(mirrors)))
    rule = replace(route(weighted((cluster("v1", primary), 100)), timeout=timeout, fault=fault), mirrors=copies)
    return snapshot(vhost(("reviews", "reviews:9080"), rule))


def mirror_count(proxy: Proxy, code: int, flags: str = "-") -> int:
    return sum(n for (_, c, f), n in proxy.state.metrics.mirror.items() if (c, f) == (code, flags))


async def test_copy_has_the_shadow_authority_and_the_body(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    primary, shadow = await upstreams("v1"), await upstreams("shadow")
    proxy = await start_proxy(mirrored(primary, (shadow, 100.0)))
    client = await proxy.connect()
    got = await client.request("POST", "/anything?q=1", host="reviews:9080", headers=(("x-user", "a"),),
                               body=b"b" * 5000)
    assert got.status == 200 and got.json()["version"] == "v1"  # the primary's answer, not the mirror's
    chunked = await client.request("POST", "/chunked-body", headers=(("transfer-encoding", "chunked"),),
                                   body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert chunked.status == 200 and chunked.json()["body_length"] == 11
    await eventually(lambda: len(shadow.requests) == 2)
    first, second = shadow.requests
    assert (first.method, first.target, first.header("host")) == ("POST", "/anything?q=1", "reviews-shadow:9080")
    assert first.header("x-user") == "a" and first.body == b"b" * 5000
    assert first.header("x-request-id") == primary.requests[0].header("x-request-id")
    assert second.header("host") == "reviews-shadow" and second.body == b"hello world"
    await eventually(lambda: mirror_count(proxy, 200) == 2)
    assert proxy.count(200) == 2  # istio_requests_total counts the client's requests only


async def test_a_mirror_that_never_answers_does_not_touch_the_primary(start_proxy: StartProxy,
                                                                      upstreams: StartUpstream) -> None:
    primary = await upstreams("v1")
    hanging = await HangingServer().start()
    try:
        proxy = await start_proxy(mirrored(primary, (hanging.port, 100.0)))
        client = await proxy.connect()
        for i in range(20):  # one keep-alive connection: each response must come before the next request
            got = await client.request(path=f"/r{i}")
            assert got.status == 200 and got.json()["path"] == f"/r{i}"
        await eventually(lambda: len(hanging.heads) == 20)
        # every copy is still waiting for its answer while the primary has answered all 20
        assert all(b"host: reviews-shadow" in h for h in hanging.heads)
        assert proxy.state.metrics.mirror == {}
        assert proxy.count(200) == 20
    finally:
        hanging.close()
    await eventually(lambda: mirror_count(proxy, 0, "UC") == 20)  # the mirror hung up: counted, nothing else


async def test_a_failing_mirror_does_not_touch_the_primary(start_proxy: StartProxy, upstreams: StartUpstream,
                                                           ) -> None:
    primary = await upstreams("v1")
    refused = await upstreams("gone")
    port = refused.port
    await refused.close()
    proxy = await start_proxy(mirrored(primary, (port, 100.0)))
    for _ in range(3):
        assert (await proxy.request()).status == 200
    await eventually(lambda: mirror_count(proxy, 0, "UF") == 3)
    assert proxy.count(200) == 3


async def test_mirror_timeout_is_the_route_timeout(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    primary = await upstreams("v1")
    hanging = await HangingServer().start()
    try:
        proxy = await start_proxy(mirrored(primary, (hanging.port, 100.0), timeout=0.2))
        assert (await proxy.request()).status == 200
        await eventually(lambda: mirror_count(proxy, 0, "UT") == 1)
    finally:
        hanging.close()


async def test_each_mirror_draws_its_own_percentage(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    """percent 50: a draw of 0.49 (49 < 50) copies, 0.51 does not; the second mirror (100 %) draws nothing."""
    primary, half, always = await upstreams("v1"), await upstreams("half"), await upstreams("always")
    proxy = await start_proxy(mirrored(primary, (half, 50.0), (always, 100.0)))
    proxy.state.rng = Draws(0.49, 0.51)  # type: ignore[assignment]
    client = await proxy.connect()
    assert (await client.request(path="/first")).status == 200
    assert (await client.request(path="/second")).status == 200
    await eventually(lambda: len(always.requests) == 2)
    assert [r.target for r in half.requests] == ["/first"]
    assert [r.target for r in primary.requests] == ["/first", "/second"]


async def test_a_body_over_the_limit_is_not_mirrored(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    primary, shadow = await upstreams("v1"), await upstreams("shadow")
    proxy = await start_proxy(mirrored(primary, (shadow, 100.0)))
    got = await proxy.request("POST", "/large", body=b"x" * (mirror.BODY_LIMIT + 1))
    assert got.status == 200 and got.json()["body_length"] == mirror.BODY_LIMIT + 1
    assert mirror_count(proxy, 0, "UO") == 1
    assert (await proxy.request("POST", "/small", body=b"y" * 10)).status == 200
    await eventually(lambda: len(shadow.requests) == 1)
    assert shadow.requests[0].target == "/small"


async def test_pipelined_bodies_are_mirrored_whole(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    """The second request's body arrives while the first is in flight, before it is routed."""
    primary, shadow = await upstreams("v1"), await upstreams("shadow")
    proxy = await start_proxy(mirrored(primary, (shadow, 100.0)))
    client = await proxy.connect()
    await client.send(build_request("POST", "/sleep/50", body=b"1" * 300)
                      + build_request("POST", "/two", headers=(("transfer-encoding", "chunked"),),
                                      body=b"3\r\nabc\r\n0\r\n\r\n"))
    assert (await client.response()).status == 200
    assert (await client.response()).json()["body_length"] == 3
    await eventually(lambda: len(shadow.requests) == 2)
    bodies = {r.target: r.body for r in shadow.requests}
    assert bodies == {"/sleep/50": b"1" * 300, "/two": b"abc"}


@pytest.mark.parametrize(("host", "expected"), [
    (b"reviews", b"reviews-shadow"), (b"reviews:9080", b"reviews-shadow:9080"),
    (b"[::1]", b"[::1]-shadow"), (b"[::1]:80", b"[::1]-shadow:80"),
])
def test_shadow_host(host: bytes, expected: bytes) -> None:
    assert mirror.shadow_host(host) == expected


async def test_copies_reuse_keep_alive_connections(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    primary, shadow = await upstreams("v1"), await upstreams("shadow")
    proxy = await start_proxy(mirrored(primary, (shadow, 100.0)))
    client = await proxy.connect()
    for i in range(1, 6):
        assert (await client.request(path=f"/r{i}")).status == 200
        await eventually(lambda n=i: mirror_count(proxy, 200) == n)  # type: ignore[misc]
    assert shadow.accepted == 1 and [r.sequence for r in shadow.requests] == [1, 2, 3, 4, 5]
    # a mirror that closes its connection after answering: the next copy opens a new one
    assert (await client.request(path="/close")).status == 200
    await eventually(lambda: mirror_count(proxy, 200) == 6 and shadow.closed >= 1)
    assert (await client.request(path="/r7")).status == 200
    await eventually(lambda: mirror_count(proxy, 200) == 7)
    assert shadow.accepted == 2


async def test_a_fault_delay_holds_the_copy_and_an_abort_sends_none(start_proxy: StartProxy,
                                                                    upstreams: StartUpstream) -> None:
    """Envoy's fault filter runs before the router, which sends the copies."""
    primary, shadow = await upstreams("v1"), await upstreams("shadow")
    proxy = await start_proxy(mirrored(primary, (shadow, 100.0), fault=Fault(1.0, 100.0, None, 0.0)))
    client = await proxy.connect()
    await client.send(build_request("GET", "/delayed"))
    await asyncio.sleep(0.05)  # well inside the delay: neither the primary nor the mirror has it
    assert primary.requests == [] and shadow.requests == []
    assert (await client.response()).status == 200
    await eventually(lambda: len(shadow.requests) == 1)
    aborting = await start_proxy(mirrored(primary, (shadow, 100.0), fault=Fault(None, 0.0, 503, 100.0)))
    assert (await aborting.request()).status == 503
    assert len(shadow.requests) == 1 and aborting.state.metrics.mirror == {}
