"""Merging several workers' /metrics: counters and histograms add up, the config version is the lowest."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.cli import _without_workers
from proxy.workers import merge_metrics

WORKER_A = """# TYPE istio_requests_total counter
istio_requests_total{destination_version="v1"} 3.0
istio_requests_total{destination_version="v3"} 1.0
# TYPE shiftproxy_config_version gauge
shiftproxy_config_version 7.0
"""
WORKER_B = """# TYPE istio_requests_total counter
istio_requests_total{destination_version="v1"} 2.0
# TYPE shiftproxy_config_version gauge
shiftproxy_config_version 6.0
"""


def test_merge_sums_counters_and_takes_lowest_version() -> None:
    families = list(merge_metrics(WORKER_A, [WORKER_B]))

    class Fixed:
        def collect(self) -> list[object]:
            return families  # type: ignore[return-value]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    values = {(s.name, tuple(s.labels.items())): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}
    assert values[("istio_requests_total", (("destination_version", "v1"),))] == 5.0
    assert values[("istio_requests_total", (("destination_version", "v3"),))] == 1.0
    assert values[("shiftproxy_config_version", ())] == 6.0


def test_worker_argv_drops_the_workers_flag() -> None:
    assert _without_workers(["run", "--workers", "4", "-c", "x", "--workers=2"]) == ["run", "-c", "x"]
