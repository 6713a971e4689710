"""Sticky destinations: deterministic, monotone in the weights, and in proportion to them."""

from __future__ import annotations

import pytest

from proxy.routing import sticky
from proxy.routing.snapshot import HashPolicy
from proxy.upstream.hashing import hash64
from tests.stats import binomial_interval

V1, V2, V3 = "outbound|9080|v1|reviews.default.svc.cluster.local", \
    "outbound|9080|v2|reviews.default.svc.cluster.local", "outbound|9080|v3|reviews.default.svc.cluster.local"
KEYS = [hash64(b"client-%d" % i) for i in range(10_000)]
COOKIE = HashPolicy(cookie="canary", cookie_path="/", cookie_ttl=0.0)


def _assign(names: list[str], weights: list[int]) -> list[str]:
    policy = sticky.build(COOKIE, "cookie canary", names, weights)
    return [names[policy.pick(k)] for k in KEYS]


def test_canary_steps_only_move_clients_onto_v2_and_in_proportion() -> None:
    previous: list[str] | None = None
    for v2 in (10, 25, 50, 100):
        # at 100 the compiler drops v1 (weight 0); the function gives it no client either way
        got = _assign([V1, V2], [100 - v2, v2])
        share = sum(1 for d in got if d == V2)
        lo, hi = binomial_interval(len(KEYS), v2 / 100)
        assert lo <= share <= hi, (v2, share, lo, hi)
        if previous is not None:
            back = [i for i, (a, b) in enumerate(zip(previous, got, strict=True)) if a == V2 and b == V1]
            assert back == [], f"{len(back)} keys moved from v2 back to v1 at weight {v2}"
        assert got == _assign([V1, V2], [100 - v2, v2])  # same key, same weights: same destination
        previous = got


def test_same_key_same_destination_in_any_order_of_calls() -> None:
    policy = sticky.build(COOKIE, "c", [V1, V2], [50, 50])
    first = [policy.pick(k) for k in KEYS[:500]]
    assert [policy.pick(k) for k in reversed(KEYS[:500])] == list(reversed(first))
    # a fresh build (another process, a reload) agrees: nothing depends on Python's per-process hash
    again = sticky.build(COOKIE, "c", [V1, V2], [50, 50])
    assert [again.pick(k) for k in KEYS[:500]] == first


def test_weight_zero_takes_no_client() -> None:
    got = _assign([V1, V2, V3], [50, 0, 50])
    assert V2 not in got


@pytest.mark.parametrize("raised", [0, 1, 2])
def test_three_destinations_raising_one_moves_keys_only_onto_it(raised: int) -> None:
    names = [V1, V2, V3]
    before = _assign(names, [40, 30, 30])
    weights = [40, 30, 30]
    weights[raised] += 50
    after = _assign(names, weights)
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert moved, "some keys must move"
    assert all(b == names[raised] for _, b in moved)


def test_excluded_destination_gives_its_keys_to_the_others_by_weight() -> None:
    names = [V1, V2, V3]
    policy = sticky.build(COOKIE, "c", names, [20, 50, 30])
    full = [policy.pick(k) for k in KEYS]
    without = [policy.pick(k, excluded={1}) for k in KEYS]
    assert 1 not in without
    # keys not on the excluded destination stay where they were
    assert all(a == b for a, b in zip(full, without, strict=True) if a != 1)
    # v2's keys spread over v1 and v3 as 20:30
    spread = [b for a, b in zip(full, without, strict=True) if a == 1]
    lo, hi = binomial_interval(len(spread), 20 / 50)
    assert lo <= sum(1 for b in spread if b == 0) <= hi
    assert policy.pick(KEYS[0], excluded={0, 1, 2}) == -1


@pytest.mark.parametrize(("value", "expected"), [
    ("cookie=canary", ("cookie", "canary")),
    (" header = X-User ", ("header", "x-user")),
    ("source-ip", ("source_ip", True)),
])
def test_parse(value: str, expected: tuple[str, object]) -> None:
    parsed = sticky.parse(value)
    assert not isinstance(parsed, str)
    assert getattr(parsed[0], expected[0]) == expected[1]


@pytest.mark.parametrize(("value", "reason"), [
    ("cookie", "is not a sticky key"),
    ("cookie=", "is not a valid cookie name"),
    ("header=a b", "is not a valid header name"),
    ("query=x", "is not a sticky key"),
    ("source-ip=1", "is not a sticky key"),
])
def test_parse_errors(value: str, reason: str) -> None:
    parsed = sticky.parse(value)
    assert isinstance(parsed, str) and reason in parsed


def test_pick_is_the_largest_log_uniform_over_weight() -> None:
    # the inlined hot loop agrees with the readable definition, for any salts and weights
    import random

    rng = random.Random(7)
    for _ in range(2000):
        key, salts = rng.getrandbits(64), tuple(rng.getrandbits(64) for _ in range(3))
        inverse = tuple(1.0 / rng.randint(1, 100) for _ in range(3))
        best = max(range(3), key=lambda i: sticky._log_uniform(key, salts[i]) * inverse[i])
        assert sticky.pick_index(key, salts, inverse) == best
