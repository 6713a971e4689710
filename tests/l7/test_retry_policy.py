"""The router's retry decisions and back-off, as pure functions."""

from __future__ import annotations

import pytest

from proxy.l7.retry import backoff, retriable_reset, retriable_status
from proxy.routing.resilience import (
    RETRY_5XX,
    RETRY_CONNECT_FAILURE,
    RETRY_GATEWAY_ERROR,
    RETRY_RESET,
    RETRY_RETRIABLE_4XX,
    RETRY_STATUS_CODES,
    RetryPolicy,
)


@pytest.mark.parametrize(("bits", "codes", "retried"), [
    (RETRY_5XX, (), {500, 501, 502, 503, 504, 599}),
    (RETRY_GATEWAY_ERROR, (), {502, 503, 504}),
    (RETRY_RETRIABLE_4XX, (), {409}),
    (RETRY_STATUS_CODES, (429, 503), {429, 503}),
    (RETRY_STATUS_CODES, (), set()),  # Istio's default lists no code
    (RETRY_CONNECT_FAILURE | RETRY_RESET, (), set()),  # not decided on a status
])
def test_retriable_status(bits: int, codes: tuple[int, ...], retried: set[int]) -> None:
    policy = RetryPolicy(2, bits, frozenset(codes))
    assert {s for s in (200, 204, 400, 404, 409, 429, 500, 501, 502, 503, 504, 599)
            if retriable_status(policy, s)} == retried


@pytest.mark.parametrize(("bits", "retried"), [
    (RETRY_5XX, True), (RETRY_GATEWAY_ERROR, True), (RETRY_RESET, True),
    (RETRY_CONNECT_FAILURE, False), (RETRY_RETRIABLE_4XX | RETRY_STATUS_CODES, False),
])
def test_retriable_reset(bits: int, retried: bool) -> None:
    assert retriable_reset(RetryPolicy(1, bits)) is retried


def test_backoff_is_envoys_fully_jittered_exponential() -> None:
    policy = RetryPolicy(5, RETRY_5XX)  # base 25 ms, max 250 ms
    assert [backoff(policy, n, 0.999999) for n in (1, 2, 3, 4, 5)] == pytest.approx(
        [0.025, 0.075, 0.175, 0.25, 0.25], rel=1e-4)
    assert backoff(policy, 3, 0.0) == 0.0
    assert backoff(RetryPolicy(1, RETRY_5XX, backoff_base=0.1), 1, 0.5) == pytest.approx(0.05)
