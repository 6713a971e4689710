"""The Istio networking API's message shapes, and a walker that type-checks raw YAML against them.

Field tables use the proto (snake_case) names; the walker accepts those and the camelCase JSON names, as
Istio's jsonpb parser does, and rejects any other field. It returns the same tree with camelCase keys and
typed values (`Msg` dicts that remember each field's YAML path, durations as integer nanoseconds, enums
as names), so the semantic rules in `validate.py` never see a value of the wrong type. Also here: Go
duration parsing and the RE2 regex check, the two value syntaxes Istio borrows from Go.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import difflib
from typing import Any

from proxy.config.diagnostics import Diagnostic, Path, render_path
from proxy.config.duration import parse_duration_ns
from proxy.config.load import RawObject

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
                          "gateways": "[string]", "source_namespace": "string"},
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
    "TrafficPolicy.RetryBudget": {"percent": "Percent", "min_retry_concurrency": "uint32"},
    "Subset": {"name": "string", "labels": _LABELS, "traffic_policy": "TrafficPolicy"},
    "LoadBalancerSettings": {"simple": "enum:LoadBalancerSettings.SimpleLB",
                             "consistent_hash": "LoadBalancerSettings.ConsistentHashLB",
                             "locality_lb_setting": "LocalityLoadBalancerSetting",
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
        "max_concurrent_streams": "int32",
        # newer than the schema tables here: accepted as an opaque mapping
        "http2_keep_alive": "opaque",
    },
    "OutlierDetection": {
        "split_external_local_origin_errors": "bool", "consecutive_local_origin_failures": "uint32",
        "consecutive_gateway_errors": "uint32", "consecutive_5xx_errors": "uint32", "interval": "duration",
        "base_ejection_time": "duration", "max_ejection_percent": "int32", "min_health_percent": "int32",
        "consecutive_errors": "int32",
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

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1),
               "uint64": (0, 2**64 - 1)}
_INT_WORDS = {"int32": "a 32-bit integer", "uint32": "a non-negative 32-bit integer",
              "int64": "an integer", "uint64": "a non-negative integer"}


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
_FIELDS: dict[str, dict[str, str]] = {}
_ALIASES: dict[str, dict[str, str]] = {}
for _msg, _table in MESSAGES.items():
    _FIELDS[_msg] = {json_name(k): t for k, t in _table.items()}
    _ALIASES[_msg] = {**{k: json_name(k) for k in _table}, **{json_name(k): json_name(k) for k in _table}}
_FIELDS["metadata"] = dict(METADATA_FIELDS)
_ALIASES["metadata"] = {k: k for k in METADATA_FIELDS}


# --- The normalized tree ---------------------------------------------------------------------------------


class Msg(dict[str, Any]):
    """A message's fields by camelCase name, with the YAML path of the message and of each field."""

    __slots__ = ("path", "type", "keys", "bad")

    def __init__(self, path: Path, type_name: str) -> None:
        super().__init__()
        self.path = path
        self.type = type_name
        self.keys: dict[str, Any] = {}  # camelCase name → the key as written
        self.bad: set[str] = set()  # fields that were present but had a type error

    def at(self, name: str, *rest: Any) -> Path:
        return (*self.path, self.keys.get(name, name), *rest)

    def has(self, name: str) -> bool:
        """Set in the YAML (even if its value was rejected), as opposed to absent or null."""
        return name in self or name in self.bad


class Report:
    """Collects the diagnostics of one object."""

    def __init__(self, obj: RawObject) -> None:
        self.obj = obj
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def error(self, path: Path, reason: str) -> None:
        self.errors.append(self.obj.at(path, reason))

    def warn(self, path: Path, reason: str) -> None:
        self.warnings.append(self.obj.at(path, reason, "warning"))

    def has_error_within(self, path: Path) -> bool:
        """An error was reported at `path` or inside it (so a warning there would only repeat it)."""
        where = render_path(path)
        return any(e.path == where or e.path.startswith((where + ".", where + "[")) for e in self.errors)


class _Bad:
    """Stands in for a list item whose type was wrong, so indexes stay aligned."""

    def __repr__(self) -> str:
        return "<invalid>"


BAD: Any = _Bad()


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value:g}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"a date ({value}); quote it"
    return type(value).__name__


def normalize(report: Report, value: Any, path: Path, type_spec: str) -> Any:
    """Type-check `value` against `type_spec`; report problems; return the typed value or BAD."""
    if type_spec.startswith("["):
        inner = type_spec[1:-1]
        if not isinstance(value, list):
            report.error(path, f"expected a list of {_what(inner)}, got {describe(value)}")
            return BAD
        items = []
        for i, item in enumerate(value):
            if item is None:
                report.error((*path, i), "list item may not be null")
                items.append(BAD)
            else:
                items.append(normalize(report, item, (*path, i), inner))
        return items
    if type_spec.startswith("{"):
        inner = type_spec[1:-1]
        if not isinstance(value, dict):
            report.error(path, f"expected a mapping of name to {_what(inner)}, got {describe(value)}")
            return BAD
        out: dict[str, Any] = {}
        for key, item in value.items():
            if item is None:
                report.error((*path, key), f"{str(key)!r} may not be null")
                continue
            typed = normalize(report, item, (*path, key), inner)
            if typed is not BAD:
                out[str(key)] = typed
        return out
    if type_spec in _FIELDS:
        return _message(report, value, path, type_spec)
    return _scalar(report, value, path, type_spec)


def _what(type_spec: str) -> str:
    if type_spec.startswith("enum:"):
        return f"{type_spec[5:]} names"
    if type_spec in ("string", "bool", "double", "duration", "bytes"):
        return {"string": "strings", "bool": "booleans", "double": "numbers", "duration": "durations",
                "bytes": "base64 strings"}[type_spec]
    if type_spec in _INT_WORDS:
        return "integers"
    return type_spec


def _message(report: Report, value: Any, path: Path, type_name: str) -> Any:
    if not isinstance(value, dict):
        report.error(path, f"expected a mapping ({type_name}), got {describe(value)}")
        return BAD
    msg = Msg(path, type_name)
    fields, aliases = _FIELDS[type_name], _ALIASES[type_name]
    for key, item in value.items():
        name = aliases.get(key) if isinstance(key, str) else None
        if name is None:
            report.error((*path, key), _unknown_field(key, type_name, list(fields)))
            continue
        if name in msg.keys:
            report.error((*path, key), f'field "{name}" is set twice (as "{msg.keys[name]}" and "{key}")')
            continue
        msg.keys[name] = key
        if item is None:
            continue  # explicit null: the field is unset, as in JSON
        typed = normalize(report, item, (*path, key), fields[name])
        if typed is BAD:
            msg.bad.add(name)
        else:
            msg[name] = typed
    for group in ONEOFS.get(type_name, ()):
        present = [f for f in group if msg.has(f)]
        if len(present) > 1:
            listed = ", ".join(group[:-1]) + " or " + group[-1]
            report.error(msg.at(present[1]), f"only one of {listed} may be set in a {type_name}")
    return msg


def _unknown_field(key: Any, type_name: str, known: list[str]) -> str:
    reason = f'unknown field "{key}" in {type_name}'
    close = difflib.get_close_matches(str(key), known, n=1)
    return f'{reason} (did you mean "{close[0]}"?)' if close else reason


def _scalar(report: Report, value: Any, path: Path, type_spec: str) -> Any:
    if type_spec == "opaque":
        if not isinstance(value, dict):
            report.error(path, f"expected a mapping, got {describe(value)}")
            return BAD
        return value
    if type_spec == "string":
        if not isinstance(value, str):
            hint = " (quote it)" if isinstance(value, (bool, int, float)) else ""
            report.error(path, f"expected a string, got {describe(value)}{hint}")
            return BAD
        return value
    if type_spec == "bool":
        if not isinstance(value, bool):
            report.error(path, f"expected true or false, got {describe(value)}")
            return BAD
        return value
    if type_spec in _INT_RANGES:
        low, high = _INT_RANGES[type_spec]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            report.error(path, f"expected {_INT_WORDS[type_spec]}, got {describe(value)}")
            return BAD
        return value
    if type_spec == "double":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            report.error(path, f"expected a number, got {describe(value)}")
            return BAD
        return float(value)
    if type_spec == "duration":
        if not isinstance(value, str):
            report.error(path, f'expected a duration string such as "10s" or "100ms", got {describe(value)}')
            return BAD
        try:
            return parse_duration_ns(value)
        except ValueError as exc:
            report.error(path, str(exc))
            return BAD
    if type_spec == "bytes":
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                pass
        report.error(path, f"expected base64-encoded bytes, got {describe(value)}")
        return BAD
    if type_spec == "timestamp":
        if not isinstance(value, (str, datetime.date)):
            report.error(path, f"expected a timestamp, got {describe(value)}")
            return BAD
        return value
    if type_spec.startswith("enum:"):
        return _enum(report, value, path, type_spec[5:])
    raise AssertionError(f"unknown type {type_spec!r}")  # a bug in the tables above


def _enum(report: Report, value: Any, path: Path, enum: str) -> Any:
    names = ENUMS[enum]
    if isinstance(value, str) and value in names:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    report.error(path, f"invalid {enum} {describe(value)}: expected one of {', '.join(names)}")
    return BAD


def canonical(value: Any, type_spec: str) -> Any:
    """`value` with every message field renamed to its camelCase JSON name; values are left as written.

    Lets later stages read `perTryTimeout` whether the YAML said `perTryTimeout` or `per_try_timeout`.
    Unknown fields and ill-typed values pass through unchanged (validation reports them).
    """
    if type_spec.startswith("["):
        return [canonical(v, type_spec[1:-1]) for v in value] if isinstance(value, list) else value
    if type_spec.startswith("{"):
        return {k: canonical(v, type_spec[1:-1]) for k, v in value.items()} if isinstance(value, dict) else value
    if type_spec not in _FIELDS or not isinstance(value, dict):
        return value
    fields, aliases = _FIELDS[type_spec], _ALIASES[type_spec]
    out: dict[Any, Any] = {}
    for key, item in value.items():
        name = aliases.get(key) if isinstance(key, str) else None
        if name is None:
            out[key] = item
        elif name not in out:  # the same field under both spellings is an error; keep the first
            out[name] = canonical(item, fields[name])
    return out
