"""Runtime state of upstream clusters that outlives snapshots: balancers with their active-request
counts, and keep-alive connection pools.

A Balancer is kept per cluster *object*, so a reload that changes a cluster's endpoints gets a fresh
balancer while requests still on the old snapshot keep using theirs. Active-request counts belong to the
balancer, as in Envoy, where each Istio subset is a cluster of its own with its own host statistics:
LEAST_REQUEST in `outbound|9080||reviews` does not see requests sent through `outbound|9080|v1|reviews`.
A cluster with one endpoint has nothing to balance, so its requests are not counted at all
(`request_started` says whether it counted). Connection pools are per endpoint address: clusters (subsets) sharing an
endpoint share its idle connections, and a reload that keeps an endpoint keeps its warm connections.
"""

from __future__ import annotations

import random
import time
from typing import Any

from proxy.routing.snapshot import Cluster, Endpoint
from proxy.upstream.balancer import Balancer
from proxy.upstream.circuit_breaker import CircuitBreaker
from proxy.upstream.outlier import OutlierDetector
from proxy.upstream.pool import EndpointPool

# seconds an endpoint whose connect failed counts as unreachable for moving traffic off empty destinations
UNREACHABLE_HOLD = 2.0


class ClusterManager:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._balancers: dict[int, Balancer] = {}  # id(cluster) → balancer
        self.pools: dict[tuple[str, int], EndpointPool[Any]] = {}
        self.detectors: dict[str, OutlierDetector] = {}  # by cluster name
        self.breakers: dict[str, CircuitBreaker] = {}  # by cluster name
        # connect failures (proxy.upstream.shift): endpoint address → monotonic time until which it counts
        # as unreachable, and cluster name → until when every endpoint of it is; empty when all is well
        self.unreachable: dict[tuple[str, int], float] = {}
        self.failing: dict[str, float] = {}
        # requests and connections moved off an empty destination, by route name
        self.moved: dict[str, int] = {}

    def _balancer(self, cluster: Cluster) -> Balancer:
        balancer = self._balancers.get(id(cluster))
        if balancer is None or balancer.cluster is not cluster:
            balancer = self._balancers[id(cluster)] = Balancer(cluster, self._rng)
            if cluster.outlier is not None:
                self._detector(cluster).attach(balancer)
        return balancer

    def _detector(self, cluster: Cluster) -> OutlierDetector:
        detector = self.detectors.get(cluster.name)
        keys = tuple(e.key for e in cluster.endpoints)
        if detector is None or detector.policy != cluster.outlier or detector.keys != keys:
            if detector is not None:
                detector.close()
            assert cluster.outlier is not None
            detector = self.detectors[cluster.name] = OutlierDetector(cluster, cluster.outlier)
        return detector

    def outlier_report(self, cluster: Cluster, endpoint: Endpoint, outcome: int) -> None:
        """An attempt's outcome for the outlier detection of `cluster` (which has a policy): a response
        status or one of outlier.CONNECT_FAILED / TIMEOUT / CONNECTED."""
        detector = self.detectors.get(cluster.name)
        if detector is None:
            self._balancer(cluster)  # creates it
            detector = self.detectors.get(cluster.name)
        if detector is not None:
            detector.report(endpoint, outcome)

    def resilience_stats(self) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
        """For /metrics: (cluster, endpoints ejected now, ejections so far) per outlier detector and
        (cluster, requests waiting, requests refused) per circuit breaker."""
        return ([(d.cluster_name, d.ejected, d.ejections_total) for d in self.detectors.values()],
                [(b.cluster_name, len(b.pending), b.overflows) for b in self.breakers.values()])

    def breaker(self, cluster: Cluster) -> CircuitBreaker:
        """The circuit breaker of `cluster` (which has limits)."""
        breaker = self.breakers.get(cluster.name)
        if breaker is None or breaker.limits != cluster.limits:
            assert cluster.limits is not None
            breaker = self.breakers[cluster.name] = CircuitBreaker(cluster.name, cluster.limits)
        return breaker

    def choose_endpoint(self, cluster: Cluster, key_hash: int | None = None) -> Endpoint | None:
        """An endpoint of `cluster`, or None when it has none (→ 503 UH). `key_hash`: the request's
        consistent-hash key, for a cluster with a hash policy."""
        if key_hash is not None:
            return self._balancer(cluster).choose_hashed(key_hash)
        return self._balancer(cluster).choose()

    def has_endpoint(self, cluster: Cluster | None) -> bool:
        """Whether `cluster` has an endpoint to send to now: configured, not all ejected, not all failing
        to connect (outlier panic counts as having them, as in Envoy)."""
        if cluster is None or not cluster.endpoints:
            return False
        failing = self.failing
        if failing:
            until = failing.get(cluster.name)
            if until is not None:
                if time.monotonic() < until:
                    return False
                del failing[cluster.name]
        return cluster.outlier is None or bool(self._balancer(cluster).endpoints)

    def connect_failed(self, cluster: Cluster, endpoint: Endpoint) -> bool:
        """A connect to `endpoint` failed: it counts as unreachable for UNREACHABLE_HOLD seconds. True when
        now no endpoint of `cluster` is reachable (the cluster is empty until the first mark expires)."""
        now = time.monotonic()
        unreachable = self.unreachable
        for key in [k for k, until in unreachable.items() if until <= now]:
            del unreachable[key]
        for name in [n for n, until in self.failing.items() if until <= now]:
            del self.failing[name]
        unreachable[endpoint.key] = now + UNREACHABLE_HOLD
        endpoints = self._balancer(cluster).endpoints or cluster.endpoints
        if all(e.key in unreachable for e in endpoints):
            self.failing[cluster.name] = min(unreachable[e.key] for e in endpoints)
            return True
        return False

    def request_started(self, cluster: Cluster, endpoint: Endpoint) -> bool:
        """Count a request to `endpoint`; False when it is not counted (the cluster has nothing to choose
        between), and then `request_finished` is not owed."""
        if len(cluster.endpoints) < 2:
            return False
        active = self._balancer(cluster).active
        key = endpoint.key
        active[key] = active.get(key, 0) + 1
        return True

    def request_finished(self, cluster: Cluster, endpoint: Endpoint) -> None:
        balancer = self._balancers.get(id(cluster))
        if balancer is None or balancer.cluster is not cluster:
            return  # the cluster left the config since: its counts went with it
        active = balancer.active
        key = endpoint.key
        n = active.get(key, 0) - 1
        if n > 0:
            active[key] = n
        else:
            active.pop(key, None)

    def active_requests(self) -> int:
        """Requests counted and not finished, over every cluster (0 when nothing is in flight)."""
        return sum(sum(b.active.values()) for b in self._balancers.values())

    def pool_for(self, endpoint: Endpoint) -> EndpointPool[Any]:
        """The keep-alive pool of `endpoint`'s address, created on first use."""
        pool = self.pools.get(endpoint.key)
        if pool is None:
            pool = self.pools[endpoint.key] = EndpointPool(endpoint.key)
        return pool

    def close_idle(self) -> None:
        """Close every idle upstream connection (shutdown); busy ones go back to their pool when done."""
        for pool in self.pools.values():
            pool.close_idle()

    def retain(self, clusters: list[Cluster]) -> None:
        """Forget balancers of clusters no longer in any live snapshot (called after a reload), and close
        the pools of endpoints none of them has (busy connections close when their request ends)."""
        live = {id(c) for c in clusters}
        for key in [k for k in self._balancers if k not in live]:
            del self._balancers[key]
        names = {c.name for c in clusters if c.outlier is not None}
        for name in [n for n in self.detectors if n not in names]:
            self.detectors.pop(name).close()
        names = {c.name for c in clusters if c.limits is not None}
        for name in [n for n in self.breakers if n not in names]:
            del self.breakers[name]
        endpoints = {e.key for c in clusters for e in c.endpoints}
        for key in [k for k in self.pools if k not in endpoints]:
            self.pools.pop(key).close()
