"""Resilience policies compiled as istiod translates them: retries, outlier detection, connection pools
(including the subset and port-level merge)."""

from __future__ import annotations

import pytest

from proxy.config.compile_policy import connection_limits, outlier_policy, parse_retry_on, retry_policy
from proxy.routing.resilience import (
    RETRY_5XX,
    RETRY_CONNECT_FAILURE,
    RETRY_GATEWAY_ERROR,
    RETRY_GRPC,
    RETRY_REFUSED_STREAM,
    RETRY_RETRIABLE_4XX,
    RETRY_STATUS_CODES,
    UNLIMITED,
    ConnectionLimits,
    OutlierPolicy,
    RetryPolicy,
)
from tests.config.test_compile import REVIEWS_SE, compile_files


@pytest.mark.parametrize(("retry_on", "bits", "codes"), [
    ("5xx", RETRY_5XX, ()),
    ("gateway-error,connect-failure", RETRY_GATEWAY_ERROR | RETRY_CONNECT_FAILURE, ()),
    ("503", RETRY_STATUS_CODES, (503,)),  # istiod: bare codes → retriable-status-codes
    (" 503 , retriable-4xx,429", RETRY_STATUS_CODES | RETRY_RETRIABLE_4XX, (429, 503)),
    ("connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
     RETRY_CONNECT_FAILURE | RETRY_REFUSED_STREAM | RETRY_GRPC | RETRY_STATUS_CODES, ()),
])
def test_retry_on_parses_conditions_and_bare_codes(retry_on: str, bits: int, codes: tuple[int, ...]) -> None:
    assert parse_retry_on(retry_on) == (bits, frozenset(codes))


@pytest.mark.parametrize(("retries", "connect", "policy"), [
    (None, 2, None),  # Istio's default: only failed connects can meet it over HTTP/1.1
    ({"attempts": 0}, 0, None),
    ({"attempts": 3}, 3, None),  # retryOn absent: Istio's default conditions, no status code
    ({"attempts": 3, "retryOn": "5xx", "perTryTimeout": "250ms"}, 3,
     RetryPolicy(3, RETRY_5XX, per_try_timeout=0.25)),
    ({"attempts": 2, "retryOn": "retriable-4xx"}, 0, RetryPolicy(2, RETRY_RETRIABLE_4XX)),
    ({"attempts": 2, "retryOn": "503", "retryRemoteLocalities": True, "retryIgnorePreviousHosts": False,
      "backoff": "50ms"}, 0,
     RetryPolicy(2, RETRY_STATUS_CODES, frozenset({503}), backoff_base=0.05, previous_hosts=False,
                 remote_localities=True)),
    ({"attempts": 2, "retryOn": "connect-failure", "perTryTimeout": "1s"}, 2,
     RetryPolicy(2, RETRY_CONNECT_FAILURE, per_try_timeout=1.0)),  # a per-try timeout ends the try (504)
])
def test_retry_policy(retries: dict[str, object] | None, connect: int, policy: RetryPolicy | None) -> None:
    assert retry_policy(retries) == (connect, policy)


def test_outlier_detection_defaults_and_istiod_mapping() -> None:
    assert outlier_policy(None) is None
    assert outlier_policy({"interval": "1s"}) == OutlierPolicy(interval=1.0)  # Envoy: 5 consecutive 5xx, 10 %
    assert outlier_policy({"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 2, "baseEjectionTime": "2s",
                           "maxEjectionPercent": 50, "minHealthPercent": 30}) == OutlierPolicy(
        consecutive_5xx=0, consecutive_gateway=2, base_ejection_time=2.0, max_ejection_percent=50,
        min_health_percent=30)
    # the deprecated field counts gateway errors only
    assert outlier_policy({"consecutiveErrors": 4}) == OutlierPolicy(consecutive_5xx=0, consecutive_gateway=4)
    assert outlier_policy({"splitExternalLocalOriginErrors": True}) == OutlierPolicy(
        split_local_origin=True, consecutive_local_origin=5)


def test_connection_limits_unset_or_zero_are_unlimited() -> None:
    assert connection_limits(None) is None
    assert connection_limits({"http": {"idleTimeout": "5s"}}) is None
    assert connection_limits({"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 0,
                                                                      "maxRetries": 3}}) == \
        ConnectionLimits(max_connections=1, max_pending_requests=UNLIMITED, max_retries=3)


DR = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 2}
    connectionPool:
      tcp: {maxConnections: 7, maxConnectionDuration: 30s, tcpKeepalive: {probes: 3, time: 10s}}
    portLevelSettings:
    - port: {number: 9080}
      outlierDetection: {consecutive5xxErrors: 4}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {http: {http2MaxRequests: 9}}
  - name: v2
    labels: {version: v2}
"""


def test_destination_rule_policies_reach_every_cluster() -> None:
    snap = compile_files(extra=REVIEWS_SE + DR)
    top = snap.clusters["outbound|9080||reviews.default.svc.cluster.local"]
    v1 = snap.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
    v2 = snap.clusters["outbound|9080|v2|reviews.default.svc.cluster.local"]
    # port-level settings replace the policy's four fields whole: no connection pool left on 9080
    assert top.outlier == OutlierPolicy(consecutive_5xx=4) and top.limits is None
    assert top.max_connection_duration is None
    # Istio's merge: top-level port settings, then the subset's own fields over them
    assert v1.outlier == OutlierPolicy(consecutive_5xx=4) and v1.limits == ConnectionLimits(max_requests=9)
    assert v2.outlier == OutlierPolicy(consecutive_5xx=4) and v2.limits is None
    other = snap.clusters["outbound|9080||productpage.default.svc.cluster.local"]
    assert other.outlier is None and other.limits is None and other.tcp_keepalive is None


def test_destination_rule_connection_pool_without_port_settings() -> None:
    dr = DR.replace("""    portLevelSettings:
    - port: {number: 9080}
      outlierDetection: {consecutive5xxErrors: 4}
""", "")
    snap = compile_files(extra=REVIEWS_SE + dr)
    top = snap.clusters["outbound|9080||reviews.default.svc.cluster.local"]
    v1 = snap.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
    assert top.limits == ConnectionLimits(max_connections=7)
    assert top.max_connection_duration == 30.0
    assert top.tcp_keepalive is not None and (top.tcp_keepalive.probes, top.tcp_keepalive.time) == (3, 10.0)
    assert v1.limits == ConnectionLimits(max_requests=9)  # the subset's connectionPool, whole
    assert v1.outlier == OutlierPolicy(consecutive_5xx=2)


def test_route_retry_policy_is_compiled_and_not_reported_as_unenforced() -> None:
    vs = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    retries: {attempts: 3, retryOn: "gateway-error,409", perTryTimeout: 2s}
"""
    snap = compile_files(extra=REVIEWS_SE + vs)
    vh = snap.http_listeners["mesh_http"].route_table.find("reviews")
    assert vh is not None
    route = vh.routes[0]
    assert route.connect_retries == 3
    assert route.retry == RetryPolicy(3, RETRY_GATEWAY_ERROR | RETRY_STATUS_CODES, frozenset({409}),
                                      per_try_timeout=2.0)
    assert not snap.notices
