"""Windowed counts from the proxy's metrics and the gates over them."""

from __future__ import annotations

import pytest

from proxy.admin.metrics import DURATION_BUCKETS, Metrics
from proxy.rollout.analysis import Counts, cluster_matcher, evaluate, percentile, read_counts
from proxy.rollout.spec import Analysis
from proxy.routing.snapshot import Cluster, ServiceInfo

V2 = "outbound|9080|v2|reviews.default.svc.cluster.local"


def _cluster(name: str) -> Cluster:
    service = ServiceInfo("reviews.default.svc.cluster.local", "reviews", "default")
    return Cluster(name, service, 9080, name.split("|")[2], ())


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics()
    return m


def test_read_counts_sums_a_destinations_clusters(metrics: Metrics) -> None:
    for _ in range(7):
        metrics.http_request(_cluster(V2), None, 200, "-", 3.0, 0, 10)
    for _ in range(3):
        metrics.http_request(_cluster(V2), None, 503, "UF", 30.0, 0, 10)
    metrics.http_request(_cluster(V2.replace("v2", "v1")), None, 500, "-", 3.0, 0, 10)
    prefix, suffix = cluster_matcher("reviews.default.svc.cluster.local", "v2", None)
    counts = read_counts(metrics, "http", prefix, suffix)
    assert (counts.requests, counts.failures, sum(counts.buckets)) == (10, 3, 10)
    later = Counts(counts.requests + 5, counts.failures, list(counts.buckets))
    assert later.minus(counts).requests == 5
    assert Counts(2, 0).minus(counts).requests == 2  # a restarted worker counts from zero


def test_tcp_failures_are_connections_that_did_not_connect(metrics: Metrics) -> None:
    metrics.tcp_stats(_cluster(V2), None).opened += 8
    metrics.tcp_stats(_cluster(V2), None, "UF").opened += 2
    metrics.tcp_stats(_cluster(V2), None, "DC").opened += 1
    counts = read_counts(metrics, "tcp", *cluster_matcher("reviews.default.svc.cluster.local", "v2", 9080))
    assert (counts.requests, counts.failures) == (11, 2)


@pytest.mark.parametrize(("placed", "q", "expected"), [
    ({3: 100}, 50, 7.5),  # all in (5, 10]: the median is midway
    ({0: 99, 6: 1}, 99, 0.5),  # the 99th request is the last of the first bucket
    ({0: 98, 6: 2}, 99, 75.0),  # halfway through (50, 100]
    ({len(DURATION_BUCKETS): 5}, 99, float(DURATION_BUCKETS[-1])),
])
def test_percentile_interpolates_inside_the_bucket(placed: dict[int, int], q: float, expected: float) -> None:
    buckets = [0] * (len(DURATION_BUCKETS) + 1)
    for index, n in placed.items():
        buckets[index] = n
    assert percentile(buckets, q) == pytest.approx(expected)
    assert percentile([0] * len(buckets), q) is None


def _counts(requests: int, failures: int, bucket: int = 2) -> Counts:
    c = Counts(requests, failures)
    c.buckets[bucket] = requests
    return c


GATES = Analysis(interval=1, min_requests=20, success_rate_min=95, latency_max_ms=100, failure_limit=2)


@pytest.mark.parametrize(("canary", "result", "reason"), [
    (_counts(19, 0), "wait", "19 requests to the canary in the interval, fewer than minRequests 20"),
    (_counts(100, 5), "pass", "successRate 95% >= min 95%"),
    (_counts(100, 30), "fail", "successRate 70% < min 95%"),
    (_counts(100, 0, bucket=9), "fail", "latency p99 995 ms > max 100 ms"),
])
def test_gates(canary: Counts, result: str, reason: str) -> None:
    verdict = evaluate(GATES, canary, _counts(500, 0), "http")
    assert verdict.result == result and reason in verdict.reason, verdict.reason
    assert verdict.stable["requests"] == 500


@pytest.mark.parametrize(("canary", "empty", "result"), [
    (_counts(0, 0), True, "fail"),  # its share went elsewhere: a canary with no healthy endpoint fails
    (_counts(0, 0), False, "wait"),  # merely no traffic yet
    (_counts(100, 0), True, "pass"),  # enough requests in the window: the gates decide
])
def test_an_empty_canary_fails_instead_of_waiting(canary: Counts, empty: bool, result: str) -> None:
    verdict = evaluate(GATES, canary, _counts(500, 0), "http", canary_empty=empty)
    assert verdict.result == result, verdict.reason
    if result == "fail":
        assert "no healthy endpoint" in verdict.reason and verdict.gates[0]["gate"] == "healthy endpoints"


def test_no_gates_pass_once_enough_requests() -> None:
    verdict = evaluate(Analysis(min_requests=1), _counts(1, 1), Counts(), "tcp")
    assert verdict.result == "pass" and "connections" in verdict.reason


def test_one_proxy_per_state_directory_drives_a_rollout(tmp_path: object) -> None:
    from proxy.rollout import persist

    first = persist.try_lock(str(tmp_path), "default", "ro")
    assert first is not None
    assert persist.try_lock(str(tmp_path), "default", "ro") is None  # another proxy holds it
    assert persist.try_lock(str(tmp_path), "default", "other") is not None
    persist.unlock(first)
    assert persist.try_lock(str(tmp_path), "default", "ro") is not None
