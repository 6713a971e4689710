"""Statistics and the markdown report: medians with min–max, ratios to Envoy and to direct, weight checks.

Pure functions over plain numbers, so the arithmetic is tested without running any load.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MISSING = "—"


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool


@dataclass(frozen=True, slots=True)
class Summary:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary | None:
        if not samples:
            return None
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))


def ratio(value: Summary | None, reference: Summary | None) -> float | None:
    """Ratio of medians, or None when either side is missing or the reference is zero."""
    if value is None or reference is None or reference.median == 0:
        return None
    return value.median / reference.median


def fmt(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_summary(summary: Summary | None) -> str:
    if summary is None:
        return MISSING
    if summary.n == 1 or summary.low == summary.high:
        return fmt(summary.median)
    return f"{fmt(summary.median)} ({fmt(summary.low)}–{fmt(summary.high)})"


def fmt_ratio(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}×"


def binomial_bounds(n: int, p: float, alpha: float = 1e-6) -> tuple[int, int]:
    """Smallest [lo, hi] with P(X < lo) ≤ alpha/2 and P(X > hi) ≤ alpha/2 for X ~ Binomial(n, p).

    A weighted picker working as configured lands outside these bounds with probability < alpha.
    """
    if p <= 0.0:
        return 0, 0
    if p >= 1.0:
        return n, n
    log_pmf = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
               + k * math.log(p) + (n - k) * math.log1p(-p) for k in range(n + 1)]
    pmf = [math.exp(v) for v in log_pmf]
    lo, tail = 0, 0.0
    while lo < n and tail + pmf[lo] <= alpha / 2:
        tail += pmf[lo]
        lo += 1
    hi, tail = n, 0.0
    while hi > 0 and tail + pmf[hi] <= alpha / 2:
        tail += pmf[hi]
        hi -= 1
    return lo, hi


@dataclass(frozen=True, slots=True)
class WeightCheck:
    """`hits` of `total` picks went to the first subset, configured to get `expected` of them."""

    hits: int
    total: int
    expected: float

    @property
    def share(self) -> float:
        return self.hits / self.total if self.total else 0.0

    @property
    def bounds(self) -> tuple[int, int]:
        return binomial_bounds(self.total, self.expected)

    @property
    def consistent(self) -> bool:
        lo, hi = self.bounds
        return lo <= self.hits <= hi

    def cell(self) -> str:
        lo, hi = self.bounds
        verdict = "ok" if self.consistent else "OUTSIDE"
        return (f"{100 * self.share:.1f}% of {self.total} "
                f"(bound {100 * lo / self.total:.1f}–{100 * hi / self.total:.1f}%, {verdict})")


def render(title: str, meta: Sequence[tuple[str, str]], metrics: Sequence[Metric], targets: Sequence[str],
           samples: Mapping[tuple[str, str], Sequence[float]], *, baseline: str = "envoy",
           reference: str = "direct", extra_pairs: Sequence[tuple[str, str]] = (),
           weights: Mapping[tuple[str, str], WeightCheck] | None = None,
           weight_routes: Sequence[tuple[str, str]] = (), notes: Sequence[str] = (),
           sections: Sequence[str] = ()) -> str:
    """The whole report. `samples[(metric key, target)]` holds one value per run; missing = not measured."""
    summaries = {key: Summary.of(values) for key, values in samples.items()}
    lines = [f"# {title}", ""]
    lines += [f"- **{name}**: {value}" for name, value in meta]
    lines += ["", "Cells are the median of the runs with (min–max).", ""]

    header = ["load", "unit", "better", *targets]
    lines += [_row(header), _row(["---"] * len(header))]
    shown = [m for m in metrics if any(summaries.get((m.key, t)) for t in targets)]
    for metric in shown:
        cells = [fmt_summary(summaries.get((metric.key, t))) for t in targets]
        lines.append(_row([metric.label, metric.unit, "higher" if metric.higher_is_better else "lower", *cells]))

    pairs = [(t, baseline) for t in targets if t not in (baseline, reference) and baseline in targets]
    pairs += [(t, reference) for t in targets if t != reference and reference in targets]
    pairs += [(a, b) for a, b in extra_pairs if a in targets and b in targets]
    if pairs:
        lines += ["", "Ratios of medians (for \"lower is better\" rows, below 1× is better).", ""]
        header = ["load", *(f"{a} ÷ {b}" for a, b in pairs)]
        lines += [_row(header), _row(["---"] * len(header))]
        for metric in shown:
            cells = [fmt_ratio(ratio(summaries.get((metric.key, a)), summaries.get((metric.key, b))))
                     for a, b in pairs]
            if any(c != MISSING for c in cells):
                lines.append(_row([metric.label, *cells]))

    if weights:
        lines += ["", "Weight accuracy: share of picks that reached v1; the bound is where a correct picker "
                  "stays with probability 1 − 10⁻⁶ (exact binomial tails).", ""]
        weighted_targets = [t for t in targets if any((r, t) in weights for r, _ in weight_routes)]
        header = ["route", "configured v1", *weighted_targets]
        lines += [_row(header), _row(["---"] * len(header))]
        for route, configured in weight_routes:
            cells = [weights[(route, t)].cell() if (route, t) in weights else MISSING for t in weighted_targets]
            lines.append(_row([route, configured, *cells]))

    for text in sections:  # tables of their own (markdown), before the notes
        lines += text.rstrip("\n").split("\n")
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
