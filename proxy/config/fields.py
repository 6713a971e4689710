"""The Istio networking API's message shapes, as tables the schema walker (`schema.py`) reads.

Field tables use the proto (snake_case) names, from istio/api networking/v1alpha3; `FIELDS` and
`ALIASES` derive, per message, the camelCase JSON name of each field and every spelling Istio's jsonpb
parser accepts for it.
"""

from __future__ import annotations

# --- Messages (istio/api networking/v1alpha3; v1 and v1beta1 are the same schema) -----------------------
# Type syntax: scalar name | "enum:<Enum>" | "<Message>" | "[T]" (repeated) | "{T}" (map<string, T>).
# Wrappers (BoolValue, UInt32Value, DoubleValue) are written as their scalar, as in JSON.

_STRING_MATCH_MAP = "{StringMatch}"
_LABELS = "{string}"

MESSAGES: dict[str, dict[str, str]] = {
    # VirtualService
    "VirtualService": {"hosts": "[string]", "gateways": "[string]", "http": "[HTTPRoute]",
                       "tls": "[TLSRoute]", "tcp": "[TCPRoute]", "export_to": "[string]"},
    "HTTPRoute": {
        "name": "string", "match": "[HTTPMatchRequest]", "route": "[HTTPRouteDestination]",
        "redirect": "HTTPRedirect", "direct_response": "HTTPDirectResponse", "delegate": "Delegate",
        "rewrite": "HTTPRewrite", "timeout": "duration", "retries": "HTTPRetry", "fault": "HTTPFaultInjection",
        "mirror": "Destination", "mirrors": "[HTTPMirrorPolicy]", "mirror_percent": "uint32",
        "mirror_percentage": "Percent", "cors_policy": "CorsPolicy", "headers": "Headers",
    },
    "Delegate": {"name": "string", "namespace": "string"},
    "Headers": {"request": "Headers.HeaderOperations", "response": "Headers.HeaderOperations"},
    "Headers.HeaderOperations": {"set": "{string}", "add": "{string}", "remove": "[string]"},
    "TLSRoute": {"match": "[TLSMatchAttributes]", "route": "[RouteDestination]"},
    "TCPRoute": {"match": "[L4MatchAttributes]", "route": "[RouteDestination]"},
    "HTTPMatchRequest": {
        "name": "string", "uri": "StringMatch", "scheme": "StringMatch", "method": "StringMatch",
        "authority": "StringMatch", "headers": _STRING_MATCH_MAP, "port": "uint32", "source_labels": _LABELS,
        "gateways": "[string]", "query_params": _STRING_MATCH_MAP, "ignore_uri_case": "bool",
        "without_headers": _STRING_MATCH_MAP, "source_namespace": "string", "stat_prefix": "string",
    },
    "HTTPRouteDestination": {"destination": "Destination", "weight": "int32", "headers": "Headers"},
    "RouteDestination": {"destination": "Destination", "weight": "int32"},
    "L4MatchAttributes": {"destination_subnets": "[string]", "port": "uint32", "source_labels": _LABELS,
                          "gateways": "[string]", "source_namespace": "string", "source_subnet": "string"},
    "TLSMatchAttributes": {"sni_hosts": "[string]", "destination_subnets": "[string]", "port": "uint32",
                           "source_labels": _LABELS, "gateways": "[string]", "source_namespace": "string"},
    "Destination": {"host": "string", "subset": "string", "port": "PortSelector"},
    "PortSelector": {"number": "uint32"},
    "StringMatch": {"exact": "string", "prefix": "string", "regex": "string"},
    "HTTPRedirect": {"uri": "string", "authority": "string", "port": "uint32",
                     "derive_port": "enum:HTTPRedirect.RedirectPortSelection", "scheme": "string",
                     "redirect_code": "uint32", "prefix_rewrite": "string"},
    "HTTPDirectResponse": {"status": "uint32", "body": "HTTPBody"},
    "HTTPBody": {"string": "string", "bytes": "bytes"},
    "HTTPRewrite": {"uri": "string", "authority": "string", "uri_regex_rewrite": "RegexRewrite"},
    "RegexRewrite": {"match": "string", "rewrite": "string"},
    "HTTPRetry": {"attempts": "int32", "per_try_timeout": "duration", "retry_on": "string",
                  "retry_remote_localities": "bool", "retry_ignore_previous_hosts": "bool",
                  "backoff": "duration"},
    "CorsPolicy": {"allow_origins": "[StringMatch]", "allow_origin": "[string]", "allow_methods": "[string]",
                   "allow_headers": "[string]", "expose_headers": "[string]", "max_age": "duration",
                   "allow_credentials": "bool", "unmatched_preflights": "enum:CorsPolicy.UnmatchedPreflights"},
    "HTTPFaultInjection": {"delay": "HTTPFaultInjection.Delay", "abort": "HTTPFaultInjection.Abort"},
    "HTTPFaultInjection.Delay": {"percent": "int32", "fixed_delay": "duration", "exponential_delay": "duration",
                                 "percentage": "Percent"},
    "HTTPFaultInjection.Abort": {"http_status": "int32", "grpc_status": "string", "http2_error": "string",
                                 "percentage": "Percent"},
    "HTTPMirrorPolicy": {"destination": "Destination", "percentage": "Percent"},
    "Percent": {"value": "double"},
    # DestinationRule
    "DestinationRule": {"host": "string", "traffic_policy": "TrafficPolicy", "subsets": "[Subset]",
                        "export_to": "[string]", "workload_selector": "type.WorkloadSelector"},
    "type.WorkloadSelector": {"match_labels": _LABELS},
    "TrafficPolicy": {
        "load_balancer": "LoadBalancerSettings", "connection_pool": "ConnectionPoolSettings",
        "outlier_detection": "OutlierDetection", "tls": "ClientTLSSettings",
        "port_level_settings": "[TrafficPolicy.PortTrafficPolicy]", "tunnel": "TrafficPolicy.TunnelSettings",
        "proxy_protocol": "TrafficPolicy.ProxyProtocol", "retry_budget": "TrafficPolicy.RetryBudget",
    },
    "TrafficPolicy.PortTrafficPolicy": {"port": "PortSelector", "load_balancer": "LoadBalancerSettings",
                                        "connection_pool": "ConnectionPoolSettings",
                                        "outlier_detection": "OutlierDetection", "tls": "ClientTLSSettings"},
    "TrafficPolicy.TunnelSettings": {"protocol": "string", "target_host": "string", "target_port": "uint32"},
    "TrafficPolicy.ProxyProtocol": {"version": "enum:TrafficPolicy.ProxyProtocol.VERSION"},
    "TrafficPolicy.RetryBudget": {"percent": "Percent", "min_retry_concurrency": "uint32",
                                  "budget_interval": "duration"},
    "Subset": {"name": "string", "labels": _LABELS, "traffic_policy": "TrafficPolicy"},
    "LoadBalancerSettings": {"simple": "enum:LoadBalancerSettings.SimpleLB",
                             "consistent_hash": "LoadBalancerSettings.ConsistentHashLB",
                             "locality_lb_setting": "LocalityLoadBalancerSetting",
                             "zone_aware_lb_setting": "ZoneAwareLoadBalancerSetting",
                             "warmup_duration_secs": "duration", "warmup": "WarmupConfiguration"},
    "LoadBalancerSettings.ConsistentHashLB": {
        "http_header_name": "string", "http_cookie": "ConsistentHashLB.HTTPCookie", "use_source_ip": "bool",
        "http_query_parameter_name": "string", "ring_hash": "ConsistentHashLB.RingHash",
        "maglev": "ConsistentHashLB.MagLev", "minimum_ring_size": "uint64",
    },
    "ConsistentHashLB.HTTPCookie": {"name": "string", "path": "string", "ttl": "duration",
                                    "attributes": "[HTTPCookie.Attribute]"},
    "HTTPCookie.Attribute": {"name": "string", "value": "string"},
    "ConsistentHashLB.RingHash": {"minimum_ring_size": "uint64"},
    "ConsistentHashLB.MagLev": {"table_size": "uint64"},
    "WarmupConfiguration": {"duration": "duration", "minimum_percent": "double", "aggression": "double"},
    "LocalityLoadBalancerSetting": {"distribute": "[LocalityLoadBalancerSetting.Distribute]",
                                    "failover": "[LocalityLoadBalancerSetting.Failover]",
                                    "failover_priority": "[string]", "enabled": "bool"},
    "LocalityLoadBalancerSetting.Distribute": {"from": "string", "to": "{uint32}"},
    "LocalityLoadBalancerSetting.Failover": {"from": "string", "to": "string"},
    "ZoneAwareLoadBalancerSetting": {"enabled": "bool", "failover": "[ZoneAwareLoadBalancerSetting.Failover]",
                                     "failover_priority": "[string]", "min_cluster_size": "uint64"},
    "ZoneAwareLoadBalancerSetting.Failover": {"from": "string", "to": "string"},
    "ConnectionPoolSettings": {"tcp": "ConnectionPoolSettings.TCPSettings",
                               "http": "ConnectionPoolSettings.HTTPSettings"},
    "ConnectionPoolSettings.TCPSettings": {
        "max_connections": "int32", "connect_timeout": "duration", "tcp_keepalive": "TCPSettings.TcpKeepalive",
        "max_connection_duration": "duration", "idle_timeout": "duration",
    },
    "TCPSettings.TcpKeepalive": {"probes": "uint32", "time": "duration", "interval": "duration"},
    "ConnectionPoolSettings.HTTPSettings": {
        "http1_max_pending_requests": "int32", "http2_max_requests": "int32",
        "max_requests_per_connection": "int32", "max_retries": "int32", "idle_timeout": "duration",
        "h2_upgrade_policy": "enum:HTTPSettings.H2UpgradePolicy", "use_client_protocol": "bool",
        "max_concurrent_streams": "int32", "http2_keep_alive": "HTTPSettings.ConnectionKeepalive",
    },
    "HTTPSettings.ConnectionKeepalive": {"interval": "duration", "timeout": "duration"},
    "OutlierDetection": {
        "split_external_local_origin_errors": "bool", "consecutive_local_origin_failures": "uint32",
        "consecutive_gateway_errors": "uint32", "consecutive_5xx_errors": "uint32", "interval": "duration",
        "base_ejection_time": "duration", "max_ejection_percent": "int32", "min_health_percent": "int32",
        "consecutive_errors": "int32", "outlier_detection_http_error_codes": "[uint32]",
    },
    "ClientTLSSettings": {"mode": "enum:ClientTLSSettings.TLSmode", "client_certificate": "string",
                          "private_key": "string", "ca_certificates": "string", "credential_name": "string",
                          "subject_alt_names": "[string]", "sni": "string", "insecure_skip_verify": "bool",
                          "ca_crl": "string"},
    # Gateway
    "Gateway": {"servers": "[Server]", "selector": _LABELS},
    "Server": {"port": "Port", "bind": "string", "hosts": "[string]", "tls": "ServerTLSSettings",
               "default_endpoint": "string", "name": "string"},
    "Port": {"number": "uint32", "protocol": "string", "name": "string", "target_port": "uint32"},
    "ServerTLSSettings": {
        "https_redirect": "bool", "mode": "enum:ServerTLSSettings.TLSmode", "server_certificate": "string",
        "private_key": "string", "ca_certificates": "string", "ca_crl": "string", "credential_name": "string",
        "credential_names": "[string]", "tls_certificates": "[ServerTLSSettings.TLSCertificate]",
        "subject_alt_names": "[string]", "verify_certificate_spki": "[string]",
        "verify_certificate_hash": "[string]", "min_protocol_version": "enum:ServerTLSSettings.TLSProtocol",
        "max_protocol_version": "enum:ServerTLSSettings.TLSProtocol", "cipher_suites": "[string]",
        "ca_cert_credential_name": "string", "insecure_skip_verify": "bool",
    },
    "ServerTLSSettings.TLSCertificate": {"server_certificate": "string", "private_key": "string",
                                         "ca_certificates": "string"},
    # ServiceEntry / WorkloadEntry
    "ServiceEntry": {"hosts": "[string]", "addresses": "[string]", "ports": "[ServicePort]",
                     "location": "enum:ServiceEntry.Location", "resolution": "enum:ServiceEntry.Resolution",
                     "endpoints": "[WorkloadEntry]", "workload_selector": "WorkloadSelector",
                     "export_to": "[string]", "subject_alt_names": "[string]"},
    "ServicePort": {"number": "uint32", "protocol": "string", "name": "string", "target_port": "uint32"},
    "WorkloadSelector": {"labels": _LABELS},
    "WorkloadEntry": {"address": "string", "ports": "{uint32}", "labels": _LABELS, "network": "string",
                      "locality": "string", "weight": "uint32", "service_account": "string"},
}

# Repeated message fields whose items may be null: Istio reads a null HTTP match block as "match everything".
NULL_ITEMS: frozenset[tuple[str, str]] = frozenset({("HTTPRoute", "match")})

# Groups of fields of which at most one may be set (proto `oneof`).
ONEOFS: dict[str, list[tuple[str, ...]]] = {
    "StringMatch": [("exact", "prefix", "regex")],
    "HTTPRedirect": [("port", "derivePort")],
    "HTTPBody": [("string", "bytes")],
    "HTTPFaultInjection.Delay": [("fixedDelay", "exponentialDelay")],
    "HTTPFaultInjection.Abort": [("httpStatus", "grpcStatus", "http2Error")],
    "LoadBalancerSettings": [("simple", "consistentHash")],
    "LoadBalancerSettings.ConsistentHashLB": [
        ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"), ("ringHash", "maglev")],
}

ENUMS: dict[str, tuple[str, ...]] = {  # names in number order
    "HTTPRedirect.RedirectPortSelection": ("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"),
    "CorsPolicy.UnmatchedPreflights": ("UNSPECIFIED", "FORWARD", "IGNORE"),
    "TrafficPolicy.ProxyProtocol.VERSION": ("V1", "V2"),
    "LoadBalancerSettings.SimpleLB": ("UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN",
                                      "LEAST_REQUEST"),
    "HTTPSettings.H2UpgradePolicy": ("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"),
    "ClientTLSSettings.TLSmode": ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"),
    "ServerTLSSettings.TLSmode": ("PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL",
                                  "OPTIONAL_MUTUAL"),
    "ServerTLSSettings.TLSProtocol": ("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"),
    "ServiceEntry.Location": ("MESH_EXTERNAL", "MESH_INTERNAL"),
    "ServiceEntry.Resolution": ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"),
}

# Kubernetes ObjectMeta fields a manifest may carry (server-populated ones included: `kubectl get -o yaml`).
METADATA_FIELDS: dict[str, str] = {
    "name": "string", "namespace": "string", "labels": _LABELS, "annotations": "{string}",
    "generateName": "string", "uid": "string", "resourceVersion": "string", "generation": "int64",
    "creationTimestamp": "timestamp", "deletionTimestamp": "timestamp", "deletionGracePeriodSeconds": "int64",
    "selfLink": "string", "ownerReferences": "[opaque]", "finalizers": "[string]", "managedFields": "[opaque]",
}
TOP_LEVEL_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")


def json_name(proto_name: str) -> str:
    """protoc's JSON name: drop each `_` and upper-case the next character (`consecutive_5xx_errors` →
    `consecutive5xxErrors`)."""
    out, upper = [], False
    for ch in proto_name:
        if ch == "_":
            upper = True
            continue
        out.append(ch.upper() if upper else ch)
        upper = False
    return "".join(out)


# camelCase name → type, plus every accepted spelling → camelCase name
FIELDS: dict[str, dict[str, str]] = {}
ALIASES: dict[str, dict[str, str]] = {}
for _msg, _table in MESSAGES.items():
    FIELDS[_msg] = {json_name(k): t for k, t in _table.items()}
    ALIASES[_msg] = {**{k: json_name(k) for k in _table}, **{json_name(k): json_name(k) for k in _table}}
FIELDS["metadata"] = dict(METADATA_FIELDS)
ALIASES["metadata"] = {k: k for k in METADATA_FIELDS}
