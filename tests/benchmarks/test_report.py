"""Benchmark arithmetic and parsing from given numbers: medians, min–max, ratios, weight bounds, wrk/iperf3 output."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest

from benchmarks.loads import parse_iperf3, parse_wrk
from benchmarks.report import Metric, Summary, WeightCheck, binomial_bounds, ratio, render

RPS = Metric("rps", "HTTP keep-alive", "req/s", True)
CPU = Metric("cpu", "… proxy CPU per request", "µs", False)
RSS = Metric("rss", "RSS after start", "MiB", False)


@pytest.mark.parametrize(("samples", "median", "low", "high"), [
    ([3.0, 1.0, 2.0], 2.0, 1.0, 3.0),
    ([10.0, 1.0, 2.0, 3.0], 2.5, 1.0, 10.0),
    ([7.0], 7.0, 7.0, 7.0),
])
def test_summary(samples: list[float], median: float, low: float, high: float) -> None:
    summary = Summary.of(samples)
    assert summary == Summary(median, low, high, len(samples))


def test_summary_of_nothing_is_missing() -> None:
    assert Summary.of([]) is None


def test_ratio_uses_medians_and_tolerates_missing() -> None:
    assert ratio(Summary.of([90.0, 100.0, 500.0]), Summary.of([200.0, 50.0, 400.0])) == pytest.approx(0.5)
    assert ratio(Summary.of([1.0]), None) is None
    assert ratio(None, Summary.of([1.0])) is None
    assert ratio(Summary.of([1.0]), Summary.of([0.0])) is None


def table(text: str, first_header: str) -> dict[str, list[str]]:
    """The markdown table whose header starts with `first_header`, as {row label: cells}, header row included."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows: dict[str, list[str]] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] != "---":
            rows[cells[0]] = cells[1:]
    return rows


def test_render_cells_and_ratios() -> None:
    samples = {
        ("rps", "direct"): [1000.0, 1200.0, 1100.0],
        ("rps", "shiftproxy"): [300.0, 200.0, 250.0],
        ("rps", "envoy"): [500.0, 400.0, 600.0],
        ("cpu", "shiftproxy"): [40.0, 30.0, 35.0],
        ("cpu", "envoy"): [10.0, 10.0, 10.0],
    }
    text = render("bench", [("host", "h")], [RPS, CPU, RSS], ["direct", "shiftproxy", "envoy"], samples)

    main = table(text, "load")
    assert main["load"] == ["unit", "better", "direct", "shiftproxy", "envoy"]
    assert main["HTTP keep-alive"] == ["req/s", "higher", "1,100 (1,000–1,200)", "250 (200–300)", "500 (400–600)"]
    assert main["… proxy CPU per request"] == ["µs", "lower", "—", "35.0 (30.0–40.0)", "10.0"]
    assert "RSS after start" not in main  # nothing measured: no row

    ratios = table(text.split("Ratios of medians")[1], "load")
    assert ratios["load"] == ["shiftproxy ÷ envoy", "shiftproxy ÷ direct", "envoy ÷ direct"]
    assert ratios["HTTP keep-alive"] == ["0.50×", "0.23×", "0.45×"]  # 250/500, 250/1100, 500/1100
    assert ratios["… proxy CPU per request"] == ["3.50×", "—", "—"]
    assert "- **host**: h" in text


def test_render_extra_ratio_pairs_only_for_present_columns() -> None:
    samples = {("rps", "floor"): [400.0], ("rps", "shiftproxy"): [100.0], ("rps", "envoy"): [50.0]}
    text = render("bench", [], [RPS], ["floor", "shiftproxy", "envoy"], samples,
                  extra_pairs=[("shiftproxy", "floor"), ("shiftproxy", "nginx")])
    ratios = table(text.split("Ratios of medians")[1], "load")
    assert ratios["load"] == ["floor ÷ envoy", "shiftproxy ÷ envoy", "shiftproxy ÷ floor"]
    assert ratios["HTTP keep-alive"] == ["8.00×", "2.00×", "0.25×"]


def test_render_without_envoy_column_has_no_envoy_ratio() -> None:
    text = render("bench", [], [RPS], ["direct", "nginx"], {("rps", "direct"): [4.0], ("rps", "nginx"): [3.0]},
                  notes=["envoy column skipped: not installed"])

    ratios = table(text.split("Ratios of medians")[1], "load")
    assert ratios == {"load": ["nginx ÷ direct"], "HTTP keep-alive": ["0.75×"]}
    assert "- envoy column skipped: not installed" in text


def exact_tail_below(n: int, k: int) -> Fraction:
    """P(X < k) for X ~ Binomial(n, 1/2), exactly."""
    return Fraction(sum(math.comb(n, i) for i in range(k)), 2**n)


@pytest.mark.parametrize("n", [100, 1000, 2000])
def test_binomial_bounds_are_the_tightest_with_tails_under_alpha(n: int) -> None:
    alpha = Fraction(1, 10**6)
    lo, hi = binomial_bounds(n, 0.5, 1e-6)

    assert lo + hi == n  # symmetric at p = 1/2
    assert exact_tail_below(n, lo) <= alpha / 2 < exact_tail_below(n, lo + 1)


def test_binomial_bounds_asymmetric_weights() -> None:
    lo, hi = binomial_bounds(1000, 0.8, 1e-6)
    p, half_alpha = Fraction(4, 5), Fraction(1, 2 * 10**6)

    def pmf(i: int) -> Fraction:
        return math.comb(1000, i) * p**i * (1 - p) ** (1000 - i)

    assert sum(pmf(i) for i in range(lo)) <= half_alpha < sum(pmf(i) for i in range(lo + 1))
    assert sum(pmf(i) for i in range(hi + 1, 1001)) <= half_alpha < sum(pmf(i) for i in range(hi, 1001))
    assert lo < 800 < hi


def test_weight_check_verdict() -> None:
    lo, hi = binomial_bounds(1000, 0.5)
    assert WeightCheck(lo, 1000, 0.5).consistent and WeightCheck(hi, 1000, 0.5).consistent
    assert not WeightCheck(lo - 1, 1000, 0.5).consistent
    assert not WeightCheck(hi + 1, 1000, 0.5).consistent
    assert WeightCheck(812, 1000, 0.8).cell().startswith("81.2% of 1000 (bound ")


WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:19001/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   356.95us  127.77us   6.16ms   87.33%
    Req/Sec   134.53k    18.96k  147.81k    85.00%
  Latency Distribution
     50%  339.00us
     75%  352.00us
     90%    1.93ms
     99%    1.20s
  666490 requests in 5.00s, 17.03MB read
  Socket errors: connect 0, read 12, write 3, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec: 133298.00
Transfer/sec:      8.51MB
"""


def test_parse_wrk() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests == 666490
    assert result.seconds == pytest.approx(5.0)
    assert result.rps == pytest.approx(133298.0)
    assert result.latency_ms == pytest.approx({50: 0.339, 75: 0.352, 90: 1.93, 99: 1200.0})
    assert (result.socket_errors, result.non_2xx) == (16, 7)


def test_parse_wrk_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_parse_iperf3() -> None:
    text = json.dumps({"end": {"sum_received": {"bits_per_second": 2.5e10, "bytes": 9_375_000_000}}})
    assert parse_iperf3(text) == (2.5e10, 9_375_000_000)
    with pytest.raises(ValueError, match="unable to connect"):
        parse_iperf3(json.dumps({"error": "unable to connect to server"}))
