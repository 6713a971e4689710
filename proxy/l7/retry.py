"""Retry decisions of Envoy's router, as pure functions of the route's `RetryPolicy`.

An attempt that fails is retried when its failure meets one of the policy's conditions and retries
are left; otherwise the failure goes to the client, flagged URX when retries were what ran out. The
connection code (`downstream.py`) asks these questions and does the I/O.

- a response status: `5xx` (≥ 500), `gateway-error` (502, 503, 504), `retriable-4xx` (409),
  `retriable-status-codes` (the listed codes);
- a reset before the response head (the upstream closed, broke the protocol) or a per-try timeout:
  `5xx`, `gateway-error`, `reset`;
- a failed connect: those and `connect-failure`, `reset-before-request` (decided at compile time:
  `HttpRoute.connect_retries`).

The back-off before retry n (1-based) is Envoy's fully jittered exponential one: uniform in
[0, (2^n - 1) × base), at most 10 × base.
"""

from __future__ import annotations

from proxy.routing.resilience import (
    RETRY_5XX,
    RETRY_GATEWAY_ERROR,
    RETRY_ON_RESET,
    RETRY_RETRIABLE_4XX,
    RETRY_STATUS_CODES,
    RetryPolicy,
)


def retriable_status(policy: RetryPolicy, status: int) -> bool:
    on = policy.retry_on
    if status >= 500 and on & RETRY_5XX:
        return True
    if 502 <= status <= 504 and on & RETRY_GATEWAY_ERROR:
        return True
    if status == 409 and on & RETRY_RETRIABLE_4XX:
        return True
    return bool(on & RETRY_STATUS_CODES) and status in policy.status_codes


def retriable_reset(policy: RetryPolicy) -> bool:
    """A reset, a protocol error or a per-try timeout after the request was (partly) sent."""
    return bool(policy.retry_on & RETRY_ON_RESET)


def backoff(policy: RetryPolicy, retry: int, random_value: float) -> float:
    """Seconds to wait before retry number `retry` (1-based); `random_value` in [0, 1)."""
    return backoff_seconds(policy.backoff_base, retry, random_value)


def backoff_seconds(base: float, retry: int, random_value: float) -> float:
    ceiling = min(((1 << min(retry, 30)) - 1) * base, base * 10)  # Envoy: max interval = 10 × base
    return random_value * ceiling
