"""Weighted destination choice, as Envoy's `WeightedClusterUtil::pickCluster`.

`selected = random % total`, then the first entry whose cumulative end is greater than `selected`
(config order). The random value is a parameter so tests can inject it. No I/O.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def cumulative(weights: Sequence[int]) -> tuple[int, ...]:
    """Running sums: [50, 50] → (50, 100)."""
    out: list[int] = []
    total = 0
    for w in weights:
        total += w
        out.append(total)
    return tuple(out)


def pick_index(cumulative_weights: Sequence[int], random_value: int) -> int:
    """Index of the entry whose interval [begin, end) holds `random_value % total`."""
    total = cumulative_weights[-1]
    return bisect_right(cumulative_weights, random_value % total)


def pick(items: Sequence[T], cumulative_weights: Sequence[int], random_value: int) -> T:
    return items[pick_index(cumulative_weights, random_value)]
