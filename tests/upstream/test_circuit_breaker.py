"""Circuit-breaker counting: slots, the pending queue, overflow, retries."""

from __future__ import annotations

from proxy.routing.resilience import ConnectionLimits
from proxy.upstream.circuit_breaker import CircuitBreaker


def test_connections_then_pending_then_overflow() -> None:
    breaker = CircuitBreaker("c", ConnectionLimits(max_connections=1, max_pending_requests=1))
    woken: list[str] = []
    assert breaker.acquire(lambda: woken.append("a")) is True
    assert breaker.acquire(lambda: woken.append("b")) is None  # waits
    assert breaker.acquire(lambda: woken.append("c")) is False  # pending queue full
    assert breaker.overflows == 1
    breaker.release()  # the slot goes to the waiting request, already counted
    assert woken == ["b"] and breaker.active == 1 and not breaker.pending
    breaker.release()
    assert breaker.active == 0


def test_cancelled_waiter_is_not_woken() -> None:
    breaker = CircuitBreaker("c", ConnectionLimits(max_connections=1))
    woken: list[str] = []

    def waiter() -> None:
        woken.append("w")

    assert breaker.acquire(lambda: None)
    assert breaker.acquire(waiter) is None
    breaker.cancel(waiter)
    breaker.release()
    assert woken == [] and breaker.active == 0


def test_max_requests_refuses_without_queueing() -> None:
    breaker = CircuitBreaker("c", ConnectionLimits(max_requests=2))
    assert breaker.acquire(lambda: None) and breaker.acquire(lambda: None)
    assert breaker.acquire(lambda: None) is False and not breaker.pending


def test_retries() -> None:
    breaker = CircuitBreaker("c", ConnectionLimits(max_retries=1))
    assert breaker.retry_started() and not breaker.retry_started()
    breaker.retry_finished()
    assert breaker.retry_started()
