"""Envoy's pickCluster: `random % total`, first cumulative end greater than it, config order."""

from __future__ import annotations

import pytest

from proxy.routing.weighted import cumulative, pick, pick_index


@pytest.mark.parametrize(
    ("weights", "random_value", "expected"),
    [
        ([50, 50], 0, 0),
        ([50, 50], 49, 0),
        ([50, 50], 50, 1),
        ([50, 50], 99, 1),
        ([50, 50], 100, 0),  # wraps: 100 % 100 == 0
        ([80, 20], 79, 0),
        ([80, 20], 80, 1),
        ([1, 1, 1], 2, 2),
        ([550, 500], 549, 0),  # relative weights need not sum to 100
        ([550, 500], 550, 1),
        ([49, 50], 2**32 - 1, (2**32 - 1) % 99 >= 49),
    ],
)
def test_pick_index(weights: list[int], random_value: int, expected: int) -> None:
    assert pick_index(cumulative(weights), random_value) == int(expected)


def test_cumulative_and_pick_items() -> None:
    assert cumulative([50, 50]) == (50, 100)
    assert cumulative([80, 20]) == (80, 100)
    assert pick(["v1", "v3"], (50, 100), 75) == "v3"


def test_every_value_lands_in_proportion() -> None:
    # exhaustive over one period: exactly weight-many values select each entry
    weights = [3, 0, 5, 2]
    cum = cumulative(weights)
    counts = [0] * len(weights)
    for r in range(sum(weights)):
        counts[pick_index(cum, r)] += 1
    assert counts == weights


def test_weighted_destinations_pick_agrees_with_pick_index() -> None:
    from proxy.routing.snapshot import Destination, WeightedDestinations

    weights = [550, 0, 500, 1]
    dests = tuple(Destination(f"c{i}", None, w) for i, w in enumerate(weights) if w)
    action = WeightedDestinations(dests, cumulative([d.weight for d in dests]))
    for value in (0, 549, 550, 1049, 1050, 1051, 2**32 - 1):
        assert action.pick(value) is dests[pick_index(action.cumulative, value)]
