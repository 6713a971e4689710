"""Outlier detection (Envoy's, as istiod configures it from DestinationRule `outlierDetection`).

One `OutlierDetector` per cluster (an Istio subset is a cluster of its own, as in Envoy). The data plane
reports each attempt's outcome for an endpoint: a response status, or a failure that originated here
(connect failure, timeout) or at the upstream (reset). Consecutive failures eject the endpoint at once,
if no more than `max_ejection_percent` of the cluster's endpoints would then be ejected (Envoy counts
the one being ejected). An ejected endpoint comes back at the first interval tick after
`base_ejection_time × number of its ejections` (capped at max_ejection_time); each tick where it is
not ejected lowers that number again.

The balancer only ever sees the endpoints it may choose: the detector replaces `balancer.endpoints`
whenever the ejected set changes, so choosing costs nothing extra. Below `min_health_percent` healthy
endpoints the cluster is in panic and every endpoint is chosen from, as Envoy does.

Outcome mapping (Envoy's): with `split_local_origin` off, a failed connect counts as a 503 and a
timeout as a 504 among the 5xx and gateway errors; with it on they count only toward
`consecutive_local_origin`, and a connect that succeeds resets that count. A reset after the connection
was made counts as a 503 (it originated at the upstream).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.routing.resilience import OutlierPolicy
from proxy.routing.snapshot import Cluster, Endpoint

if TYPE_CHECKING:
    from proxy.upstream.balancer import Balancer

CONNECT_FAILED = -1  # outcome: the connect failed (local origin)
TIMEOUT = -2  # outcome: no response in time (local origin)
CONNECTED = -3  # outcome: the connect succeeded (local origin success)


class _Host:
    __slots__ = ("endpoint", "five", "gateway", "local", "ejected_at", "ejections")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.five = 0
        self.gateway = 0
        self.local = 0
        self.ejected_at: float | None = None
        self.ejections = 0  # the multiplier of base_ejection_time


class OutlierDetector:
    __slots__ = ("cluster_name", "policy", "keys", "hosts", "balancer", "ejected", "ejections_total",
                 "on_change", "_timer", "_clock")

    def __init__(self, cluster: Cluster, policy: OutlierPolicy, clock: Callable[[], float] | None = None) -> None:
        self.cluster_name = cluster.name
        self.policy = policy
        self.keys = tuple(e.key for e in cluster.endpoints)
        self.hosts = {e.key: _Host(e) for e in cluster.endpoints}
        self.balancer: Balancer | None = None
        self.ejected = 0
        self.ejections_total = 0
        self.on_change: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._clock = clock

    def attach(self, balancer: Balancer) -> None:
        """Serve (and filter) `balancer`, a cluster object with the same endpoints (after a reload)."""
        self.balancer = balancer
        self._publish()

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # outcomes -------------------------------------------------------------------------------------

    def report(self, endpoint: Endpoint, outcome: int) -> None:
        """An attempt's outcome: a response status (100-599) or CONNECT_FAILED / TIMEOUT / CONNECTED."""
        host = self.hosts.get(endpoint.key)
        if host is None:
            return
        policy = self.policy
        if outcome < 0:
            if policy.split_local_origin:
                if outcome == CONNECTED:
                    host.local = 0
                    return
                host.local += 1
                if host.local == policy.consecutive_local_origin:
                    self._eject(host)
                return
            if outcome == CONNECTED:
                return
            outcome = 503 if outcome == CONNECT_FAILED else 504
        if outcome < 500:
            host.five = host.gateway = 0
            return
        host.five += 1
        if 502 <= outcome <= 504:
            host.gateway += 1
        if host.five == policy.consecutive_5xx or host.gateway == policy.consecutive_gateway:
            self._eject(host)

    # ejection -------------------------------------------------------------------------------------

    def _eject(self, host: _Host) -> None:
        host.five = host.gateway = host.local = 0
        if host.ejected_at is not None:
            return
        total = len(self.hosts)
        if 100.0 * (self.ejected + 1) / total > self.policy.max_ejection_percent:
            return  # Envoy's ejections_overflow: too many ejected already
        host.ejected_at = self._now()
        host.ejections += 1
        self.ejected += 1
        self.ejections_total += 1
        self._publish()
        self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.policy.interval, self._tick)

    def _tick(self) -> None:
        """Envoy's interval timer: bring back endpoints whose ejection time is over; a non-ejected
        endpoint's ejection multiplier goes down by one."""
        self._timer = None
        now = self._now()
        policy = self.policy
        changed = False
        busy = False
        for host in self.hosts.values():
            if host.ejected_at is not None:
                duration = min(policy.base_ejection_time * host.ejections,
                               max(policy.max_ejection_time, policy.base_ejection_time))
                if now - host.ejected_at >= duration:
                    host.ejected_at = None
                    self.ejected -= 1
                    changed = True
                busy = True
            elif host.ejections > 0:
                host.ejections -= 1
                busy = busy or host.ejections > 0
        if changed:
            self._publish()
        if busy:
            self._arm()

    def is_ejected(self, endpoint: Endpoint) -> bool:
        host = self.hosts.get(endpoint.key)
        return host is not None and host.ejected_at is not None

    def _publish(self) -> None:
        """Give the balancer the endpoints it may choose: the healthy ones, or all of them in panic."""
        balancer = self.balancer
        if balancer is not None:
            every = balancer.cluster.endpoints
            if not self.ejected:
                balancer.endpoints = every
            else:
                healthy = tuple(e for e in every if self.hosts[e.key].ejected_at is None)
                panic = 100.0 * len(healthy) / len(every) < self.policy.min_health_percent
                balancer.endpoints = every if panic else healthy
        if self.on_change is not None:
            self.on_change()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
