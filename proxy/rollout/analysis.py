"""Analysis from the proxy's own per-version metrics: cumulative counts, windows over an interval, gates.

The data plane already counts every request per (cluster, endpoint, version, code, flags) and every TCP
connection per (cluster, endpoint, version, flags) in `proxy.admin.metrics.Metrics`. A window is the
difference of two cumulative readings, so nothing is added to the hot path. With --workers, the
controller (worker 0) sums the other workers' readings (`/rollouts/counts` on their admin ports).

HTTP: a failure is a 5xx answer (the upstream's or the proxy's own 503 UF/UH/NC, 504 UT).
TCP: a failure is a connection that did not reach the canary (flags other than `-` and `DC`).
Latency: the percentile of `istio_request_duration_milliseconds` interpolated inside its bucket, as
Prometheus' histogram_quantile does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.admin.metrics import DURATION_BUCKETS, Metrics
from proxy.rollout.machine import Verdict
from proxy.rollout.spec import Analysis

TCP_OK_FLAGS = frozenset({"-", "DC"})


@dataclass(slots=True)
class Counts:
    """Cumulative (or, after `minus`, windowed) counts of one destination."""

    requests: int = 0
    failures: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.failures += other.failures
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]

    def minus(self, base: Counts) -> Counts:
        """This reading less an earlier one; a counter that went down (a restarted worker) counts from 0."""
        if self.requests < base.requests:
            return Counts(self.requests, self.failures, list(self.buckets))
        return Counts(self.requests - base.requests, max(0, self.failures - base.failures),
                      [max(0, a - b) for a, b in zip(self.buckets, base.buckets, strict=True)])

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "failures": self.failures, "buckets": self.buckets}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Counts:
        buckets = [int(b) for b in data.get("buckets") or []]
        if len(buckets) != len(DURATION_BUCKETS) + 1:
            buckets = [0] * (len(DURATION_BUCKETS) + 1)
        return cls(int(data.get("requests", 0)), int(data.get("failures", 0)), buckets)


def cluster_matcher(fqdn: str, subset: str, port: int | None) -> tuple[str, str]:
    """(prefix, suffix) of the cluster names of a destination: `outbound|PORT|SUBSET|FQDN`."""
    return (f"outbound|{port}|" if port else "outbound|", f"|{subset}|{fqdn}")


def read_counts(metrics: Metrics, protocol: str, prefix: str, suffix: str) -> Counts:
    """The cumulative counts of every cluster whose name has this prefix and suffix."""
    out = Counts()
    if protocol == "tcp":
        for (name, _a, _p, _v, _c, flags), t in list(metrics.tcp.items()):
            if name.startswith(prefix) and name.endswith(suffix):
                out.requests += t.opened
                if flags not in TCP_OK_FLAGS:
                    out.failures += t.opened
        return out
    buckets = out.buckets
    for (name, _a, _p, _v, code, _f), s in list(metrics.http.items()):
        if name.startswith(prefix) and name.endswith(suffix):
            out.requests += s.count
            if code >= 500:
                out.failures += s.count
            for i, n in enumerate(s.duration.counts):
                buckets[i] += n
    return out


def percentile(buckets: list[int], q: float) -> float | None:
    """The q-th percentile (0-100) of a duration histogram in ms, linear inside the bucket; None if empty."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q / 100.0 * total
    running = 0
    for i, n in enumerate(buckets):
        if n and running + n >= rank:
            if i >= len(DURATION_BUCKETS):  # the +Inf bucket: the highest finite bound, as Prometheus
                return float(DURATION_BUCKETS[-1])
            low = DURATION_BUCKETS[i - 1] if i else 0.0
            high = DURATION_BUCKETS[i]
            return low + (high - low) * (rank - running) / n
        running += n
    return float(DURATION_BUCKETS[-1])


def summary(c: Counts, q: float, protocol: str) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": c.requests, "failures": c.failures,
                           "successRate": round(100.0 * (c.requests - c.failures) / c.requests, 2)
                           if c.requests else None}
    if protocol == "http":
        p = percentile(c.buckets, q)
        out[f"p{q:g}Ms"] = round(p, 2) if p is not None else None
    return out


def evaluate(analysis: Analysis, canary: Counts, stable: Counts, protocol: str,
             canary_empty: bool = False) -> Verdict:
    """The gates over one interval's window of the canary (the stable's values are kept for comparison).
    `canary_empty`: the canary has no healthy endpoint now, so the proxy moves its share to the other
    versions (never shifting onto an empty version): too few requests then means a failing canary."""
    q = analysis.latency_percentile
    c_sum, s_sum = summary(canary, q, protocol), summary(stable, q, protocol)
    unit = "connections" if protocol == "tcp" else "requests"
    if canary.requests < analysis.min_requests and canary_empty:
        gate = {"gate": "healthy endpoints", "value": 0, "ok": False}
        return Verdict("fail", "the canary has no healthy endpoint (none, all ejected or all failing to connect): "
                               "its share went to the other versions", [gate], c_sum, s_sum)
    if canary.requests < analysis.min_requests:
        return Verdict("wait", f"waiting: {canary.requests} {unit} to the canary in the interval, fewer than "
                               f"minRequests {analysis.min_requests}", [], c_sum, s_sum)
    gates: list[dict[str, Any]] = []
    if analysis.success_rate_min is not None:
        value = c_sum["successRate"]
        ok = value is None or value >= analysis.success_rate_min
        gates.append({"gate": "successRate", "value": value, "min": analysis.success_rate_min, "ok": ok})
    if analysis.latency_max_ms is not None and protocol == "http":
        value = c_sum[f"p{q:g}Ms"]
        ok = value is None or value <= analysis.latency_max_ms
        gates.append({"gate": f"latency p{q:g}", "value": value, "max": analysis.latency_max_ms, "ok": ok})
    failed = [g for g in gates if not g["ok"]]
    if failed:
        reason = "; ".join(_describe(g) for g in failed)
        return Verdict("fail", reason, gates, c_sum, s_sum)
    reason = "; ".join(_describe(g) for g in gates) or "no gates configured"
    return Verdict("pass", f"passed over {canary.requests} {unit}: {reason}", gates, c_sum, s_sum)


def _describe(g: dict[str, Any]) -> str:
    value = "no data" if g["value"] is None else f"{g['value']:g}"
    if "min" not in g and "max" not in g:
        return f"{g['gate']}: {value}"
    if "min" in g:
        return f"{g['gate']} {value}% {'>=' if g['ok'] else '<'} min {g['min']:g}%"
    return f"{g['gate']} {value} ms {'<=' if g['ok'] else '>'} max {g['max']:g} ms"
