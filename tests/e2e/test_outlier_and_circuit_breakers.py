"""DestinationRule `outlierDetection` and `connectionPool` end to end: the real proxy process, real
upstreams (always 503, healthy, or holding their answers until released), Envoy's outcomes.

Ejection windows are checked against the proxy's own gauge rather than the clock: requests sent while
`envoy_cluster_outlier_detection_ejections_active` reads the same before and after them all ran
during the ejection."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.e2e.harness import Client, ProxyProcess
from tests.e2e.resilience_backends import Backend, cluster_stat, requests_by_code_and_flags, service_entry

URL = "http://pool:9080/x"
CLUSTER = "outbound|9080||pool.default.svc.cluster.local"
EJECTED = "envoy_cluster_outlier_detection_ejections_active"
EJECTIONS = "envoy_cluster_outlier_detection_ejections_enforced_total"


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., Backend]]:
    started: list[Backend] = []

    async def start(version: str, mode: str) -> Backend:
        backend = await Backend(version, mode).start()
        started.append(backend)
        return backend

    yield start  # type: ignore[misc]
    for backend in started:
        backend.close()


def run_proxy(tmp_path: Path, backends: list[Backend], policy: str) -> ProxyProcess:
    d = tmp_path / "config"
    d.mkdir()
    (d / "se.yaml").write_text(service_entry("pool", backends))
    (d / "dr.yaml").write_text(f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: pool}}
spec:
  host: pool
  trafficPolicy:
{policy}""")
    return ProxyProcess(d, ["--access-log", "off"]).start()


async def send(proxy: ProxyProcess, n: int) -> Counter[tuple[int, str]]:
    """n requests on one keep-alive connection, counted by (status, version that answered)."""
    client = Client(proxy.mesh_port)
    seen: Counter[tuple[int, str]] = Counter()
    for _ in range(n):
        resp = await client.request("GET", URL, "pool:9080")
        seen[(resp.status, resp.json()["version"])] += 1
    await client.close()
    return seen


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_always_5xx_endpoint_is_ejected_then_comes_back(tmp_path: Path,
                                                              backends: Callable[..., Backend]) -> None:
    bad, good = await backends("v1", "503"), await backends("v2", "ok")
    proxy = run_proxy(tmp_path, [bad, good], """    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 1s
      maxEjectionPercent: 100
""")
    try:
        # until the bad endpoint has answered 3 requests in a row (the retries of the default policy
        # do not apply to a 503 response)
        for _ in range(200):
            await send(proxy, 1)
            if len(bad.requests) >= 3:
                break
        assert len(bad.requests) == 3
        assert cluster_stat(proxy, EJECTED, CLUSTER) == 1
        before = len(bad.requests)
        seen = await send(proxy, 30)
        assert cluster_stat(proxy, EJECTED, CLUSTER) == 1  # still ejected: all 30 ran during the ejection
        assert seen == {(200, "v2"): 30}
        assert len(bad.requests) == before
        # back after baseEjectionTime (at an interval tick): it gets requests again
        await until(lambda: cluster_stat(proxy, EJECTED, CLUSTER) == 0, "the endpoint to come back")
        for _ in range(200):
            await send(proxy, 1)
            if len(bad.requests) > before:
                break
        assert len(bad.requests) > before
        assert cluster_stat(proxy, EJECTIONS, CLUSTER) >= 1
        flags = requests_by_code_and_flags(proxy, "pool")
        assert set(flags) == {("200", "-"), ("503", "-")}
    finally:
        proxy.stop()


async def test_max_ejection_percent_keeps_one_of_two_failing_endpoints(tmp_path: Path,
                                                                       backends: Callable[..., Backend]) -> None:
    bad1, bad2, good = await backends("v1", "503"), await backends("v2", "503"), await backends("v3", "ok")
    proxy = run_proxy(tmp_path, [bad1, bad2, good], """    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 10s
      baseEjectionTime: 60s
      maxEjectionPercent: 50
""")
    try:
        seen = await send(proxy, 30)
        # one failing endpoint ejected (1/3 ≤ 50 %); a second would make 2/3: it stays in
        assert cluster_stat(proxy, EJECTED, CLUSTER) == 1
        ejected, kept = sorted((bad1, bad2), key=lambda b: len(b.requests))
        assert len(ejected.requests) == 1  # out after its first 503
        assert len(kept.requests) >= 10  # round robin over the two left: about half of the 30
        assert seen[(503, kept.version)] == len(kept.requests)
    finally:
        proxy.stop()


async def test_below_min_health_percent_the_cluster_panics_and_uses_every_endpoint(
        tmp_path: Path, backends: Callable[..., Backend]) -> None:
    bad, good = await backends("v1", "503"), await backends("v2", "ok")
    proxy = run_proxy(tmp_path, [bad, good], """    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 10s
      baseEjectionTime: 60s
      maxEjectionPercent: 100
      minHealthPercent: 60
""")
    try:
        await send(proxy, 4)
        assert cluster_stat(proxy, EJECTED, CLUSTER) == 1
        before = len(bad.requests)
        seen = await send(proxy, 20)
        assert cluster_stat(proxy, EJECTED, CLUSTER) == 1  # still ejected, but 50 % healthy < 60 %: panic
        assert seen == {(503, "v1"): 10, (200, "v2"): 10}  # round robin over both, as if none were ejected
        assert len(bad.requests) == before + 10
    finally:
        proxy.stop()


async def test_pending_and_connection_limits_answer_the_excess_503_uo_at_once(
        tmp_path: Path, backends: Callable[..., Backend]) -> None:
    slow = await backends("v1", "gate")  # answers nothing until the test opens the gate
    proxy = run_proxy(tmp_path, [slow], """    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
""")
    try:
        clients = [Client(proxy.mesh_port) for _ in range(10)]
        tasks = [asyncio.ensure_future(c.request("GET", URL, "pool:9080")) for c in clients]
        # 1 request holds the connection, 1 waits for it, 8 are refused, all before any answer
        await until(lambda: sum(t.done() for t in tasks) == 8, "8 immediate answers")
        assert slow.answered == 0
        refused = [t.result() for t in tasks if t.done()]
        assert {(r.status, r.body, r.headers.get("x-envoy-overloaded")) for r in refused} == {
            (503, b"upstream connect error or disconnect/reset before headers. reset reason: overflow", "true")}
        assert len(slow.requests) == 1
        slow.gate.set()
        results = await asyncio.gather(*tasks)
        assert sorted(r.status for r in results) == [200, 200] + [503] * 8
        assert len(slow.requests) == 2
        for c in clients:
            await c.close()
        assert requests_by_code_and_flags(proxy, "pool") == {("200", "-"): 2, ("503", "UO"): 8}
        assert cluster_stat(proxy, "envoy_cluster_upstream_overflow_total", CLUSTER) == 8
    finally:
        proxy.stop()


async def test_max_requests_limits_active_requests(tmp_path: Path, backends: Callable[..., Backend]) -> None:
    slow = await backends("v1", "gate")
    proxy = run_proxy(tmp_path, [slow], """    connectionPool:
      http: {http2MaxRequests: 2}
""")
    try:
        clients = [Client(proxy.mesh_port) for _ in range(5)]
        tasks = [asyncio.ensure_future(c.request("GET", URL, "pool:9080")) for c in clients]
        await until(lambda: sum(t.done() for t in tasks) == 3, "3 immediate answers")
        assert slow.answered == 0
        slow.gate.set()
        results = await asyncio.gather(*tasks)
        assert sorted(r.status for r in results) == [200, 200, 503, 503, 503]
        for c in clients:
            await c.close()
        assert requests_by_code_and_flags(proxy, "pool") == {("200", "-"): 2, ("503", "UO"): 3}
    finally:
        proxy.stop()
