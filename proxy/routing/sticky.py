"""Sticky version assignment across the weighted destinations of one route (`shiftproxy.io/sticky`).

A client's key (a cookie, a header or its source IP) chooses the destination with *weighted rendezvous
hashing*: the key's 64-bit hash, mixed with a fixed salt per destination (a hash of its cluster name),
gives each destination an independent uniform draw u_i in (0, 1); the destination with the smallest
score -ln(u_i) / w_i wins. The score is an exponential variable with rate w_i, so destination i wins
with probability exactly w_i / sum(w), for every key population the hash spreads evenly.

Guarantees (for a fixed key; "weights" are the route's relative weights):
- deterministic: the same key, weights and destinations always give the same destination, in every
  process and after every reload (the hash is a fixed function, not Python's per-process `hash`);
- monotone: after any weight change a key moves from destination A to destination B only if the ratio
  w_B / w_A went up. So raising one destination's weight (others unchanged or lowered) only moves keys
  onto it, never away from it and never between two other destinations; lowering it only moves its
  own keys away. The usual canary step (v2 up, v1 down by as much) moves keys only from v1 to v2;
- a destination with weight 0 has no keys (it is not a candidate), and adding or removing a destination
  moves only the keys that go to or came from it;
- a destination left out at request time (it has no healthy endpoint) gives its keys to the others by
  their weights, and the other keys stay where they are.

Why not intervals of one point u in [0, 1): with two destinations a cumulative layout is monotone, but
with three or more no interval layout is (raising the first destination of v1|v2|v3 pushes the v2|v3
boundary towards v3, moving v3 keys onto v2). Rendezvous is monotone for any number of destinations.

The hot path is one hash of the key (the caller's) and, per destination, a few integer operations and a
logarithm; the salts and inverse weights are precomputed at compile time. No I/O, no asyncio.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from proxy.routing.snapshot import HashPolicy

ANNOTATION = "shiftproxy.io/sticky"
_MASK64 = (1 << 64) - 1
_TWO_53 = float(1 << 53)


def mix64(x: int) -> int:
    """splitmix64's finalizer: a bijection of 64-bit integers that spreads every input bit."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def salt(name: str) -> int:
    """A destination's salt: a stable 64-bit hash of its cluster name."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def _log_uniform(key_hash: int, destination_salt: int) -> float:
    """ln(u) for the key's draw at one destination, u uniform in (0, 1) (never 0: the half bit)."""
    return math.log(((mix64(key_hash ^ destination_salt) >> 11) + 0.5) / _TWO_53)


def pick_index(key_hash: int, salts: Sequence[int], inverse_weights: Sequence[float],
               excluded: Collection[int] = ()) -> int:
    """The winning destination's index: the largest ln(u_i) / w_i (= the smallest -ln(u_i) / w_i).
    Destinations with inverse weight 0 (weight 0) and those in `excluded` never win; -1 when none can."""
    best, best_score = -1, -math.inf
    log = math.log
    for i, inverse in enumerate(inverse_weights):
        if not inverse or i in excluded:
            continue
        # _log_uniform(key_hash, salts[i]), inlined: this runs per destination per request
        x = ((key_hash ^ salts[i]) + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        score = log((((x ^ (x >> 31)) >> 11) + 0.5) / _TWO_53) * inverse
        if score > best_score:
            best, best_score = i, score
    return best


@dataclass(frozen=True, slots=True)
class StickyPolicy:
    """A route's sticky key and, per destination (in the route's order), its salt and 1/weight."""

    key: HashPolicy  # where the key comes from: one of header, cookie (generated when absent), source_ip
    salts: tuple[int, ...]
    inverse_weights: tuple[float, ...]
    describe: str = field(default="", compare=False)  # "cookie shiftproxy-canary", for explain and /ui

    def pick(self, key_hash: int, excluded: Collection[int] = ()) -> int:
        return pick_index(key_hash, self.salts, self.inverse_weights, excluded)


def build(key: HashPolicy, describe: str, cluster_names: Sequence[str], weights: Sequence[int]) -> StickyPolicy:
    """The policy of one route's destinations. Two entries for one cluster get distinct salts."""
    salts: list[int] = []
    seen: dict[str, int] = {}
    for name in cluster_names:
        n = seen[name] = seen.get(name, -1) + 1
        salts.append(salt(name if n == 0 else f"{name}#{n}"))
    inverse = tuple(1.0 / w if w > 0 else 0.0 for w in weights)
    return StickyPolicy(key, tuple(salts), inverse, describe)


def parse(value: str) -> tuple[HashPolicy, str] | str:
    """The annotation's value → (key policy, description), or the reason it is not valid.

    `cookie=NAME` (the proxy sets the cookie on the response when a request has none), `header=NAME`,
    or `source-ip`."""
    text = value.strip()
    kind, sep, name = text.partition("=")
    kind, name = kind.strip().lower(), name.strip()
    if kind == "source-ip" and not sep:
        return HashPolicy(source_ip=True), "source IP"
    if kind in ("cookie", "header") and sep:
        if not name or any(c in name for c in ' \t;,="()<>@:/[]?{}\\'):
            return f"{kind} name {name!r} is not a valid {kind} name"
        if kind == "cookie":
            # the cookie is generated when absent: a session cookie on every path, HttpOnly
            return HashPolicy(cookie=name, cookie_path="/", cookie_ttl=0.0), f"cookie {name}"
        return HashPolicy(header=name.lower()), f"header {name.lower()}"
    return (f"{text!r} is not a sticky key: use cookie=NAME, header=NAME or source-ip")
