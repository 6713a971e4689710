"""The live traffic page (`/ui`) and its data (`/ui/data`): per route, each destination's configured
share beside the share it actually got over the last minute, its request rate, error rate and p99, TCP
connections, plus the config version and its recent changes.

Nothing here runs per request. The page polls `/ui/data`; each poll (at most one a second, whoever
asks) takes a sample of the Istio counters the data plane keeps anyway (requests, 5xx, the duration
histogram, TCP connections opened and closed, per cluster), and the window is the difference between
the newest sample and the oldest one inside the last minute. No page open, no sampling.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from proxy.admin.metrics import DURATION_BUCKETS, Metrics
from proxy.routing.snapshot import Snapshot, WeightedDestinations
from proxy.upstream.shift import weighted_routes

if TYPE_CHECKING:
    from proxy.state import ServerState

WINDOW = 60.0  # seconds of traffic the page shows
SAMPLE_EVERY = 1.0  # seconds between two samples, however many pages poll
MAX_CHANGES = 20


@dataclass(slots=True)
class _Http:
    requests: int = 0
    errors: int = 0  # 5xx, and requests answered locally with a failure flag
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))


@dataclass(slots=True)
class _Sample:
    at: float
    http: dict[str, _Http]  # by cluster name
    tcp: dict[str, tuple[int, int]]  # cluster name → (opened, closed)


def _take(metrics: Metrics, now: float) -> _Sample:
    http: dict[str, _Http] = {}
    for key, stats in list(metrics.http.items()):
        entry = http.get(key[0])
        if entry is None:
            entry = http[key[0]] = _Http()
        entry.requests += stats.count
        if key[4] >= 500 or key[4] == 0:
            entry.errors += stats.count
        for i, n in enumerate(stats.duration.counts):
            entry.buckets[i] += n
    tcp: dict[str, tuple[int, int]] = {}
    for key, t in list(metrics.tcp.items()):
        opened, closed = tcp.get(key[0], (0, 0))
        tcp[key[0]] = (opened + t.opened, closed + t.closed)
    return _Sample(now, http, tcp)


def _p99(buckets: list[int]) -> float | None:
    """The 99th percentile of a histogram's counts, interpolated inside its bucket (ms)."""
    total = sum(buckets)
    if not total:
        return None
    rank = 0.99 * total
    running = 0
    lower = 0.0
    for i, n in enumerate(buckets):
        upper = DURATION_BUCKETS[i] if i < len(DURATION_BUCKETS) else DURATION_BUCKETS[-1]
        if n and running + n >= rank:
            return round(lower + (upper - lower) * (rank - running) / n, 3)
        running += n
        lower = upper
    return float(DURATION_BUCKETS[-1])


@dataclass(slots=True)
class Change:
    at: float
    version: int
    reason: str
    summary: list[str]


class TrafficPage:
    """The samples and the recent config changes of one process."""

    def __init__(self) -> None:
        self.samples: deque[_Sample] = deque()
        self.changes: deque[Change] = deque(maxlen=MAX_CHANGES)

    def record_change(self, old: Snapshot, new: Snapshot, reason: str) -> None:
        """A new snapshot is serving: remember which routes' weights changed (once per reload)."""
        before = {name: _shares(action) for name, (_, action) in weighted_routes(old).items()}
        summary = []
        for name, (_, action) in weighted_routes(new).items():
            after = _shares(action)
            if before.get(name) != after:
                parts = ", ".join(f"{_subset(c)} {w}" for c, w in after.items())
                summary.append(f"{name}: {parts}" if name in before else f"{name} added: {parts}")
        summary += [f"{name} removed" for name in before if name not in {n for n in weighted_routes(new)}]
        self.changes.appendleft(Change(time.time(), new.version, reason, summary[:10]))

    def sample(self, metrics: Metrics) -> None:
        now = time.monotonic()
        samples = self.samples
        if samples and now - samples[-1].at < SAMPLE_EVERY:
            return
        samples.append(_take(metrics, now))
        while len(samples) > 2 and now - samples[1].at >= WINDOW:
            samples.popleft()

    def data(self, state: ServerState) -> dict[str, Any]:
        self.sample(state.metrics)
        first, last = self.samples[0], self.samples[-1]
        seconds = last.at - first.at
        snapshot = state.snapshot
        manager = state.cluster_manager
        routes = []
        for name, (protocol, action) in sorted(weighted_routes(snapshot).items(),
                                               key=lambda item: (item[0].startswith("default/"), item[0])):
            total_weight = sum(d.weight for d in action.destinations) or 1
            rows = []
            for dest in action.destinations:
                cluster = dest.cluster_name
                rows.append({"cluster": cluster, "subset": _subset(cluster),
                             "versions": sorted({e.version for e in dest.cluster.endpoints}) if dest.cluster else [],
                             "weight": dest.weight, "configured_share": dest.weight / total_weight,
                             "empty": not manager.has_endpoint(dest.cluster),
                             **_observed(first, last, cluster, protocol, seconds)})
            counted = sum(r["count"] for r in rows)
            for r in rows:
                r["observed_share"] = r["count"] / counted if counted else None
            routes.append({"name": name, "protocol": protocol, "sticky": _sticky(action),
                           "empty_destination": "fail" if action.empty_fail else "redistribute",
                           "moved": manager.moved.get(name, 0), "destinations": rows})
        return {"config_version": snapshot.version, "content_hash": snapshot.content_hash,
                "window_seconds": round(seconds, 1), "routes": routes,
                "changes": [{"at": c.at, "version": c.version, "reason": c.reason, "summary": c.summary}
                            for c in self.changes]}


def _shares(action: WeightedDestinations) -> dict[str, int]:
    return {d.cluster_name: d.weight for d in action.destinations}


def _subset(cluster_name: str) -> str:
    _, port, subset, host = (cluster_name.split("|", 3) + ["", "", "", ""])[:4]
    return f"{host.split('.')[0]}:{port} {subset}" if subset else f"{host.split('.')[0]}:{port}"


def _sticky(action: WeightedDestinations) -> str | None:
    return action.sticky.describe if action.sticky is not None else None


def _observed(first: _Sample, last: _Sample, cluster: str, protocol: str, seconds: float) -> dict[str, Any]:
    if protocol == "tcp":
        opened0, _ = first.tcp.get(cluster, (0, 0))
        opened1, closed1 = last.tcp.get(cluster, (0, 0))
        count = opened1 - opened0
        return {"count": count, "rate": count / seconds if seconds else None, "error_rate": None, "p99_ms": None,
                "tcp_active": opened1 - closed1}
    a, b = first.http.get(cluster, _Http()), last.http.get(cluster, _Http())
    count = b.requests - a.requests
    errors = b.errors - a.errors
    opened, closed = last.tcp.get(cluster, (0, 0))
    return {"count": count, "rate": count / seconds if seconds else None,
            "error_rate": errors / count if count else None,
            "p99_ms": _p99([y - x for x, y in zip(a.buckets, b.buckets, strict=True)]),
            "tcp_active": opened - closed}


def page() -> bytes:
    """The page itself: one HTML file with its script and styles, shipped in the package."""
    return resources.files("proxy.admin").joinpath("ui.html").read_bytes()
