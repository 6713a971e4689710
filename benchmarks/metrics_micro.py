"""Per-request cost of Istio metrics: plain-int counters (what the proxy does) vs prometheus_client labels().

The proxy bumps `Metrics.http_request(...)` once per request and builds the 18 Istio labels only at scrape
time. The alternative is prometheus_client's `Counter.labels(*18 values).inc()` plus `Histogram.labels(...)
.observe()` for duration, request and response size, with the label values built per request. Both are
timed here on the same destinations (three reviews versions, two status codes), single thread.

    python benchmarks/metrics_micro.py [--requests N] [--repeat R]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from proxy.admin.metrics import BYTES_BUCKETS, DURATION_BUCKETS, HTTP_LABELS, IstioCollector, Metrics
from proxy.config.registry import make_endpoint
from proxy.routing.snapshot import Cluster, Endpoint, ServiceInfo


def destinations() -> list[tuple[Cluster, Endpoint]]:
    svc = ServiceInfo("reviews.default.svc.cluster.local", "reviews", "default")
    out = []
    for i, version in enumerate(("v1", "v2", "v3")):
        ep = make_endpoint("127.0.0.1", 9091 + i, {"app": "reviews", "version": version}, 1, "reviews")
        out.append((Cluster(f"outbound|9080|{version}|{svc.fqdn}", svc, 9080, version, (ep,)), ep))
    return out


def workload(n: int) -> list[tuple[Cluster, Endpoint, int, float, int, int]]:
    rng = random.Random(7)
    dests = destinations()
    return [(*rng.choice(dests), 200 if rng.random() < 0.99 else 503, rng.expovariate(1 / 3.0),
             rng.randrange(0, 200), rng.randrange(100, 5000)) for _ in range(n)]


def plain(requests: list[tuple[Cluster, Endpoint, int, float, int, int]]) -> Callable[[], None]:
    metrics = Metrics()

    def run() -> None:
        record = metrics.http_request
        for cluster, endpoint, code, ms, req, resp in requests:
            record(cluster, endpoint, code, "-", ms, req, resp)
    return run


def _label_values(metrics: Metrics, cluster: Cluster, endpoint: Endpoint, code: int) -> list[str]:
    # the same 18 values the collector builds at scrape time, here built per request
    return [*metrics._labels(cluster, endpoint, "http"), str(code), "-", "unknown"]


def client_counter_only(requests: list[tuple[Cluster, Endpoint, int, float, int, int]]) -> Callable[[], None]:
    registry = CollectorRegistry()
    counter = Counter("istio_requests_total", "Requests", HTTP_LABELS, registry=registry)
    helper = Metrics()

    def run() -> None:
        for cluster, endpoint, code, _ms, _req, _resp in requests:
            counter.labels(*_label_values(helper, cluster, endpoint, code)).inc()
    return run


def client_full(requests: list[tuple[Cluster, Endpoint, int, float, int, int]]) -> Callable[[], None]:
    registry = CollectorRegistry()
    counter = Counter("istio_requests_total", "Requests", HTTP_LABELS, registry=registry)
    duration = Histogram("istio_request_duration_milliseconds", "Duration", HTTP_LABELS,
                         buckets=DURATION_BUCKETS, registry=registry)
    req_bytes = Histogram("istio_request_bytes", "Request size", HTTP_LABELS, buckets=BYTES_BUCKETS,
                          registry=registry)
    resp_bytes = Histogram("istio_response_bytes", "Response size", HTTP_LABELS, buckets=BYTES_BUCKETS,
                           registry=registry)
    helper = Metrics()

    def run() -> None:
        for cluster, endpoint, code, ms, req, resp in requests:
            values = _label_values(helper, cluster, endpoint, code)
            counter.labels(*values).inc()
            duration.labels(*values).observe(ms)
            req_bytes.labels(*values).observe(req)
            resp_bytes.labels(*values).observe(resp)
    return run


def best_ns_per_request(make: Callable[[list], Callable[[], None]], requests: list, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        run = make(requests)  # a fresh registry each round: first-seen label sets are part of the cost
        start = time.perf_counter_ns()
        run()
        times.append((time.perf_counter_ns() - start) / len(requests))
    return statistics.median(times)


def scrape_ms(n: int) -> float:
    metrics = Metrics()
    for cluster, endpoint, code, ms, req, resp in workload(n):
        metrics.http_request(cluster, endpoint, code, "-", ms, req, resp)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IstioCollector(metrics))
    start = time.perf_counter()
    for _ in range(20):
        generate_latest(registry)
    return (time.perf_counter() - start) / 20 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    requests = workload(args.requests)
    rows = [
        ("plain ints: Metrics.http_request (counter + 3 histograms)", plain),
        ("prometheus_client: Counter.labels().inc() only", client_counter_only),
        ("prometheus_client: Counter + 3 Histogram .labels()", client_full),
    ]
    print(f"{args.requests} requests over 6 label sets, median of {args.repeat} runs, single thread")
    results = {}
    for name, make in rows:
        results[name] = best_ns_per_request(make, requests, args.repeat)
        print(f"  {results[name]:8.0f} ns/request  {name}")
    base = results[rows[0][0]]
    print(f"  prometheus_client full path costs {results[rows[2][0]] / base:.1f}x the plain path "
          f"({(results[rows[2][0]] - base) / 1000:.2f} us more per request)")
    print(f"  scrape of the plain counters (6 label sets): {scrape_ms(10_000):.2f} ms")


if __name__ == "__main__":
    main()
