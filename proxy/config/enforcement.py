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

def _export_to(value: Any) -> str | None:
    if value == ["*"] or not value:
        return None
    return "every namespace sees every object here (one proxy, no per-namespace sidecars)"


def _simple_lb(value: Any) -> str | None:
    if value == "PASSTHROUGH":
        return ("PASSTHROUGH uses the original destination only under transparent capture (run --capture); "
                "LEAST_REQUEST otherwise")
    return None


_SKIPPED_SERVER_PROTOCOLS = {"HTTP_PROXY", "UDP", "REDIS", "MYSQL"}


def _server_protocol(value: Any) -> str | None:
    protocol = str(value).upper()
    if protocol in _SKIPPED_SERVER_PROTOCOLS:
        return f"{protocol} servers are not served: this server opens no listener"
    return None


def _server_tls_mode(value: Any) -> str | None:
    if value in ("AUTO_PASSTHROUGH", "ISTIO_MUTUAL"):
        return f"{value} needs Istio's mesh (multi-cluster SNI names, istiod identities): a config error when served"
    return None


def _client_tls_mode(value: Any) -> str | None:
    if value == "ISTIO_MUTUAL":
        return ("ISTIO_MUTUAL needs this proxy's mesh certificates (run --mesh-certs DIR); without them the config "
                "is rejected when served, never sent in plaintext")
    return None


def _first_only(value: Any) -> str | None:
    if isinstance(value, list) and len(value) > 1:
        return "only the first certificate is served (one certificate per server)"
    return None


def _service_protocol(value: Any) -> str | None:
    protocol = str(value).upper()
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

_SOURCE = "matched against this proxy's own --labels / --namespace, as istiod does for a sidecar"
_POOL_LIMIT = "circuit breaking: over the limit, 503 with flag UO"

TABLE: dict[tuple[str, str], Status] = {
    # VirtualService
    ("VirtualService", "hosts"): _yes(),
    ("VirtualService", "gateways"): _yes(),
    ("VirtualService", "http"): _yes(),
    ("VirtualService", "tls"): _yes("routed by the ClientHello's SNI, not terminated; one pick per connection"),
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
    ("HTTPRoute", "retries"): _yes("Istio's default policy when unset"),
    ("HTTPRoute", "fault"): _yes(),
    ("HTTPRoute", "mirror"): _yes("copies to the authority suffixed -shadow, answers discarded"),
    ("HTTPRoute", "mirrors"): _yes(),
    ("HTTPRoute", "mirrorPercent"): _yes(),
    ("HTTPRoute", "mirrorPercentage"): _yes(),
    ("HTTPRoute", "corsPolicy"): _yes("preflights answered by the proxy, as Envoy's CORS filter"),
    ("HTTPRoute", "headers"): _yes(),
    ("HTTPMirrorPolicy", "destination"): _yes(),
    ("HTTPMirrorPolicy", "percentage"): _yes(),
    ("CorsPolicy", "allowOrigins"): _yes(),
    ("CorsPolicy", "allowOrigin"): _yes("read as exact matches"),
    ("CorsPolicy", "allowMethods"): _yes(),
    ("CorsPolicy", "allowHeaders"): _yes(),
    ("CorsPolicy", "exposeHeaders"): _yes(),
    ("CorsPolicy", "maxAge"): _yes(),
    ("CorsPolicy", "allowCredentials"): _yes(),
    ("CorsPolicy", "unmatchedPreflights"): _yes(),
    ("Delegate", "name"): _yes(),
    ("Delegate", "namespace"): _yes(),
    ("Headers", "request"): _yes(),
    ("Headers", "response"): _yes(),
    ("Headers.HeaderOperations", "set"): _yes(),
    ("Headers.HeaderOperations", "add"): _yes(),
    ("Headers.HeaderOperations", "remove"): _yes(),
    ("TLSRoute", "match"): _yes(),
    ("TLSRoute", "route"): _yes(),
    ("TLSMatchAttributes", "sniHosts"): _yes("exact names and *.suffix wildcards"),
    ("TLSMatchAttributes", "destinationSubnets"): _yes(),
    ("TLSMatchAttributes", "port"): _yes(),
    ("TLSMatchAttributes", "sourceLabels"): _yes(_SOURCE),
    ("TLSMatchAttributes", "gateways"): _yes(),
    ("TLSMatchAttributes", "sourceNamespace"): _yes(_SOURCE),
    ("TCPRoute", "match"): _yes(),
    ("TCPRoute", "route"): _yes(),
    ("HTTPMatchRequest", "name"): _yes("a label only"),
    ("HTTPMatchRequest", "uri"): _yes(),
    ("HTTPMatchRequest", "scheme"): _yes(),
    ("HTTPMatchRequest", "method"): _yes(),
    ("HTTPMatchRequest", "authority"): _yes(),
    ("HTTPMatchRequest", "headers"): _yes(),
    ("HTTPMatchRequest", "port"): _yes(),
    ("HTTPMatchRequest", "sourceLabels"): _yes(_SOURCE),
    ("HTTPMatchRequest", "gateways"): _yes(),
    ("HTTPMatchRequest", "queryParams"): _yes(),
    ("HTTPMatchRequest", "ignoreUriCase"): _yes(),
    ("HTTPMatchRequest", "withoutHeaders"): _yes(),
    ("HTTPMatchRequest", "sourceNamespace"): _yes(_SOURCE),
    ("HTTPMatchRequest", "statPrefix"): _no("per-route stats prefixes are not emitted"),
    ("HTTPRouteDestination", "destination"): _yes(),
    ("HTTPRouteDestination", "weight"): _yes(),
    ("HTTPRouteDestination", "headers"): _yes(),
    ("RouteDestination", "destination"): _yes(),
    ("RouteDestination", "weight"): _yes(),
    ("L4MatchAttributes", "destinationSubnets"): _yes(),
    ("L4MatchAttributes", "port"): _yes(),
    ("L4MatchAttributes", "sourceLabels"): _yes(_SOURCE),
    ("L4MatchAttributes", "gateways"): _yes(),
    ("L4MatchAttributes", "sourceNamespace"): _yes(_SOURCE),
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
    ("HTTPRedirect", "prefixRewrite"): _yes(),
    ("HTTPDirectResponse", "status"): _yes(),
    ("HTTPDirectResponse", "body"): _yes(),
    ("HTTPBody", "string"): _yes(),
    ("HTTPBody", "bytes"): _yes(),
    ("HTTPRewrite", "uri"): _yes(),
    ("HTTPRewrite", "authority"): _yes(),
    ("HTTPRewrite", "uriRegexRewrite"): _yes(),
    ("RegexRewrite", "match"): _yes("RE2, as Envoy"),
    ("RegexRewrite", "rewrite"): _yes("\\1 … \\9 capture groups, as Envoy"),
    ("HTTPRetry", "attempts"): _yes(),
    ("HTTPRetry", "perTryTimeout"): _yes("504 UT per try; the route timeout caps all tries"),
    ("HTTPRetry", "retryOn"): _yes("Envoy's conditions; refused-stream and the gRPC ones never occur over HTTP/1.1"),
    ("HTTPRetry", "retryRemoteLocalities"): _no("no localities here"),
    ("HTTPRetry", "retryIgnorePreviousHosts"): _yes(),
    ("HTTPRetry", "backoff"): _yes("jittered exponential back-off from this base"),
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
    ("TrafficPolicy", "outlierDetection"): _yes(),
    ("TrafficPolicy", "tls"): _yes("TLS origination; never plaintext when TLS is asked for"),
    ("TrafficPolicy", "portLevelSettings"): _yes(),
    ("TrafficPolicy", "tunnel"): _no("no CONNECT/POST tunnelling"),
    ("TrafficPolicy", "proxyProtocol"): _no("no PROXY protocol header is sent"),
    ("TrafficPolicy", "retryBudget"): _no("retries are not budgeted"),
    ("TrafficPolicy.PortTrafficPolicy", "port"): _yes(),
    ("TrafficPolicy.PortTrafficPolicy", "loadBalancer"): _yes(),
    ("TrafficPolicy.PortTrafficPolicy", "connectionPool"): _yes(),
    ("TrafficPolicy.PortTrafficPolicy", "outlierDetection"): _yes(),
    ("TrafficPolicy.PortTrafficPolicy", "tls"): _yes("TLS origination; never plaintext when TLS is asked for"),
    ("ClientTLSSettings", "mode"): _partly("DISABLE, SIMPLE, MUTUAL; ISTIO_MUTUAL with the mesh certificates of "
                                           "--mesh-certs", _client_tls_mode),
    ("ClientTLSSettings", "clientCertificate"): _yes(),
    ("ClientTLSSettings", "privateKey"): _yes(),
    ("ClientTLSSettings", "caCertificates"): _yes("the system roots when not set"),
    ("ClientTLSSettings", "credentialName"): _yes("DIR/NAME/{tls.crt,tls.key,ca.crt} of --credentials-dir"),
    ("ClientTLSSettings", "subjectAltNames"): _yes("the upstream certificate must carry one of them"),
    ("ClientTLSSettings", "sni"): _yes("no SNI is sent when not set"),
    ("ClientTLSSettings", "insecureSkipVerify"): _yes(),
    ("ClientTLSSettings", "caCrl"): _no("revocation lists are not checked"),
    ("Subset", "name"): _yes(),
    ("Subset", "labels"): _yes(),
    ("Subset", "trafficPolicy"): _yes(),
    ("LoadBalancerSettings", "simple"): _partly("ROUND_ROBIN, RANDOM, LEAST_REQUEST (LEAST_CONN is its old name); "
                                                "PASSTHROUGH with run --capture",
                                                _simple_lb),
    ("LoadBalancerSettings", "consistentHash"): _yes("ring hash or Maglev"),
    ("LoadBalancerSettings", "localityLbSetting"): _no("no localities here"),
    ("LoadBalancerSettings", "zoneAwareLbSetting"): _no("no localities here"),
    ("LoadBalancerSettings", "warmupDurationSecs"): _no("new endpoints get their full share at once"),
    ("LoadBalancerSettings", "warmup"): _no("new endpoints get their full share at once"),
    ("LoadBalancerSettings.ConsistentHashLB", "httpHeaderName"): _yes(),
    ("LoadBalancerSettings.ConsistentHashLB", "httpCookie"): _yes("set when absent with a ttl"),
    ("LoadBalancerSettings.ConsistentHashLB", "useSourceIp"): _yes("HTTP and TCP"),
    ("LoadBalancerSettings.ConsistentHashLB", "httpQueryParameterName"): _yes(),
    ("LoadBalancerSettings.ConsistentHashLB", "ringHash"): _yes(),
    ("LoadBalancerSettings.ConsistentHashLB", "maglev"): _yes(),
    ("LoadBalancerSettings.ConsistentHashLB", "minimumRingSize"): _yes("deprecated; ringHash.minimumRingSize"),
    ("ConsistentHashLB.HTTPCookie", "name"): _yes(),
    ("ConsistentHashLB.HTTPCookie", "path"): _yes(),
    ("ConsistentHashLB.HTTPCookie", "ttl"): _yes(),
    ("ConsistentHashLB.HTTPCookie", "attributes"): _yes(),
    ("HTTPCookie.Attribute", "name"): _yes(),
    ("HTTPCookie.Attribute", "value"): _yes(),
    ("ConsistentHashLB.RingHash", "minimumRingSize"): _yes("points per endpoint, scaled by weight"),
    ("ConsistentHashLB.MagLev", "tableSize"): _yes(),
    ("TCPSettings.TcpKeepalive", "probes"): _yes(),
    ("TCPSettings.TcpKeepalive", "time"): _yes(),
    ("TCPSettings.TcpKeepalive", "interval"): _yes(),
    ("OutlierDetection", "splitExternalLocalOriginErrors"): _yes(),
    ("OutlierDetection", "consecutiveLocalOriginFailures"): _yes(),
    ("OutlierDetection", "consecutiveGatewayErrors"): _yes(),
    ("OutlierDetection", "consecutive5xxErrors"): _yes(),
    ("OutlierDetection", "interval"): _yes(),
    ("OutlierDetection", "baseEjectionTime"): _yes("multiplied by the endpoint's number of ejections"),
    ("OutlierDetection", "maxEjectionPercent"): _yes("Envoy's default 10 % when unset"),
    ("OutlierDetection", "minHealthPercent"): _yes("panic: below it, every endpoint is chosen from"),
    ("OutlierDetection", "consecutiveErrors"): _yes("deprecated; consecutive5xxErrors"),
    ("OutlierDetection", "outlierDetectionHttpErrorCodes"): _no("every 5xx counts as an error"),
    ("ConnectionPoolSettings", "tcp"): _yes(),
    ("ConnectionPoolSettings", "http"): _yes(),
    ("ConnectionPoolSettings.TCPSettings", "maxConnections"): _yes(_POOL_LIMIT),
    ("ConnectionPoolSettings.TCPSettings", "connectTimeout"): _yes(),
    ("ConnectionPoolSettings.TCPSettings", "tcpKeepalive"): _yes(),
    ("ConnectionPoolSettings.TCPSettings", "maxConnectionDuration"): _yes(),
    ("ConnectionPoolSettings.TCPSettings", "idleTimeout"): _yes(),
    ("ConnectionPoolSettings.HTTPSettings", "http1MaxPendingRequests"): _yes(_POOL_LIMIT),
    ("ConnectionPoolSettings.HTTPSettings", "http2MaxRequests"): _yes(_POOL_LIMIT),
    ("ConnectionPoolSettings.HTTPSettings", "maxRequestsPerConnection"): _yes(),
    ("ConnectionPoolSettings.HTTPSettings", "maxRetries"): _yes(_POOL_LIMIT),
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
    ("Server", "tls"): _yes(),
    ("ServerTLSSettings", "httpsRedirect"): _yes("301 to https"),
    ("ServerTLSSettings", "mode"): _partly("SIMPLE, MUTUAL, OPTIONAL_MUTUAL terminated; PASSTHROUGH routed by SNI",
                                           _server_tls_mode),
    ("ServerTLSSettings", "serverCertificate"): _yes("reloaded when the file changes"),
    ("ServerTLSSettings", "privateKey"): _yes("reloaded when the file changes"),
    ("ServerTLSSettings", "caCertificates"): _yes("client certificates of MUTUAL and OPTIONAL_MUTUAL"),
    ("ServerTLSSettings", "caCrl"): _no("revocation lists are not checked"),
    ("ServerTLSSettings", "credentialName"): _yes("DIR/NAME/{tls.crt,tls.key,ca.crt} of --credentials-dir"),
    ("ServerTLSSettings", "credentialNames"): _partly("the first one", _first_only),
    ("ServerTLSSettings", "tlsCertificates"): _partly("the first one", _first_only),
    ("ServerTLSSettings.TLSCertificate", "serverCertificate"): _yes(),
    ("ServerTLSSettings.TLSCertificate", "privateKey"): _yes(),
    ("ServerTLSSettings.TLSCertificate", "caCertificates"): _no("the server's caCertificates verifies clients"),
    ("ServerTLSSettings", "subjectAltNames"): _no("client certificates are checked against the CA only"),
    ("ServerTLSSettings", "verifyCertificateSpki"): _no("client certificates are checked against the CA only"),
    ("ServerTLSSettings", "verifyCertificateHash"): _no("client certificates are checked against the CA only"),
    ("ServerTLSSettings", "minProtocolVersion"): _yes("TLS 1.2 when not set; servers sharing a port share the "
                                                      "strictest (versions are settled before SNI)"),
    ("ServerTLSSettings", "maxProtocolVersion"): _yes("servers sharing a port share the strictest"),
    ("ServerTLSSettings", "cipherSuites"): _yes("OpenSSL names, TLS 1.2 and below; the first server's on a "
                                                "shared port"),
    ("ServerTLSSettings", "caCertCredentialName"): _no("the CA comes from credentialName's ca.crt or "
                                                       "NAME-cacert/ca.crt"),
    ("ServerTLSSettings", "insecureSkipVerify"): _no("client certificates of MUTUAL are always verified"),
    ("Server", "defaultEndpoint"): _no("not used"),
    ("Server", "name"): _yes("a label only"),
    ("Port", "number"): _yes(),
    ("Port", "protocol"): _partly("HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, TCP, MONGO", _server_protocol),
    ("Port", "name"): _yes("a label only"),
    ("Port", "targetPort"): _no("rejected by validation, as Istio does"),
    # ServiceEntry and WorkloadEntry
    ("ServiceEntry", "hosts"): _yes(),
    ("ServiceEntry", "addresses"): _yes("VIPs match connections redirected by transparent capture (run --capture)"),
    ("ServiceEntry", "ports"): _yes(),
    ("ServiceEntry", "location"): _yes("both values route the same (no mesh mutual TLS here)"),
    ("ServiceEntry", "resolution"): _partly("STATIC, DNS, DNS_ROUND_ROBIN", _resolution),
    ("ServiceEntry", "endpoints"): _yes(),
    ("ServiceEntry", "workloadSelector"): _yes("selects WorkloadEntries"),
    ("ServiceEntry", "exportTo"): _partly("as exportTo: [\"*\"]: one proxy serves every namespace", _export_to),
    ("ServiceEntry", "subjectAltNames"): _no("no mesh mutual TLS here"),
    ("ServicePort", "number"): _yes(),
    ("ServicePort", "protocol"): _partly("HTTP, HTTP2, GRPC, GRPC-WEB routed as HTTP; TLS, and HTTPS with mesh tls "
                                         "rules, passed through by SNI; the others but UDP relayed as TCP",
                                         _service_protocol),
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
