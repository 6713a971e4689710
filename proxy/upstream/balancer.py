"""Endpoint load balancing inside one cluster (subset), after the weighted pick chose the cluster.

Policies from DestinationRule `trafficPolicy.loadBalancer.simple`: LEAST_REQUEST (Istio's default,
power of two choices on active requests), ROUND_ROBIN, RANDOM; with `consistentHash`, a request's key
picks from a ring hash or Maglev table (hashing.py), built on first use. No I/O.

`endpoints` is what may be chosen: the cluster's endpoints, less those its outlier detector ejected
(the detector replaces the tuple when that changes).
"""

from __future__ import annotations

import random

from proxy.routing.snapshot import Cluster, Endpoint
from proxy.upstream.hashing import HashTable


class Balancer:
    """Chooses an endpoint of one cluster; `active` counts its requests in flight per endpoint address."""

    __slots__ = ("cluster", "endpoints", "policy", "active", "_next", "_rng", "_table")

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.endpoints = cluster.endpoints
        self.policy = cluster.lb_policy
        self.active: dict[tuple[str, int], int] = {}
        self._next = 0
        self._rng = rng
        self._table: HashTable | None = None

    def choose_hashed(self, key_hash: int) -> Endpoint | None:
        """The endpoint that owns `key_hash` in the cluster's consistent-hash table."""
        if not self.endpoints or self.cluster.hash_policy is None:
            return self.choose()
        table = self._table
        # rebuilt when the choosable endpoints change (e.g. an ejection replaces the tuple), as Envoy
        # rebuilds its ring from the healthy hosts; tables are remembered per endpoint set
        if table is None or table.endpoints is not self.endpoints:
            table = self._table = HashTable(self.endpoints, self.cluster.hash_policy)
        return table.pick(key_hash)

    def choose(self) -> Endpoint | None:
        endpoints = self.endpoints
        n = len(endpoints)
        if n == 0:
            return None
        if n == 1:
            return endpoints[0]
        if self.policy == "ROUND_ROBIN":
            self._next = (self._next + 1) % n
            return endpoints[self._next]
        if self.policy == "RANDOM":
            return endpoints[self._rng.randrange(n)]
        # LEAST_REQUEST: two random distinct candidates, fewer active requests wins
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        if j >= i:
            j += 1
        a, b = endpoints[i], endpoints[j]
        active = self.active
        return a if active.get(a.key, 0) <= active.get(b.key, 0) else b
