"""Circuit breakers of one cluster (Envoy's, from DestinationRule `connectionPool`): limits on upstream
connections, requests waiting for one, active requests and active retries. Going over a limit is
answered at once with 503 and flag UO; nothing waits for a slot except within `max_pending_requests`.

HTTP/1.1 carries one request per connection at a time, so a connection in use is a request in flight:
`active` counts both (requests attached to an upstream connection or opening one). A request that
finds `max_connections` in use waits in `pending` (at most `max_pending_requests`) until one is
released. Idle pooled connections are not counted: they hold no request and the next one reuses them.
A TCP connection of a `tcp` route is one active connection (and one request, as in Envoy's TCP pool).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from proxy.routing.resilience import ConnectionLimits

Waiter = Callable[[], None]  # resumes a pending request once it holds a connection slot


class CircuitBreaker:
    __slots__ = ("cluster_name", "limits", "active", "pending", "retries", "overflows")

    def __init__(self, cluster_name: str, limits: ConnectionLimits) -> None:
        self.cluster_name = cluster_name
        self.limits = limits
        self.active = 0
        self.pending: deque[Waiter] = deque()
        self.retries = 0
        self.overflows = 0  # requests and connections refused (Envoy's upstream_rq_pending_overflow & co)

    def acquire(self, waiter: Waiter) -> bool | None:
        """Take a slot for a request. True: go on now; None: queued, `waiter()` runs when it is its
        turn; False: over the limits (503 UO)."""
        limits = self.limits
        active = self.active
        if active >= limits.max_requests:
            self.overflows += 1
            return False
        if active < limits.max_connections:
            self.active = active + 1
            return True
        if len(self.pending) >= limits.max_pending_requests:
            self.overflows += 1
            return False
        self.pending.append(waiter)
        return None

    def cancel(self, waiter: Waiter) -> None:
        """A queued request ended before its turn (the client left, the route timeout fired)."""
        try:
            self.pending.remove(waiter)
        except ValueError:
            pass

    def release(self) -> None:
        """A request (or TCP connection) that held a slot ended: hand the slot to the next waiting one."""
        self.active -= 1
        pending = self.pending
        while pending and self.active < self.limits.max_connections:
            self.active += 1
            pending.popleft()()

    def retry_started(self) -> bool:
        """Count a retry; False when `max_retries` are already running (the retry is not made: UO)."""
        if self.retries >= self.limits.max_retries:
            self.overflows += 1
            return False
        self.retries += 1
        return True

    def retry_finished(self) -> None:
        self.retries -= 1
