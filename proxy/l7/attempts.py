"""What happens between a request's upstream attempts: retries on a response status, a reset or a
per-try timeout; outlier-detection reports; circuit-breaker slots. A mixin of `HttpDownstream`, which
calls these hooks from its connection code only when the route or cluster configures the feature.

Theory of operation:
- An attempt that sent the request can be retried only while every request byte written to it is
  still at hand (`ex.replay`, kept up to REPLAY_LIMIT bytes when the route retries such attempts):
  past that the failure goes to the client, as Envoy gives up retrying once its retry buffer overflows.
- A retry drops the failed upstream connection (its response is discarded), waits the jittered back-off
  (a timer, no task), picks an endpoint not tried yet when the cluster has one (Envoy's previous-hosts
  predicate, 5 tries), and sends the kept bytes with `x-envoy-attempt-count` raised by one. Body bytes
  still arriving are held meanwhile like during a connect.
- Failed connects are retried in `_connect` with the same retry budget (`ex.retries`).
- The per-try timeout runs from the moment the attempt has its connection and the whole request; once
  the response has started it no longer applies (Envoy). The route timeout caps all attempts together.
- Circuit breakers: a request takes a slot before it uses a connection; over the limits it gets 503 UO
  with `x-envoy-overloaded: true` at once, or waits in the cluster's pending queue. A retry over
  `max_retries` is not made, and the failure goes to the client flagged UO.
- Flags: URX when the retries ran out on a retriable failure, UO when max_retries stopped a retry;
  added to the failure's own flag when the request ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy.l7 import errors, exchange, retry
from proxy.upstream import outlier

if TYPE_CHECKING:
    from proxy.l7.exchange import Exchange
    from proxy.upstream.circuit_breaker import CircuitBreaker

log = logging.getLogger("shiftproxy.http")


class AttemptState:
    """Per-request state of retries and circuit breakers (made only when one of them is involved)."""

    __slots__ = ("timer", "flag", "tried", "breaker", "slot", "waiter", "retry_held")

    def __init__(self) -> None:
        self.timer: asyncio.TimerHandle | None = None  # the per-try timeout or the back-off
        self.flag = ""  # URX or UO, added to the flags when the request ends
        self.tried: set[tuple[str, int]] = set()  # endpoints attempted, for the previous-hosts predicate
        self.breaker: CircuitBreaker | None = None
        self.slot = False  # holds one of the breaker's active slots
        self.waiter: object | None = None  # queued in the breaker's pending requests
        self.retry_held = False  # counted in the breaker's active retries


def _state(ex: Exchange) -> AttemptState:
    state = ex.resil
    if state is None:
        state = ex.resil = AttemptState()
    return state


class Attempts:
    """Mixed into HttpDownstream: uses its `state`, `loop`, `exchange`, `closing` and its methods
    `_attach`, `_connect`, `_drop_upstream`, `_reply`, `_other_endpoint`."""

    __slots__ = ()

    # circuit breakers ---------------------------------------------------------------------------

    def _take_slot(self, ex: Exchange) -> bool:
        """True: the request may use a connection now. False: it waits for a slot (sent when one is
        free) or it was answered 503 UO."""
        state = _state(ex)
        breaker = state.breaker = self.state.cluster_manager.breaker(ex.cluster)  # type: ignore[attr-defined]

        def grant() -> None:  # a slot is ours (counted already): go on at the next loop iteration
            state.waiter = None
            state.slot = True
            self.loop.call_soon(self._slot_granted, ex)  # type: ignore[attr-defined]

        taken = breaker.acquire(grant)
        if taken:
            state.slot = True
            return True
        if taken is None:
            state.waiter = grant
            return False
        self._reply(ex, errors.OVERFLOW, errors.OVERLOADED_HEADERS)  # type: ignore[attr-defined]
        return False

    def _slot_granted(self, ex: Exchange) -> None:
        if ex is not self.exchange or ex.done or self.closing:  # type: ignore[attr-defined]
            return  # ended meanwhile: _end_attempts gave the slot back
        self._send_attempt(ex)

    def _send_attempt(self, ex: Exchange) -> None:
        """Send the request on an idle pooled connection of its endpoint, or open one."""
        state = self.state  # type: ignore[attr-defined]
        pool = state.cluster_manager.pool_for(ex.endpoint)
        conn = pool.acquire()
        try:
            if conn is not None:
                state.metrics.pool_hits += 1
                ex.reused = True
                self._attach(ex, conn)  # type: ignore[attr-defined]
            else:
                state.metrics.pool_misses += 1
                ex.connect_task = self.loop.create_task(self._connect(ex, pool))  # type: ignore[attr-defined]
        except Exception:
            log.exception("error sending a request upstream")
            self._drop_upstream(ex, abort=True)  # type: ignore[attr-defined]
            self._reply(ex, errors.INTERNAL_ERROR)  # type: ignore[attr-defined]

    # retries ------------------------------------------------------------------------------------

    def _may_retry(self, ex: Exchange, limit: int) -> bool:
        """Count one more retry if the budget (`limit`) and the cluster's max_retries allow it;
        otherwise remember the flag (URX / UO) the failure will carry."""
        state = _state(ex)
        if ex.retries >= limit:
            state.flag = "URX"
            return False
        breaker = state.breaker
        if breaker is not None:
            if state.retry_held:
                breaker.retry_finished()
                state.retry_held = False
            if not breaker.retry_started():
                state.flag = "UO"
                return False
            state.retry_held = True
        ex.retries += 1
        return True

    def _retry_upstream(self, ex: Exchange) -> bool:
        """The attempt in flight failed in a way the route's policy retries: drop it and send the
        request again after the back-off. False (nothing changed) when it cannot be."""
        policy = ex.route.retry  # type: ignore[union-attr]
        replay = ex.replay
        if policy is None or replay is None or ex.response_started:
            return False
        if not self._may_retry(ex, policy.num_retries):
            return False
        state = _state(ex)
        if state.timer is not None:
            state.timer.cancel()
        self._drop_upstream(ex, abort=True)  # type: ignore[attr-defined]
        ex.replay = None
        ex.pending = replay[1:]  # replay[0] is the head, rewritten for the next attempt
        ex.pending_size = ex.replay_size - len(replay[0])
        ex.reused = False
        state.tried.add(ex.endpoint.key)  # type: ignore[union-attr]
        delay = retry.backoff(policy, ex.retries, self.state.rng.random())  # type: ignore[attr-defined]
        state.timer = self.loop.call_later(delay, self._next_attempt, ex)  # type: ignore[attr-defined]
        return True

    def _next_attempt(self, ex: Exchange) -> None:
        state = _state(ex)
        state.timer = None
        if ex is not self.exchange or ex.done or self.closing:  # type: ignore[attr-defined]
            return
        policy = ex.route.retry  # type: ignore[union-attr]
        if policy is not None and policy.previous_hosts:
            self._other_endpoint(ex, ex.cluster, ex.endpoint, state.tried)  # type: ignore[attr-defined]
        ex.out_head = exchange.attempt_head(ex.out_head, ex.retries + 1)
        self._send_attempt(ex)

    def _arm_try_timeout(self, ex: Exchange) -> None:
        """The attempt has its connection and the whole request: its per-try timeout starts."""
        policy = ex.route.retry  # type: ignore[union-attr]
        if policy is None or policy.per_try_timeout is None or ex.response_started:
            return
        state = _state(ex)
        if state.timer is None:
            state.timer = self.loop.call_later(policy.per_try_timeout, self._on_try_timeout, ex)  # type: ignore[attr-defined]

    def _on_try_timeout(self, ex: Exchange) -> None:
        state = _state(ex)
        state.timer = None
        if ex is not self.exchange or ex.done or ex.response_started:  # type: ignore[attr-defined]
            return
        cluster = ex.cluster
        if cluster is not None and cluster.outlier is not None:
            self.state.cluster_manager.outlier_report(cluster, ex.endpoint, outlier.TIMEOUT)  # type: ignore[attr-defined]
        policy = ex.route.retry  # type: ignore[union-attr]
        if policy is not None and retry.retriable_reset(policy) and self._retry_upstream(ex):
            return
        self._drop_upstream(ex, abort=True)  # type: ignore[attr-defined]
        self._reply(ex, errors.UPSTREAM_TIMEOUT)  # type: ignore[attr-defined]

    # attempt outcomes ---------------------------------------------------------------------------

    def _on_attempt_head(self, ex: Exchange, status: int) -> bool:
        """A final response head arrived (route with retries or cluster with outlier detection).
        True: the attempt is dropped and retried, the head goes nowhere."""
        cluster = ex.cluster
        if cluster is not None and cluster.outlier is not None:
            self.state.cluster_manager.outlier_report(cluster, ex.endpoint, status)  # type: ignore[attr-defined]
        policy = ex.route.retry  # type: ignore[union-attr]
        if policy is None:
            return False
        state = ex.resil
        if state is not None and state.timer is not None:  # the per-try timeout ends with the head
            state.timer.cancel()
            state.timer = None
        return retry.retriable_status(policy, status) and self._retry_upstream(ex)

    def _on_attempt_reset(self, ex: Exchange) -> bool:
        """The upstream reset or broke the protocol before a response head. True: retried."""
        cluster = ex.cluster
        if cluster is not None and cluster.outlier is not None and ex.endpoint is not None:
            self.state.cluster_manager.outlier_report(cluster, ex.endpoint, 503)  # type: ignore[attr-defined]
        route = ex.route
        policy = route.retry if route is not None else None
        return policy is not None and retry.retriable_reset(policy) and self._retry_upstream(ex)

    def _end_attempts(self, ex: Exchange, flags: str) -> str:
        """The request ended: give back what it held; its flags with URX / UO added."""
        state = ex.resil
        assert state is not None
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        breaker = state.breaker
        if breaker is not None:
            if state.waiter is not None:
                breaker.cancel(state.waiter)  # type: ignore[arg-type]
                state.waiter = None
            if state.retry_held:
                state.retry_held = False
                breaker.retry_finished()
            if state.slot:
                state.slot = False
                breaker.release()
        return errors.add_flag(flags, state.flag) if state.flag else flags
