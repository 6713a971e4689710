"""Frozen resilience policies of routes and clusters: retries (VirtualService `retries`), outlier
detection and connection-pool limits (DestinationRule `outlierDetection` / `connectionPool`).

Compiled once per config by `proxy.config.compile_policy`; read by the data plane. A field left unset
in the YAML has Envoy's default as istiod configures it. No I/O, no asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass

# Envoy `retry_on` conditions, as bits
RETRY_5XX = 1  # any 5xx response, reset, connect failure or per-try timeout
RETRY_GATEWAY_ERROR = 2  # 502, 503, 504, reset, connect failure or per-try timeout
RETRY_RESET = 4  # the upstream reset (closed) before a response head, connect failure, per-try timeout
RETRY_CONNECT_FAILURE = 8
RETRY_RETRIABLE_4XX = 16  # 409
RETRY_REFUSED_STREAM = 32  # HTTP/2 REFUSED_STREAM: never happens on HTTP/1.1 upstreams
RETRY_STATUS_CODES = 64  # `retriable-status-codes`: the codes in RetryPolicy.status_codes
RETRY_RESET_BEFORE_REQUEST = 128  # reset before any request byte was sent (a failed connect here)
RETRY_GRPC = 256  # cancelled, deadline-exceeded, internal, resource-exhausted, unavailable: gRPC only

RETRY_CONDITIONS = {
    "5xx": RETRY_5XX, "gateway-error": RETRY_GATEWAY_ERROR, "reset": RETRY_RESET,
    "connect-failure": RETRY_CONNECT_FAILURE, "retriable-4xx": RETRY_RETRIABLE_4XX,
    "refused-stream": RETRY_REFUSED_STREAM, "retriable-status-codes": RETRY_STATUS_CODES,
    "reset-before-request": RETRY_RESET_BEFORE_REQUEST, "cancelled": RETRY_GRPC,
    "deadline-exceeded": RETRY_GRPC, "internal": RETRY_GRPC, "resource-exhausted": RETRY_GRPC,
    "unavailable": RETRY_GRPC,
}
# conditions under which a failure without a response (reset, per-try timeout) is retried
RETRY_ON_RESET = RETRY_5XX | RETRY_GATEWAY_ERROR | RETRY_RESET
# conditions under which a failed connect is retried
RETRY_ON_CONNECT = RETRY_ON_RESET | RETRY_CONNECT_FAILURE | RETRY_RESET_BEFORE_REQUEST
# conditions decided on a response status
RETRY_ON_STATUS = RETRY_5XX | RETRY_GATEWAY_ERROR | RETRY_RETRIABLE_4XX | RETRY_STATUS_CODES


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Envoy's route retry policy as istiod builds it from a VirtualService's `retries`."""

    num_retries: int
    retry_on: int  # RETRY_* bits
    status_codes: frozenset[int] = frozenset()
    per_try_timeout: float | None = None  # seconds
    backoff_base: float = 0.025  # seconds; Envoy's default base interval
    previous_hosts: bool = True  # retry on another endpoint than those already tried (when there is one)
    host_selection_attempts: int = 5
    remote_localities: bool = False  # accepted; every endpoint here is in one locality

    @property
    def backoff_max(self) -> float:
        return self.backoff_base * 10  # Envoy: max interval defaults to 10 × base

    @property
    def on_response(self) -> bool:
        """Whether some response status can be retried (then request bytes are kept for a replay)."""
        return bool(self.retry_on & (RETRY_5XX | RETRY_GATEWAY_ERROR | RETRY_RETRIABLE_4XX)) or bool(
            self.retry_on & RETRY_STATUS_CODES and self.status_codes)

    @property
    def replays(self) -> bool:
        """Whether an attempt that already sent the request may be retried (its bytes must be kept)."""
        return self.on_response or bool(self.retry_on & RETRY_ON_RESET) or self.per_try_timeout is not None


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """Envoy's outlier detection as istiod builds it from `outlierDetection` (durations in seconds).
    A threshold of 0 disables that detector."""

    consecutive_5xx: int = 5
    consecutive_gateway: int = 0
    split_local_origin: bool = False
    consecutive_local_origin: int = 0
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10
    min_health_percent: int = 0  # Envoy's healthy panic threshold (Istio's default here: 0, never panic)


UNLIMITED = 2**32 - 1  # istiod's circuit-breaker thresholds when a field is unset


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Envoy circuit breakers (`connectionPool`): a request over a limit gets 503 UO at once."""

    max_connections: int = UNLIMITED
    max_pending_requests: int = UNLIMITED
    max_requests: int = UNLIMITED
    max_retries: int = UNLIMITED


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    probes: int | None = None
    time: float | None = None  # seconds idle before the first probe
    interval: float | None = None
