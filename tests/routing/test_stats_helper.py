"""The statistical bound helper itself: sane, and tight enough to catch a wrong split."""

from __future__ import annotations

from tests.stats import binomial_interval


def test_interval_contains_mean_and_rejects_wrong_ratios() -> None:
    lo, hi = binomial_interval(1000, 0.5)
    assert lo < 500 < hi
    # a 60/40 split instead of 50/50 must fall outside at n=1000
    assert hi < 600 and lo > 400
    lo, hi = binomial_interval(2000, 0.2)
    assert lo < 400 < hi and hi < 500


def test_degenerate_ratios_are_exact() -> None:
    assert binomial_interval(100, 0.0) == (0, 0)
    assert binomial_interval(100, 1.0) == (100, 100)
