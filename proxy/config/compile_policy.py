"""Compile the resilience parts of Istio objects into frozen policies, as istiod translates them for Envoy:
VirtualService `retries` → route retry policy; DestinationRule `outlierDetection` → outlier detection;
`connectionPool` → circuit breakers, upstream connection lifetime and TCP keepalive.

Input is the canonical (camelCase) spec, already validated. No I/O, no asyncio.
"""

from __future__ import annotations

from typing import Any

from proxy.config.duration import parse_duration
from proxy.routing.resilience import (
    RETRY_CONDITIONS,
    RETRY_ON_CONNECT,
    RETRY_STATUS_CODES,
    UNLIMITED,
    ConnectionLimits,
    OutlierPolicy,
    RetryPolicy,
    TcpKeepalive,
)

# Istio's default policy (a rule without `retries`): 2 retries on these; over HTTP/1.1 only a failed
# connect can meet them (refused-stream is HTTP/2, the others gRPC) and no status code is listed
ISTIO_DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRIES = 2


def _seconds(value: Any) -> float | None:
    return parse_duration(str(value)) if value is not None and value != "" else None


def parse_retry_on(retry_on: str) -> tuple[int, frozenset[int]]:
    """Envoy conditions as bits, and the bare status codes (istiod moves them to
    `retriable_status_codes` and adds the `retriable-status-codes` condition)."""
    bits = 0
    codes: set[int] = set()
    for part in (p.strip() for p in retry_on.split(",")):
        if part.isdigit():
            codes.add(int(part))
        elif part:
            bits |= RETRY_CONDITIONS.get(part, 0)
    if codes:
        bits |= RETRY_STATUS_CODES
    return bits, frozenset(codes)


def retry_policy(retries: dict[str, Any] | None) -> tuple[int, RetryPolicy | None]:
    """(retries of a failed connect, policy for attempts that sent the request or None when no such
    attempt is retried). `retries` absent: Istio's default; `attempts: 0`: no retry at all."""
    if retries is None:
        return DEFAULT_RETRIES, None
    attempts = int(retries.get("attempts") or 0)
    if attempts <= 0:
        return 0, None
    bits, codes = parse_retry_on(str(retries.get("retryOn") or ISTIO_DEFAULT_RETRY_ON))
    ignore_previous = retries.get("retryIgnorePreviousHosts")
    policy = RetryPolicy(
        num_retries=attempts, retry_on=bits, status_codes=codes,
        per_try_timeout=_seconds(retries.get("perTryTimeout")),
        backoff_base=_seconds(retries.get("backoff")) or 0.025,
        previous_hosts=True if ignore_previous is None else bool(ignore_previous),
        remote_localities=bool(retries.get("retryRemoteLocalities")),
    )
    connect_retries = attempts if bits & RETRY_ON_CONNECT else 0
    return connect_retries, policy if policy.replays else None


def outlier_policy(spec: dict[str, Any] | None) -> OutlierPolicy | None:
    """istiod's translation: success-rate detection off; a consecutive-errors field of 0 turns that
    detector off; the deprecated `consecutiveErrors` counts gateway errors only; `minHealthPercent`
    (default 0) is the panic threshold."""
    if not spec:
        return None
    five = spec.get("consecutive5xxErrors")
    gateway = spec.get("consecutiveGatewayErrors")
    consecutive_5xx = 5 if five is None else int(five)
    consecutive_gateway = 0 if gateway is None else int(gateway)
    legacy = int(spec.get("consecutiveErrors") or 0)
    if legacy > 0:
        consecutive_gateway, consecutive_5xx = legacy, 0
    split = bool(spec.get("splitExternalLocalOriginErrors"))
    local = int(spec.get("consecutiveLocalOriginFailures") or 0) or 5
    max_percent = int(spec.get("maxEjectionPercent") or 0) or 10
    base = _seconds(spec.get("baseEjectionTime"))
    return OutlierPolicy(
        consecutive_5xx=consecutive_5xx, consecutive_gateway=consecutive_gateway,
        split_local_origin=split, consecutive_local_origin=local if split else 0,
        interval=_seconds(spec.get("interval")) or 10.0,
        base_ejection_time=30.0 if base is None else base,
        max_ejection_percent=min(max_percent, 100),
        min_health_percent=int(spec.get("minHealthPercent") or 0),
    )


def connection_limits(pool: dict[str, Any] | None) -> ConnectionLimits | None:
    """Circuit breakers; a field unset or 0 is unlimited (istiod's thresholds are 2^32-1)."""
    pool = pool or {}
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    limits = ConnectionLimits(
        max_connections=int(tcp.get("maxConnections") or 0) or UNLIMITED,
        max_pending_requests=int(http.get("http1MaxPendingRequests") or 0) or UNLIMITED,
        max_requests=int(http.get("http2MaxRequests") or 0) or UNLIMITED,
        max_retries=int(http.get("maxRetries") or 0) or UNLIMITED,
    )
    return None if limits == ConnectionLimits() else limits


def tcp_keepalive(pool: dict[str, Any] | None) -> TcpKeepalive | None:
    spec = ((pool or {}).get("tcp") or {}).get("tcpKeepalive")
    if spec is None:
        return None
    probes = spec.get("probes")
    return TcpKeepalive(int(probes) if probes else None, _seconds(spec.get("time")), _seconds(spec.get("interval")))


def cluster_resilience(policy: dict[str, Any]) -> dict[str, Any]:
    """The Cluster fields for a merged traffic policy (keyword arguments)."""
    pool = policy.get("connectionPool")
    duration = _seconds(((pool or {}).get("tcp") or {}).get("maxConnectionDuration"))
    return {
        "outlier": outlier_policy(policy.get("outlierDetection")),
        "limits": connection_limits(pool),
        "max_connection_duration": duration or None,
        "tcp_keepalive": tcp_keepalive(pool),
    }
