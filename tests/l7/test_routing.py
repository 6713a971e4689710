"""Routing through the proxy: weighted picks, snapshot pinning across reloads, authority forms, route
actions (redirect, direct response), rewrites and header operations."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from proxy.routing.match import HttpMatch, StringMatcher
from proxy.routing.snapshot import Cluster, DirectResponse, Endpoint, HeaderOps, Redirect, Rewrite, Snapshot
from tests.l7.conftest import (
    SERVICE,
    Proxy,
    UpstreamServer,
    build_request,
    cluster,
    route,
    simple_snapshot,
    snapshot,
    vhost,
    weighted,
)
from tests.stats import binomial_interval

StartProxy = Callable[..., Awaitable[Proxy]]
StartUpstream = Callable[[str], Awaitable[UpstreamServer]]


class FixedRandom:
    """Stands in for state.rng: hands out chosen values for the weighted picks."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)

    def getrandbits(self, bits: int) -> int:
        return self.values.pop(0)


async def test_weighted_pick_uses_the_injected_random_value(start_proxy: StartProxy,
                                                            upstreams: StartUpstream) -> None:
    v1, v3 = await upstreams("v1"), await upstreams("v3")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 50), (cluster("v3", v3), 50)))
    # Envoy: random % total, then the first cumulative end above it: [0, 50) → v1, [50, 100) → v3
    proxy.state.rng = FixedRandom(0, 49, 50, 99, 100, 2**32 - 1)  # type: ignore[assignment]
    client = await proxy.connect()
    versions = [(await client.request()).json()["version"] for _ in range(6)]
    assert versions == ["v1", "v1", "v3", "v3", "v1", ("v1" if (2**32 - 1) % 100 < 50 else "v3")]


async def test_single_destination_does_not_draw(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 0)))
    proxy.state.rng = FixedRandom()  # type: ignore[assignment]  # any draw would raise IndexError
    assert (await proxy.request()).json()["version"] == "v1"


async def test_weighted_split_is_statistically_right(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1, v3 = await upstreams("v1"), await upstreams("v3")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 80), (cluster("v3", v3), 20)))
    n = 400
    client = await proxy.connect()
    await client.send(b"".join(build_request() for _ in range(n)))  # pipelined, one connection
    counts = Counter([(await client.response()).json()["version"] for _ in range(n)])
    # exact binomial tails: fails with probability < 1e-6 when the true share of v3 is 20 %
    lo, hi = binomial_interval(n, 0.2)
    assert lo <= counts["v3"] <= hi, counts
    assert counts["v1"] + counts["v3"] == n


async def test_new_snapshot_applies_to_the_next_request_on_the_same_connection(
        start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1, v3 = await upstreams("v1"), await upstreams("v3")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    assert (await client.request()).json()["version"] == "v1"
    proxy.state.snapshot = simple_snapshot((cluster("v3", v3), 100), version=2)
    assert (await client.request()).json()["version"] == "v3"
    assert len(proxy.downstreams()) == 1  # same downstream connection all along


async def test_in_flight_request_finishes_on_its_snapshot(start_proxy: StartProxy,
                                                          upstreams: StartUpstream) -> None:
    v1, v3 = await upstreams("v1"), await upstreams("v3")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    slow = await proxy.connect()
    await slow.send(build_request(path="/sleep/200"))
    while not v1.requests:  # the request reached v1 ...
        await asyncio.sleep(0.005)
    proxy.state.snapshot = simple_snapshot((cluster("v3", v3), 100), version=2)  # ... then the swap
    fresh = await proxy.request()
    assert fresh.json()["version"] == "v3"
    response = await slow.response()
    assert response.status == 200 and response.json()["version"] == "v1"


async def test_connection_keeps_its_listener_when_a_reload_removes_it(start_proxy: StartProxy,
                                                                      upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    assert (await client.request()).status == 200
    proxy.state.snapshot = Snapshot(2, "hash-2", {}, {}, {}, {})  # the listener is gone
    assert (await client.request()).status == 200


async def test_absolute_form_target_routes_by_its_authority(start_proxy: StartProxy,
                                                            upstreams: StartUpstream) -> None:
    v1, v2 = await upstreams("v1"), await upstreams("v2")
    snap = snapshot(vhost(("reviews:9080", "reviews"), route(weighted((cluster("v1", v1), 100)))),
                    vhost(("ratings",), route(weighted((cluster("v2", v2), 100)))), role="mesh")
    proxy = await start_proxy(snap)
    client = await proxy.connect()
    # as sent by a client with HTTP_PROXY set: the URI's authority wins over the Host header
    response = await client.request(path="http://reviews:9080/reviews/0?x=1", host="ratings")
    assert response.json()["version"] == "v1"
    received = v1.requests[0]
    assert received.target == "/reviews/0?x=1"
    assert received.header("host") == "reviews:9080"
    assert (await client.request(path="/r", host="ratings")).json()["version"] == "v2"


async def test_no_virtual_host_is_404_nr(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    response = await client.request(host="unknown.example")
    assert response.status == 404 and response.body == b""
    assert (await client.request()).status == 200  # keep-alive survives a local reply
    assert proxy.count(404, "NR") == 1


async def test_virtual_host_without_matching_route_is_404_nr(start_proxy: StartProxy,
                                                             upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    only_api = HttpMatch(uri=StringMatcher.build("prefix", "/api"))
    proxy = await start_proxy(snapshot(vhost(("reviews",), route(weighted((cluster("v1", v1), 100)), only_api))))
    assert (await proxy.request(path="/api/x")).status == 200
    assert (await proxy.request(path="/other")).status == 404
    assert proxy.count(404, "NR") == 1


async def test_header_match_selects_the_route(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1, v2 = await upstreams("v1"), await upstreams("v2")
    jason = HttpMatch(headers=(("end-user", StringMatcher.build("exact", "jason")),))
    proxy = await start_proxy(snapshot(vhost(
        ("reviews",), route(weighted((cluster("v2", v2), 100)), jason), route(weighted((cluster("v1", v1), 100))))))
    assert (await proxy.request(headers=(("end-user", "jason"),))).json()["version"] == "v2"
    assert (await proxy.request(headers=(("end-user", "other"),))).json()["version"] == "v1"


async def test_missing_subset_is_503_nc(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    proxy = await start_proxy(simple_snapshot((None, 100)))
    response = await proxy.request()
    assert response.status == 503
    assert proxy.count(503, "NC") == 1


async def test_subset_without_endpoints_is_503_uh(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(simple_snapshot((cluster("v9"), 100)))
    response = await proxy.request()
    assert (response.status, response.body) == (503, b"no healthy upstream")
    assert response.header("content-type") == "text/plain"
    assert proxy.count(503, "UH") == 1


async def test_redirect(start_proxy: StartProxy) -> None:
    v1_prefix = HttpMatch(uri=StringMatcher.build("prefix", "/v1/"))
    snap = snapshot(vhost(("reviews", "reviews:9080"),
                          route(Redirect(prefix_rewrite="/v2/", code=308), v1_prefix),
                          route(Redirect(uri="/new", authority="other.example", scheme="https"))))
    proxy = await start_proxy(snap)
    moved = await proxy.request(path="/v1/items?page=2", host="reviews:9080")
    assert moved.status == 308
    assert moved.header("location") == "http://reviews:9080/v2/items?page=2"
    elsewhere = await proxy.request(path="/old?q=1")
    assert elsewhere.status == 301
    assert elsewhere.header("location") == "https://other.example/new?q=1"


async def test_direct_response(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(snapshot(vhost(("reviews",), route(DirectResponse(418, b"short and stout")))))
    client = await proxy.connect()
    response = await client.request()
    assert (response.status, response.body) == (418, b"short and stout")
    head = await client.request("HEAD")
    assert (head.status, head.body, head.header("content-length")) == (418, b"", "15")
    assert proxy.count(418) == 2


async def test_rewrite_and_header_operations(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    prefix = HttpMatch(uri=StringMatcher.build("prefix", "/old"))
    action = weighted((cluster("v1", v1), 100),
                      request_headers=HeaderOps(set=(("x-dest", "v1"), ("x-both", "destination"))),
                      response_headers=HeaderOps(add=(("x-served-by", "v1"),)))
    snap = snapshot(vhost(("reviews",), route(
        action, prefix, rewrite=Rewrite(uri="/new", authority="reviews.internal"),
        request_headers=HeaderOps(set=(("x-both", "route"),), add=(("x-added", "1"),), remove=("x-secret",)),
        response_headers=HeaderOps(set=(("x-version", "overridden"),), remove=("content-type",)))))
    proxy = await start_proxy(snap)
    response = await proxy.request(path="/old/path?q=1", headers=(("X-Secret", "s"), ("X-Added", "0")))
    received = v1.requests[0]
    assert received.target == "/new/path?q=1"
    assert received.header("host") == "reviews.internal"
    assert received.header("x-secret") is None
    assert received.header("x-dest") == "v1"
    assert received.header("x-both") == "route"  # route-level operations apply after the destination's
    assert received.header("x-added") == "0, 1"
    assert response.header("x-version") == "overridden"
    assert response.header("x-served-by") == "v1"
    assert response.header("content-type") is None


async def test_endpoint_given_by_host_name(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    # resolved from /etc/hosts at connect time, as docker-compose service names are by Docker's DNS
    by_name = Cluster("outbound|9080|v1|reviews.default.svc.cluster.local", SERVICE, 9080, "v1",
                      (Endpoint("localhost", v1.port, version="v1"),))
    proxy = await start_proxy(simple_snapshot((by_name, 100)))
    assert (await proxy.request()).json()["version"] == "v1"


async def test_sidecar_port_match_uses_the_addressed_service_port(start_proxy: StartProxy,
                                                                  upstreams: StartUpstream) -> None:
    """On the sidecar listener, `match.port` is the port in the authority (80 when absent), as in Istio."""
    v1, v2 = await upstreams("v1"), await upstreams("v2")
    on_9080 = HttpMatch(port=9080)
    routes = (route(weighted((cluster("v2", v2), 100)), on_9080), route(weighted((cluster("v1", v1), 100))))
    snap = snapshot(vhost(("reviews", "reviews:9080", "reviews:9081"), *routes), role="mesh")
    proxy = await start_proxy(snap)
    assert (await proxy.request(path="http://reviews:9080/x", host="reviews:9080")).json()["version"] == "v2"
    assert (await proxy.request(path="http://reviews:9081/x", host="reviews:9081")).json()["version"] == "v1"
    assert (await proxy.request(path="/x", host="reviews")).json()["version"] == "v1"
