"""Retries and connection settings in the HTTP data plane with hand-built snapshots: resets, the attempt
count, the cluster's max_retries breaker (flag UO), maxConnectionDuration, TCP keepalive, and no state
built when nothing is configured."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace

from proxy.routing.resilience import RETRY_5XX, RETRY_RESET, ConnectionLimits, RetryPolicy, TcpKeepalive
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
RESET = "upstream connect error or disconnect/reset before headers. reset reason: "


def retrying(c: object, policy: RetryPolicy, connect_retries: int = 2) -> object:
    r = replace(route(weighted((c, 100)), connect_retries=connect_retries), retry=policy)  # type: ignore[arg-type]
    return snapshot(vhost(("reviews",), r))


class SlowJitter(random.Random):
    """Back-off jitter near its ceiling, so a retry's wait is long next to a loopback round trip."""

    def random(self) -> float:
        return 0.999


async def test_reset_before_the_head_is_retried_then_uc_urx(start_proxy: StartProxy,
                                                           upstreams: StartUpstream) -> None:
    up = await upstreams("v1")
    proxy = await start_proxy(retrying(cluster("v1", up), RetryPolicy(2, RETRY_RESET)))
    response = await proxy.request("GET", "/drop")
    assert response.status == 503 and response.body.decode() == RESET + "connection termination"
    assert [r.header("x-envoy-attempt-count") for r in up.requests] == ["1", "2", "3"]
    assert proxy.count(503, "UC,URX") == 1


async def test_attempt_count_follows_a_failed_connect(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    live = await upstreams("v1")
    dead = await free_port()
    # round robin starts at the second endpoint: the dead one is tried first
    proxy = await start_proxy(retrying(cluster("v1", live, dead, lb_policy="ROUND_ROBIN"), RetryPolicy(2, RETRY_5XX)))
    response = await proxy.request()
    assert response.status == 200
    assert [r.header("x-envoy-attempt-count") for r in live.requests] == ["2"]
    assert proxy.count(200) == 1


async def test_max_retries_stops_a_retry_with_uo(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    up = await upstreams("v1")
    c = replace(cluster("v1", up), limits=ConnectionLimits(max_retries=1))
    proxy = await start_proxy(retrying(c, RetryPolicy(2, RETRY_RESET, backoff_base=0.3)))
    proxy.state.rng = SlowJitter()
    # the first failure takes the cluster's only retry and holds it through its back-off; the other one
    # fails meanwhile and is not retried
    first, second = await asyncio.gather(proxy.request("GET", "/drop"), proxy.request("GET", "/drop"))
    assert (first.status, second.status) == (503, 503)
    assert proxy.count(503, "UC,UO") == 1
    assert proxy.count(503, "UC,URX") == 1
    assert len(up.requests) == 4  # 3 tries of one request, 1 of the other
    assert proxy.state.cluster_manager.breakers[c.name].retries == 0


async def test_client_attempt_count_is_replaced(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    up = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", up), 100)))
    response = await proxy.request(headers=(("x-envoy-attempt-count", "7"),))
    assert response.status == 200
    assert [v for n, v in up.requests[0].headers if n == "x-envoy-attempt-count"] == ["1"]


async def test_nothing_configured_leaves_no_resilience_state(start_proxy: StartProxy,
                                                             upstreams: StartUpstream) -> None:
    """Without retries beyond Istio's default, outlier detection or limits, requests build none of it."""
    a, b = await upstreams("v1"), await upstreams("v2")
    proxy = await start_proxy(simple_snapshot((cluster("", a, b), 100)))
    client = await proxy.connect()
    for _ in range(5):
        assert (await client.request()).status == 200
    manager = proxy.state.cluster_manager
    assert not manager.detectors and not manager.breakers
    assert all(d.exchange is None for d in proxy.downstreams())


async def test_max_connection_duration_stops_reuse(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    up = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((replace(cluster("v1", up), max_connection_duration=0.05), 100)))
    client = await proxy.connect()
    assert (await client.request()).json()["connection"] == 1
    await asyncio.sleep(0.1)  # older than the duration: closed when released, not pooled
    assert (await client.request()).json()["connection"] == 2


async def test_tcp_keepalive_is_set_on_upstream_sockets(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    up = await upstreams("v1")
    ka = TcpKeepalive(probes=3, time=11.0, interval=5.0)
    proxy = await start_proxy(simple_snapshot((replace(cluster("v1", up), tcp_keepalive=ka), 100)))
    assert (await proxy.request()).status == 200
    pool = proxy.state.cluster_manager.pools[("127.0.0.1", up.port)]
    conn = pool.acquire()
    assert conn is not None
    sock = conn.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 11
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
    conn.close()
