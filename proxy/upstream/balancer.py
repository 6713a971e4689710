"""Endpoint load balancing inside one cluster (subset), after the weighted pick chose the cluster.

Policies from DestinationRule `trafficPolicy.loadBalancer.simple`: LEAST_REQUEST (Istio's default,
power of two choices on active requests), ROUND_ROBIN, RANDOM. No I/O.

`endpoints` is what may be chosen: the cluster's endpoints, less those its outlier detector ejected
(the detector replaces the tuple when that changes).
"""

from __future__ import annotations

import random

from proxy.routing.snapshot import Cluster, Endpoint


class Balancer:
    """Chooses an endpoint of one cluster; `active` counts its requests in flight per endpoint address."""

    __slots__ = ("cluster", "endpoints", "policy", "active", "_next", "_rng")

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.endpoints = cluster.endpoints
        self.policy = cluster.lb_policy
        self.active: dict[tuple[str, int], int] = {}
        self._next = 0
        self._rng = rng

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
