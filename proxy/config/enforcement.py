"""Which Istio fields the proxy acts on: ONE table, read by validation (a warning for every field that is
accepted but not enforced, with file, line and YAML path) and by the field reference (docs/fields.md).

Rows are keyed by (message, camelCase field) of the schema tables in `fields.py`. A field under a field
that is not enforced is not enforced either and needs no row; every other field needs one (a test walks
the schema). Enforcing a field later is a change of its row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ENFORCED = "enforced"
PARTIAL = "partly"
NOT_ENFORCED = "not enforced"


@dataclass(frozen=True, slots=True)
class Status:
    state: str  # ENFORCED | PARTIAL | NOT_ENFORCED
    note: str = ""
    # PARTIAL: why this value (the typed value from the schema walk) is not enforced, or None when it is
    unenforced: Callable[[Any], str | None] | None = None


def _yes(note: str = "") -> Status:
    return Status(ENFORCED, note)


def _no(note: str) -> Status:
    return Status(NOT_ENFORCED, note)


def _partly(note: str, unenforced: Callable[[Any], str | None]) -> Status:
    return Status(PARTIAL, note, unenforced)


# --- value checks of the partly enforced fields --------------------------------------------------------

_CONNECT_PART = {"5xx", "gateway-error", "reset", "reset-before-request"}  # they include a failed connect


def _retry_on(value: Any) -> str | None:
    conditions = [c.strip() for c in str(value).split(",") if c.strip()]
    part = [c for c in conditions if c in _CONNECT_PART]
    none = [c for c in conditions if c not in _CONNECT_PART and c != "connect-failure"]
    said = []
    if part:
        said.append(f"{', '.join(part)} retr{'ies' if len(part) == 1 else 'y'} only a failed connection")
    if none:
        said.append(f"{', '.join(none)} {'is' if len(none) == 1 else 'are'} not enforced")
    return f"only failed connections are retried: {'; '.join(said)}" if said else None


def _retries(value: Any) -> str | None:
    """Without retryOn, Istio's default conditions apply; only their connect-failure is enforced here."""
    if not isinstance(value, dict) or "retryOn" in value or not value.get("attempts"):
        return None
    return ("only failed connections are retried: Istio's default retryOn also retries 503 responses and "
            "refused-stream, unavailable, cancelled, which are not enforced")


def _export_to(value: Any) -> str | None:
    if value == ["*"] or not value:
        return None
    return "every namespace sees every object here (one proxy, no per-namespace sidecars)"


def _simple_lb(value: Any) -> str | None:
    if value == "PASSTHROUGH":
        return "PASSTHROUGH (original destination) is not implemented; LEAST_REQUEST is used"
    return None


_SKIPPED_SERVER_PROTOCOLS = {"HTTPS", "HTTP_PROXY", "UDP", "REDIS", "MYSQL"}


def _server_protocol(value: Any) -> str | None:
    protocol = str(value).upper()
    if protocol in _SKIPPED_SERVER_PROTOCOLS:
        return f"{protocol} servers are not served: this server opens no listener"
    if protocol == "TLS":
        return "TLS servers are relayed as plain TCP: no SNI routing, no termination"
    return None


def _service_protocol(value: Any) -> str | None:
    protocol = str(value).upper()
    if protocol == "HTTPS":
        return "HTTPS service ports get no sidecar listener (no TLS origination, no SNI routing)"
    if protocol == "UDP":
        return "UDP is not proxied: the sidecar listener for this port is TCP"
    return None


def _resolution(value: Any) -> str | None:
    if value == "NONE":
        return "NONE (pass through to the original destination) is not implemented: the service has no endpoints"
    if value == "DYNAMIC_DNS":
        return "DYNAMIC_DNS is not implemented: the service has no endpoints"
    return None


# --- the table -----------------------------------------------------------------------------------------

_SOURCE = "no client workload identity here (one proxy serves every client)"
_POOL_LIMIT = "connection pool limits (circuit breaking) are not applied"

TABLE: dict[tuple[str, str], Status] = {
    # VirtualService
    ("VirtualService", "hosts"): _yes(),
    ("VirtualService", "gateways"): _yes(),
    ("VirtualService", "http"): _yes(),
    ("VirtualService", "tls"): _no("TLS routes (SNI) are not implemented"),
    ("VirtualService", "tcp"): _yes(),
    ("VirtualService", "exportTo"): _partly("as exportTo: [\"*\"]: one proxy serves every namespace", _export_to),
    ("HTTPRoute", "name"): _yes("route name in metrics and explain"),
    ("HTTPRoute", "match"): _yes(),
    ("HTTPRoute", "route"): _yes(),
    ("HTTPRoute", "redirect"): _yes(),
    ("HTTPRoute", "directResponse"): _yes(),
    ("HTTPRoute", "delegate"): _yes("merged with the delegate VirtualService as istiod does"),
    ("HTTPRoute", "rewrite"): _yes(),
    ("HTTPRoute", "timeout"): _yes(),
    ("HTTPRoute", "retries"): _partly("retries of failed upstream connections", _retries),
    ("HTTPRoute", "fault"): _yes(),
    ("HTTPRoute", "mirror"): _no("traffic mirroring is not implemented"),
    ("HTTPRoute", "mirrors"): _no("traffic mirroring is not implemented"),
    ("HTTPRoute", "mirrorPercent"): _no("traffic mirroring is not implemented"),
    ("HTTPRoute", "mirrorPercentage"): _no("traffic mirroring is not implemented"),
    ("HTTPRoute", "corsPolicy"): _no("CORS is not implemented; requests pass through unchanged"),
    ("HTTPRoute", "headers"): _yes(),
    ("Delegate", "name"): _yes(),
    ("Delegate", "namespace"): _yes(),
    ("Headers", "request"): _yes(),
    ("Headers", "response"): _yes(),
    ("Headers.HeaderOperations", "set"): _yes(),
    ("Headers.HeaderOperations", "add"): _yes(),
    ("Headers.HeaderOperations", "remove"): _yes(),
    ("TCPRoute", "match"): _yes(),
    ("TCPRoute", "route"): _yes(),
    ("HTTPMatchRequest", "name"): _yes("a label only"),
    ("HTTPMatchRequest", "uri"): _yes(),
    ("HTTPMatchRequest", "scheme"): _yes(),
    ("HTTPMatchRequest", "method"): _yes(),
    ("HTTPMatchRequest", "authority"): _yes(),
    ("HTTPMatchRequest", "headers"): _yes(),
    ("HTTPMatchRequest", "port"): _yes(),
    ("HTTPMatchRequest", "sourceLabels"): _no(_SOURCE),
    ("HTTPMatchRequest", "gateways"): _yes(),
    ("HTTPMatchRequest", "queryParams"): _yes(),
    ("HTTPMatchRequest", "ignoreUriCase"): _yes(),
    ("HTTPMatchRequest", "withoutHeaders"): _yes(),
    ("HTTPMatchRequest", "sourceNamespace"): _no(_SOURCE),
    ("HTTPMatchRequest", "statPrefix"): _no("per-route stats prefixes are not emitted"),
    ("HTTPRouteDestination", "destination"): _yes(),
    ("HTTPRouteDestination", "weight"): _yes(),
    ("HTTPRouteDestination", "headers"): _yes(),
    ("RouteDestination", "destination"): _yes(),
    ("RouteDestination", "weight"): _yes(),
    ("L4MatchAttributes", "destinationSubnets"): _yes(),
    ("L4MatchAttributes", "port"): _yes(),
    ("L4MatchAttributes", "sourceLabels"): _no(_SOURCE),
    ("L4MatchAttributes", "gateways"): _yes(),
    ("L4MatchAttributes", "sourceNamespace"): _no(_SOURCE),
    ("L4MatchAttributes", "sourceSubnet"): _no("TCP routes do not match on the client address"),
    ("Destination", "host"): _yes(),
    ("Destination", "subset"): _yes(),
    ("Destination", "port"): _yes(),
    ("PortSelector", "number"): _yes(),
    ("StringMatch", "exact"): _yes(),
    ("StringMatch", "prefix"): _yes(),
    ("StringMatch", "regex"): _yes("RE2, as Envoy"),
    ("HTTPRedirect", "uri"): _yes(),
    ("HTTPRedirect", "authority"): _yes(),
    ("HTTPRedirect", "port"): _yes(),
    ("HTTPRedirect", "derivePort"): _yes(),
    ("HTTPRedirect", "scheme"): _yes(),
    ("HTTPRedirect", "redirectCode"): _yes(),
    ("HTTPRedirect", "prefixRewrite"): _no("the redirect keeps the request's path"),
    ("HTTPDirectResponse", "status"): _yes(),
    ("HTTPDirectResponse", "body"): _yes(),
    ("HTTPBody", "string"): _yes(),
    ("HTTPBody", "bytes"): _yes(),
    ("HTTPRewrite", "uri"): _yes(),
    ("HTTPRewrite", "authority"): _yes(),
    ("HTTPRewrite", "uriRegexRewrite"): _yes(),
    ("RegexRewrite", "match"): _yes("RE2, as Envoy"),
    ("RegexRewrite", "rewrite"): _yes("\\1 … \\9 capture groups, as Envoy"),
    ("HTTPRetry", "attempts"): _yes("retries of failed upstream connections"),
    ("HTTPRetry", "perTryTimeout"): _no("only failed connections are retried; there is no per-try timeout"),
    ("HTTPRetry", "retryOn"): _partly("only connect-failure (also the connect part of 5xx, gateway-error, reset)",
                                      _retry_on),
    ("HTTPRetry", "retryRemoteLocalities"): _no("no localities here"),
    ("HTTPRetry", "retryIgnorePreviousHosts"): _no("a retry may pick the same endpoint"),
    ("HTTPRetry", "backoff"): _no("connection retries are immediate"),
    ("HTTPFaultInjection", "delay"): _yes(),
    ("HTTPFaultInjection", "abort"): _yes(),
    ("HTTPFaultInjection.Delay", "percent"): _yes(),
    ("HTTPFaultInjection.Delay", "fixedDelay"): _yes(),
    ("HTTPFaultInjection.Delay", "exponentialDelay"): _no("rejected by validation, as Istio does"),
    ("HTTPFaultInjection.Delay", "percentage"): _yes(),
    ("HTTPFaultInjection.Abort", "httpStatus"): _yes(),
    ("HTTPFaultInjection.Abort", "grpcStatus"): _no("gRPC aborts are not injected"),
    ("HTTPFaultInjection.Abort", "http2Error"): _no("rejected by validation, as Istio does"),
    ("HTTPFaultInjection.Abort", "percentage"): _yes(),
    ("Percent", "value"): _yes(),
    # DestinationRule
    ("DestinationRule", "host"): _yes(),
    ("DestinationRule", "trafficPolicy"): _yes(),
    ("DestinationRule", "subsets"): _yes(),
    ("DestinationRule", "exportTo"): _partly("as exportTo: [\"*\"]: one proxy serves every namespace", _export_to),
    ("DestinationRule", "workloadSelector"): _no("the rule applies to every client here"),
    ("TrafficPolicy", "loadBalancer"): _yes(),
    ("TrafficPolicy", "connectionPool"): _yes(),
    ("TrafficPolicy", "outlierDetection"): _no("no endpoint is ejected"),
    ("TrafficPolicy", "tls"): _no("upstream connections are plain TCP"),
    ("TrafficPolicy", "portLevelSettings"): _yes(),
    ("TrafficPolicy", "tunnel"): _no("no CONNECT/POST tunnelling"),
    ("TrafficPolicy", "proxyProtocol"): _no("no PROXY protocol header is sent"),
    ("TrafficPolicy", "retryBudget"): _no("retries are not budgeted"),
    ("TrafficPolicy.PortTrafficPolicy", "port"): _yes(),
    ("TrafficPolicy.PortTrafficPolicy", "loadBalancer"): _yes(),
    ("TrafficPolicy.PortTrafficPolicy", "connectionPool"): _yes(),
    ("TrafficPolicy.PortTrafficPolicy", "outlierDetection"): _no("no endpoint is ejected"),
    ("TrafficPolicy.PortTrafficPolicy", "tls"): _no("upstream connections are plain TCP"),
    ("Subset", "name"): _yes(),
    ("Subset", "labels"): _yes(),
    ("Subset", "trafficPolicy"): _yes(),
    ("LoadBalancerSettings", "simple"): _partly("ROUND_ROBIN, RANDOM, LEAST_REQUEST (LEAST_CONN is its old name)",
                                                _simple_lb),
    ("LoadBalancerSettings", "consistentHash"): _no("consistent hashing is not implemented; LEAST_REQUEST is used"),
    ("LoadBalancerSettings", "localityLbSetting"): _no("no localities here"),
    ("LoadBalancerSettings", "zoneAwareLbSetting"): _no("no localities here"),
    ("LoadBalancerSettings", "warmupDurationSecs"): _no("new endpoints get their full share at once"),
    ("LoadBalancerSettings", "warmup"): _no("new endpoints get their full share at once"),
    ("ConnectionPoolSettings", "tcp"): _yes(),
    ("ConnectionPoolSettings", "http"): _yes(),
    ("ConnectionPoolSettings.TCPSettings", "maxConnections"): _no(_POOL_LIMIT),
    ("ConnectionPoolSettings.TCPSettings", "connectTimeout"): _yes(),
    ("ConnectionPoolSettings.TCPSettings", "tcpKeepalive"): _no("the system's TCP keepalive settings are used"),
    ("ConnectionPoolSettings.TCPSettings", "maxConnectionDuration"): _no("upstream connections are not aged out"),
    ("ConnectionPoolSettings.TCPSettings", "idleTimeout"): _yes(),
    ("ConnectionPoolSettings.HTTPSettings", "http1MaxPendingRequests"): _no(_POOL_LIMIT),
    ("ConnectionPoolSettings.HTTPSettings", "http2MaxRequests"): _no(_POOL_LIMIT),
    ("ConnectionPoolSettings.HTTPSettings", "maxRequestsPerConnection"): _yes(),
    ("ConnectionPoolSettings.HTTPSettings", "maxRetries"): _no(_POOL_LIMIT),
    ("ConnectionPoolSettings.HTTPSettings", "idleTimeout"): _yes(),
    ("ConnectionPoolSettings.HTTPSettings", "h2UpgradePolicy"): _no("upstream HTTP is HTTP/1.1"),
    ("ConnectionPoolSettings.HTTPSettings", "useClientProtocol"): _no("upstream HTTP is HTTP/1.1"),
    ("ConnectionPoolSettings.HTTPSettings", "maxConcurrentStreams"): _no("upstream HTTP is HTTP/1.1"),
    ("ConnectionPoolSettings.HTTPSettings", "http2KeepAlive"): _no("upstream HTTP is HTTP/1.1"),
    # Gateway
    ("Gateway", "servers"): _yes(),
    ("Gateway", "selector"): _yes("matched against --labels"),
    ("Server", "port"): _yes(),
    ("Server", "bind"): _no("listeners bind the --bind address"),
    ("Server", "hosts"): _yes(),
    ("Server", "tls"): _no("server TLS (httpsRedirect, certificates, mode) is not applied"),
    ("Server", "defaultEndpoint"): _no("not used"),
    ("Server", "name"): _yes("a label only"),
    ("Port", "number"): _yes(),
    ("Port", "protocol"): _partly("HTTP, HTTP2, GRPC, GRPC-WEB, TCP, MONGO; TLS as plain TCP", _server_protocol),
    ("Port", "name"): _yes("a label only"),
    ("Port", "targetPort"): _no("rejected by validation, as Istio does"),
    # ServiceEntry and WorkloadEntry
    ("ServiceEntry", "hosts"): _yes(),
    ("ServiceEntry", "addresses"): _no("no VIP matching: sidecar TCP listeners are per service port"),
    ("ServiceEntry", "ports"): _yes(),
    ("ServiceEntry", "location"): _yes("both values route the same (no mesh mutual TLS here)"),
    ("ServiceEntry", "resolution"): _partly("STATIC, DNS, DNS_ROUND_ROBIN", _resolution),
    ("ServiceEntry", "endpoints"): _yes(),
    ("ServiceEntry", "workloadSelector"): _yes("selects WorkloadEntries"),
    ("ServiceEntry", "exportTo"): _partly("as exportTo: [\"*\"]: one proxy serves every namespace", _export_to),
    ("ServiceEntry", "subjectAltNames"): _no("no mesh mutual TLS here"),
    ("ServicePort", "number"): _yes(),
    ("ServicePort", "protocol"): _partly("HTTP, HTTP2, GRPC, GRPC-WEB routed as HTTP; the others but HTTPS and UDP "
                                         "relayed as TCP", _service_protocol),
    ("ServicePort", "name"): _yes(),
    ("ServicePort", "targetPort"): _yes(),
    ("WorkloadSelector", "labels"): _yes(),
    ("WorkloadEntry", "address"): _yes(),
    ("WorkloadEntry", "ports"): _yes(),
    ("WorkloadEntry", "labels"): _yes(),
    ("WorkloadEntry", "network"): _no("one network here"),
    ("WorkloadEntry", "locality"): _no("no localities here"),
    ("WorkloadEntry", "weight"): _no("endpoints of a cluster are balanced equally"),
    ("WorkloadEntry", "serviceAccount"): _no("no mesh identities here"),
}

INHERITED = Status(NOT_ENFORCED, "")  # a field under a field that is not enforced


def status(message: str, field: str, parent_enforced: bool = True) -> Status | None:
    """The field's row; INHERITED under a field that is not enforced; None when the table lacks a row."""
    if not parent_enforced:
        return INHERITED
    return TABLE.get((message, field))
