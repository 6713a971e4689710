"""CORS (a route's `corsPolicy`, Envoy's CORS filter): preflights from allowed origins are answered by
the proxy and never reach the upstream; actual requests from allowed origins get the access-control
headers on their response; other origins get nothing (and their preflights go upstream, unless
`unmatchedPreflights: IGNORE`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest

from proxy.config.compile_http import cors_policy
from proxy.routing.snapshot import CorsPolicy, Snapshot
from tests.l7.conftest import Proxy, UpstreamServer, cluster, route, snapshot, vhost, weighted

StartProxy = Callable[..., Awaitable[Proxy]]
StartUpstream = Callable[[str], Awaitable[UpstreamServer]]

POLICY = cors_policy({
    "allowOrigins": [{"exact": "https://app.example.com"}, {"prefix": "https://dev-"},
                     {"regex": r"https://[a-z]+\.partner\.org"}],
    "allowMethods": ["GET", "POST", "PATCH"], "allowHeaders": ["x-token", "content-type"],
    "exposeHeaders": ["x-version"], "maxAge": "24h", "allowCredentials": True,
})
PREFLIGHT = (("access-control-request-method", "PATCH"),)


def with_cors(upstream: UpstreamServer, policy: CorsPolicy | None) -> Snapshot:
    rule = replace(route(weighted((cluster("v1", upstream), 100))), cors=policy)
    return snapshot(vhost(("reviews",), rule))


@pytest.mark.parametrize("origin", ["https://app.example.com", "https://dev-42.example.com",
                                    "https://shop.partner.org"])
async def test_preflight_is_answered_by_the_proxy(start_proxy: StartProxy, upstreams: StartUpstream,
                                                  origin: str) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(with_cors(v1, POLICY))
    got = await proxy.request("OPTIONS", "/api", headers=(("origin", origin), *PREFLIGHT))
    assert got.status == 200 and got.body == b""
    assert got.header("access-control-allow-origin") == origin
    assert got.header("access-control-allow-methods") == "GET,POST,PATCH"
    assert got.header("access-control-allow-headers") == "x-token,content-type"
    assert got.header("access-control-max-age") == "86400"
    assert got.header("access-control-allow-credentials") == "true"
    assert got.header("access-control-expose-headers") is None  # only on actual responses
    assert v1.requests == [] and v1.accepted == 0
    assert proxy.count(200) == 1


async def test_actual_request_from_an_allowed_origin_gets_the_headers(start_proxy: StartProxy,
                                                                      upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(with_cors(v1, POLICY))
    client = await proxy.connect()
    got = await client.request("GET", "/api", headers=(("origin", "https://app.example.com"),))
    assert got.status == 200 and got.json()["version"] == "v1"
    assert got.header("access-control-allow-origin") == "https://app.example.com"
    assert got.header("access-control-allow-credentials") == "true"
    assert got.header("access-control-expose-headers") == "x-version"
    assert got.header("access-control-allow-methods") is None
    # OPTIONS without Access-Control-Request-Method is not a preflight: forwarded
    plain = await client.request("OPTIONS", "/api", headers=(("origin", "https://app.example.com"),))
    assert plain.status == 200 and plain.json()["method"] == "OPTIONS"
    # no Origin, or another origin: no CORS headers
    for headers in ((), (("origin", "https://evil.example"),)):
        other = await client.request("GET", "/api", headers=headers)
        assert other.status == 200
        assert not [n for n, _ in other.headers if n.startswith("access-control-")]
    assert len(v1.requests) == 4


async def test_unmatched_preflight_is_forwarded_by_default(start_proxy: StartProxy,
                                                           upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(with_cors(v1, POLICY))
    got = await proxy.request("OPTIONS", "/api", headers=(("origin", "https://evil.example"), *PREFLIGHT))
    assert got.status == 200 and got.json()["method"] == "OPTIONS"  # the upstream's answer
    assert got.header("access-control-allow-origin") is None
    assert len(v1.requests) == 1


async def test_unmatched_preflight_ignored(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(with_cors(v1, replace(POLICY, forward_unmatched_preflights=False)))
    got = await proxy.request("OPTIONS", "/api", headers=(("origin", "https://evil.example"), *PREFLIGHT))
    assert got.status == 200 and got.body == b""
    assert not [n for n, _ in got.headers if n.startswith("access-control-")]
    assert v1.requests == []


async def test_star_allows_every_origin(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(with_cors(v1, cors_policy({"allowOrigins": [{"exact": "*"}]})))
    got = await proxy.request("OPTIONS", "/", headers=(("origin", "https://any.where"), *PREFLIGHT))
    assert got.status == 200 and got.header("access-control-allow-origin") == "https://any.where"
    assert got.header("access-control-allow-credentials") is None and got.header("access-control-max-age") is None
    assert v1.requests == []


def test_deprecated_allow_origin_is_exact() -> None:
    policy = cors_policy({"allowOrigin": ["https://a.example"]})
    assert policy is not None
    assert [m.describe() for m in policy.allow_origins] == ["exact 'https://a.example'"]
    assert cors_policy({"allowOrigins": [{"exact": "x"}], "unmatchedPreflights": "IGNORE"}) == CorsPolicy(
        allow_origins=policy.allow_origins[:0] + (policy.allow_origins[0].build("exact", "x"),),
        forward_unmatched_preflights=False)


async def test_local_replies_to_an_allowed_origin_carry_the_headers(start_proxy: StartProxy,
                                                                    upstreams: StartUpstream) -> None:
    """A 503 from the proxy (here: the upstream refuses connections) is readable by the browser too."""
    gone = await upstreams("gone")
    await gone.close()
    proxy = await start_proxy(with_cors(gone, POLICY))
    got = await proxy.request("GET", "/api", headers=(("origin", "https://app.example.com"),))
    assert got.status == 503
    assert got.header("access-control-allow-origin") == "https://app.example.com"
    assert got.header("access-control-expose-headers") == "x-version"
    other = await proxy.request("GET", "/api", headers=(("origin", "https://evil.example"),))
    assert other.status == 503 and other.header("access-control-allow-origin") is None
