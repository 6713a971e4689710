"""Bounds for statistical checks: fail with probability below 1e-6 at the true ratio."""

from __future__ import annotations

import math

FAILURE_PROBABILITY = 1e-6


def binomial_interval(n: int, p: float, alpha: float = FAILURE_PROBABILITY) -> tuple[int, int]:
    """[lo, hi] such that a Binomial(n, p) count falls outside with probability < alpha.

    Exact two-sided tails from the binomial pmf (log space), each tail given alpha/2.
    """
    if p <= 0.0:
        return (0, 0)
    if p >= 1.0:
        return (n, n)
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
            + (n - k) * math.log1p(-p) for k in range(n + 1)]
    pmf = [math.exp(x) for x in logs]
    lo, tail = 0, 0.0
    while lo < n and tail + pmf[lo] < alpha / 2:
        tail += pmf[lo]
        lo += 1
    hi, tail = n, 0.0
    while hi > 0 and tail + pmf[hi] < alpha / 2:
        tail += pmf[hi]
        hi -= 1
    return lo, hi
