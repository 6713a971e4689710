"""Consistent hash through the proxy: a request's key (header, cookie, source IP, query parameter)
always reaches the same endpoint; a missing hash cookie with a ttl is generated and set, as Envoy
does, and sending it back sticks to the endpoint it was generated for."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from proxy.routing.snapshot import HashPolicy, Snapshot
from tests.l7.conftest import Proxy, UpstreamServer, cluster, simple_snapshot

StartProxy = Callable[..., Awaitable[Proxy]]
StartUpstream = Callable[[str], Awaitable[UpstreamServer]]


async def three(upstreams: StartUpstream, policy: HashPolicy) -> tuple[Snapshot, list[UpstreamServer]]:
    servers = [await upstreams(f"v{i}") for i in (1, 2, 3)]
    snap = simple_snapshot((cluster("", *servers, lb_policy="RANDOM", hash_policy=policy), 100))
    return snap, servers


async def test_header_key_sticks(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    snap, _ = await three(upstreams, HashPolicy(header="x-user"))
    proxy = await start_proxy(snap)
    client = await proxy.connect()
    seen: dict[str, set[str]] = {}
    for _ in range(3):
        for user in range(100):
            got = await client.request(headers=(("x-user", f"u{user}"),))
            seen.setdefault(f"u{user}", set()).add(got.json()["version"])
    assert all(len(v) == 1 for v in seen.values()), seen
    assert Counter(next(iter(v)) for v in seen.values()).keys() == {"v1", "v2", "v3"}  # keys spread


async def test_missing_key_is_spread(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    """No key: Envoy's ring hash picks at random (here the cluster's RANDOM policy)."""
    snap, _ = await three(upstreams, HashPolicy(header="x-user"))
    proxy = await start_proxy(snap)
    client = await proxy.connect()
    versions = {(await client.request()).json()["version"] for _ in range(60)}
    assert versions == {"v1", "v2", "v3"}  # each missed with probability (2/3)^60 < 1e-10


async def test_cookie_is_generated_then_sticks(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    snap, _ = await three(upstreams, HashPolicy(cookie="sticky", cookie_path="/", cookie_ttl=3600.0))
    proxy = await start_proxy(snap)
    cookies: dict[str, str] = {}
    for _ in range(30):  # new connections: each gets a cookie of its own
        got = await proxy.request()
        set_cookie = got.header("set-cookie")
        assert set_cookie is not None and set_cookie.endswith("; Max-Age=3600; Path=/; HttpOnly"), set_cookie
        value = set_cookie.split(";")[0].split("=", 1)[1].strip('"')
        cookies[value] = got.json()["version"]
    assert len(cookies) == 30
    client = await proxy.connect()
    for value, version in cookies.items():
        for _ in range(3):
            got = await client.request(headers=(("cookie", f'other=1; sticky="{value}"'),))
            assert got.header("set-cookie") is None  # present: nothing to set
            assert got.json()["version"] == version


async def test_cookie_without_ttl_is_not_generated(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    snap, _ = await three(upstreams, HashPolicy(cookie="sticky"))
    proxy = await start_proxy(snap)
    got = await proxy.request()
    assert got.status == 200 and got.header("set-cookie") is None


async def test_source_ip_and_query_parameter(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    snap, _ = await three(upstreams, HashPolicy(source_ip=True))
    proxy = await start_proxy(snap)
    versions = {(await proxy.request()).json()["version"] for _ in range(20)}  # new connections, same IP
    assert len(versions) == 1
    snap, _ = await three(upstreams, HashPolicy(query_parameter="id"))
    proxy = await start_proxy(snap)
    client = await proxy.connect()
    for key in range(30):
        assert len({(await client.request(path=f"/p?x={n}&id={key}")).json()["version"] for n in range(3)}) == 1
