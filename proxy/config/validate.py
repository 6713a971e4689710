"""Validate loaded Istio objects the way `istioctl validate` and the Istio webhook do, all at once.

`validate(objects)` returns every error and warning, each tied to file, line and YAML path, and never
raises. Two passes: per object, the schema walk (`schema.py`: unknown fields, types, enums, oneofs)
then Istio's semantic rules (`pkg/config/validation` in istio/istio, with its wording where it has
one); then across objects, the analyzer-style warnings Istio leaves to `istioctl analyze`: subsets no
DestinationRule defines, hosts no ServiceEntry defines, gateways that do not exist.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from proxy.config.diagnostics import Diagnostic, Path
from proxy.config.hosts import (
    check_fqdn,
    check_partial_wildcard,
    check_wildcard_domain,
    fqdn,
    host_matches,
    host_subset_of,
    is_dns1123_label,
    is_ip,
)
from proxy.config.load import RawObject
from proxy.config.schema import TOP_LEVEL_FIELDS, Msg, Report, canonical, normalize
from proxy.routing.regex import compile_regex

__all__ = ["validate", "canonical_spec"]

MS = 1_000_000  # nanoseconds
SECOND = 1_000_000_000
MESH = "mesh"
UNIX_PREFIX = "unix://"

# protocol.Parse in istio: case-insensitive names; anything else is "Unsupported"
_PROTOCOLS = {"TCP", "UDP", "GRPC", "GRPC-WEB", "HTTP", "HTTP_PROXY", "HTTP2", "HTTPS", "TLS", "MONGO", "REDIS",
              "MYSQL"}
_HTTP_PROTOCOLS = {"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB"}
_TLS_PROTOCOLS = {"HTTPS", "TLS"}
_RETRY_ON = {"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx",
             "refused-stream", "retriable-status-codes", "retriable-headers", "envoy-ratelimited",
             "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
             "unavailable"}
# Go's net/http StatusText table: bare status codes accepted in retryOn
_HTTP_STATUS = {100, 101, 102, 103, *range(200, 209), 226, *range(300, 306), 307, 308, *range(400, 419),
                *range(421, 427), 428, 429, 431, 451, *range(500, 509), 510, 511}
_GRPC_STATUS = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
                "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}
_CORS_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"}
_PSEUDO_HEADERS = {":method", ":scheme", ":authority", ":path", ":status"}
_JWT_CLAIM_PREFIX = "@request.auth.claims."
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~A-Za-z0-9]+\Z")  # RFC 7230 token
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_K8S_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")
_K8S_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z")
_DNS_LABEL = r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_TAG_KEY = re.compile(rf"((?:{_DNS_LABEL}(?:\.{_DNS_LABEL})*)/)?((?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])\Z")
_TAG_VALUE = re.compile(r"(?:(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
_TOPOLOGY_LABELS = {"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"}
_SUBSET_NC = "requests will get 503 NC"


def validate(objects: list[RawObject]) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """(errors, warnings) for the whole set of objects at once; never raises on bad input."""
    checked: list[_Checked] = []
    for obj in objects:
        report = Report(obj)
        spec: Msg | None = None
        try:
            spec = _check_object(obj, report)
        except Exception as exc:  # a bug in a rule must cost one object, never the whole reload
            report.error((), f"internal error while validating this {obj.kind}: {exc!r}")
        checked.append(_Checked(obj, spec, report))
    try:
        _CrossCheck(checked).run()
    except Exception as exc:
        first = checked[0].report if checked else None
        if first is not None:
            first.error((), f"internal error while cross-checking objects: {exc!r}")
    errors = [d for c in checked for d in sorted(c.report.errors, key=lambda d: d.line)]
    warnings = [d for c in checked for d in sorted(c.report.warnings, key=lambda d: d.line)]
    return errors, warnings


def canonical_spec(obj: RawObject) -> dict[str, Any]:
    """The object's spec with camelCase field names throughout (Istio also accepts the proto snake_case)."""
    return canonical(obj.spec, obj.kind)


class _Checked:
    __slots__ = ("obj", "spec", "report")

    def __init__(self, obj: RawObject, spec: Msg | None, report: Report) -> None:
        self.obj, self.spec, self.report = obj, spec, report


# --- Object level ------------------------------------------------------------------------------------------


def _check_object(obj: RawObject, r: Report) -> Msg | None:
    for key in obj.body:
        if key not in TOP_LEVEL_FIELDS:
            r.error((key,), f'unknown field "{key}" (a manifest has {", ".join(TOP_LEVEL_FIELDS)})')
    metadata = normalize(r, obj.body.get("metadata") or {}, ("metadata",), "metadata")
    if isinstance(metadata, Msg):
        _check_metadata(r, obj, metadata)
    raw_spec = obj.body.get("spec")
    spec = normalize(r, {} if raw_spec is None else raw_spec, ("spec",), obj.kind)
    if not isinstance(spec, Msg):
        return None
    _KIND_RULES[obj.kind](r, spec, obj)
    return spec


def _check_metadata(r: Report, obj: RawObject, meta: Msg) -> None:
    name = meta.get("name")
    if isinstance(name, str):
        if obj.kind == "Gateway":
            if not is_dns1123_label(name):  # Istio: a Gateway name is a DNS label (no dots)
                r.error(meta.at("name"), f"invalid gateway name: {name!r}")
        elif len(name) > 253 or not _K8S_NAME.match(name):
            r.error(meta.at("name"), f"invalid name {name!r}: must be a lowercase RFC 1123 subdomain "
                                     "(letters, digits, '-' and '.')")
    namespace = meta.get("namespace")
    if isinstance(namespace, str) and namespace and (len(namespace) > 63 or not _K8S_LABEL.match(namespace)):
        r.error(meta.at("namespace"), f"invalid namespace {namespace!r}: must be a lowercase RFC 1123 label")
    _labels(r, meta, "labels")


# --- Shared value checks -----------------------------------------------------------------------------------


def _port_problem(number: int) -> str | None:
    return None if 1 <= number <= 65535 else f"port number {number} must be in the range 1..65535"


def _port(r: Report, path: Path, number: Any) -> None:
    if isinstance(number, int) and (problem := _port_problem(number)):
        r.error(path, problem)


def _duration(r: Report, m: Msg, name: str, zero_disables: bool = False) -> None:
    """Istio's ValidateDuration: at least 1ms and a whole number of milliseconds."""
    ns = m.get(name)
    if not isinstance(ns, int):
        return
    if zero_disables and abs(ns) < MS:  # `0s` turns the timeout off (checked as Go's Milliseconds() != 0)
        return
    if ns < MS:
        r.error(m.at(name), "duration must be at least 1ms")
    elif ns % MS:
        r.error(m.at(name), "only durations to ms precision are supported")


def _percent_0_100(r: Report, m: Msg, name: str) -> None:
    value = m.get(name)
    if isinstance(value, int) and not 0 <= value <= 100:
        r.error(m.at(name), f"percentage {value} is not in range 0..100")


def _percentage(r: Report, m: Msg, name: str) -> None:
    """A `Percent {value}`: 0, or in [0.0001, 100]."""
    pct = m.get(name)
    if isinstance(pct, Msg) and isinstance(value := pct.get("value"), float):
        if value < 0 or value > 100 or 0 < value < 0.0001:
            r.error(pct.at("value"), f"percentage {value:g} is neither 0.0, nor in range [0.0001, 100.0]")


def _labels(r: Report, m: Msg, name: str) -> None:
    """labels.Instance.Validate: Kubernetes label keys and values."""
    for key, value in (m.get(name) or {}).items():
        match = _TAG_KEY.match(key)
        if match is None:
            r.error(m.at(name, key), f"invalid tag key: {key!r}")
        elif match.group(1) and len(match.group(1)) - 1 > 253:
            r.error(m.at(name, key), f"invalid tag key: {key!r} (DNS prefix is too long)")
        elif len(match.group(2)) > 63:
            r.error(m.at(name, key), f"invalid tag key: {key!r} (name is too long)")
        if not _TAG_VALUE.match(value):
            r.error(m.at(name, key), f"invalid tag value: {value!r}")


def _selector_labels(r: Report, m: Msg, name: str, warning: str) -> None:
    """A workload selector: no empty keys, no wildcards; an empty one is suspicious."""
    labels = m.get(name)
    if labels is None:
        return
    for key, value in labels.items():
        if key == "":
            r.error(m.at(name, key), f"empty key is not supported in selector: {key + '=' + value!r}")
        if "*" in key or "*" in value:
            r.error(m.at(name, key), f"wildcard is not supported in selector: {key + '=' + value!r}")
    if not labels:
        r.warn(m.at(name), warning)


def _ip_subnet_problem(text: str) -> str | None:
    if text.count("/") == 1:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            return f"{text} is not a valid CIDR block"
        return None
    return None if is_ip(text) else f"{text} is not a valid IP"


def _unix_address_problem(address: str) -> str | None:
    if not address:
        return "unix address must not be empty"
    if address.startswith("@"):  # abstract socket
        return None
    if not address.startswith("/") or address.endswith("/"):
        return f"{address} is not an absolute path to a file"
    return None


def _protocol(text: str) -> str | None:
    upper = text.upper()
    return upper if upper in _PROTOCOLS else None


def _export_to(r: Report, m: Msg, namespace: str, service_entry: bool = False,
               with_selector: bool = False) -> None:
    entries = [(k, e) for k, e in enumerate(m.get("exportTo") or []) if isinstance(e, str)]
    seen: set[str] = set()
    for k, entry in entries:
        key = namespace if entry == "." else entry
        if key in seen:
            reason = (f"duplicate entries in exportTo: . and current namespace {namespace}" if key != entry
                      else f"duplicate entries in exportTo for entry {entry}")
            r.error(m.at("exportTo", k), reason)
        elif (service_entry and entry == "~") or entry == "*" or is_dns1123_label(key):
            seen.add(key)
        else:
            allowed = '".", "*", "~"' if service_entry else '".", "*"'
            r.error(m.at("exportTo", k), f"invalid exportTo value {entry!r}: must be {allowed} or a namespace name")
    if with_selector and seen and (namespace not in seen or len(seen) > 1):
        r.error(m.at("exportTo"), "destination rule with workload selector cannot have exportTo beyond "
                                  "current namespace")
    if "*" in seen and len(entries) > 1:
        r.error(m.at("exportTo"), "cannot have both public (*) and non-public exportTo values for a resource")
    if "~" in seen and len(entries) > 1:
        r.error(m.at("exportTo"), "cannot export service entry to no one (~) and someone")


def _regex(r: Report, path: Path, pattern: str, where: str) -> None:
    if pattern == "":
        r.error(path, f'"{where}": regex string match should not be empty')
        return
    try:
        compile_regex(pattern)
    except ValueError as exc:
        r.error(path, f"invalid regex {pattern!r}: {exc}; Istio uses RE2 syntax "
                      "(https://github.com/google/re2/wiki/Syntax)")


def _string_match(r: Report, sm: Any, where: str, empty_prefix_ok: bool = False) -> None:
    """exact | prefix | regex (the schema walk already enforced one-of); `{}` means "present"."""
    if not isinstance(sm, Msg):
        return
    if sm.get("prefix") == "" and "prefix" in sm and not empty_prefix_ok:
        r.error(sm.at("prefix"), f'"{where}": prefix string match should not be empty')
    if isinstance(sm.get("regex"), str):
        if sm["regex"] == "*" and where == "headers":
            r.error(sm.at("regex"), 'regex "*" is not a valid RE2 regex; it means "present" only in '
                                    "withoutHeaders (use {} to match any value)")
        else:
            _regex(r, sm.at("regex"), sm["regex"], where)


def _header_name_problem(name: str) -> str | None:
    if name == "":
        return "header name cannot be empty"
    if name.startswith(_JWT_CLAIM_PREFIX) or name in _PSEUDO_HEADERS:
        return None
    if not _HEADER_NAME.match(name):
        return f"header name {name} is not a valid header name"
    if name != name.lower():  # the API requires lower-case keys with hyphens, e.g. end-user
        return f"header name {name!r} must be lowercase"
    return None


def _header_value_problem(value: str) -> str | None:
    """Envoy header values: no control characters; `%` starts a `%COMMAND%` or is escaped as `%%`."""
    if _HEADER_VALUE_BAD.search(value):
        return f"header value configuration {value!r} is invalid"
    i = 0
    while (start := value.find("%", i)) >= 0:
        if value.startswith("%%", start):
            i = start + 2
            continue
        end = value.find("%", start + 1)
        command = value[start + 1:end] if end > 0 else ""
        if end < 0 or not re.match(r"[A-Z_][A-Z0-9_]*(\(.*\))?(:\d+)?\Z", command):
            return (f"header value configuration {value!r} is invalid: a '%' must start a %COMMAND% "
                    "or be written '%%'")
        i = end + 1
    return None


def _is_authority_header(name: str) -> bool:
    return name.lower() in (":authority", "host")


def _header_ops(r: Report, owner: Msg, rewrite_authority: str = "") -> None:
    """Request/response header manipulation (route level or per destination)."""
    headers = owner.get("headers")
    if not isinstance(headers, Msg):
        return
    authority = rewrite_authority
    for side in ("request", "response"):
        ops = headers.get(side)
        if not isinstance(ops, Msg):
            continue
        for op in ("set", "add"):
            for name, value in (ops.get(op) or {}).items():
                path = ops.at(op, name)
                if name == "":
                    r.error(path, "header name cannot be empty")
                elif side == "request" and _is_authority_header(name):
                    if authority:
                        r.error(path, f"authority header cannot be set multiple times: have {authority!r}, "
                                      f"attempting to set {value!r}")
                    authority = authority or value
                elif side == "response" and name.lower() == "host":
                    r.error(path, f'invalid header "{name}": cannot set Host header')
                elif name.startswith(":"):
                    r.error(path, f'invalid header "{name}": header cannot have ":" prefix')
                if problem := _header_value_problem(value):
                    r.error(path, problem)
        for k, name in enumerate(ops.get("remove") or []):
            if not isinstance(name, str):
                continue
            if name == "":
                r.error(ops.at("remove", k), "header name cannot be empty")
            elif name.lower() == "host":
                r.error(ops.at("remove", k), f'invalid header "{name}": cannot set Host header')
            elif name.startswith(":"):
                r.error(ops.at("remove", k), f'invalid header "{name}": header cannot have ":" prefix')


def _gateway_names(r: Report, owner: Msg, name: str = "gateways") -> None:
    for k, gateway in enumerate(owner.get(name) or []):
        if not isinstance(gateway, str):
            continue
        path = owner.at(name, k)
        if "/" not in gateway:
            if "." in gateway:
                parts = gateway.split(".")
                r.warn(path, f"using legacy gatewayName format {gateway!r}; prefer the <namespace>/<name> "
                             f"format: {parts[1] + '/' + parts[0]!r}")
            if problem := check_fqdn(gateway):
                r.error(path, problem)
            continue
        namespace, gw_name = gateway.split("/", 1)
        if not namespace or not gw_name:
            r.error(path, "config namespace and gateway name cannot be empty")
            continue
        if not is_dns1123_label(namespace):
            r.error(path, f"invalid value for namespace: {namespace!r}")
        if not is_dns1123_label(gw_name):
            r.error(path, f"invalid value for gateway name: {gw_name!r}")


def _destination(r: Report, dest: Any) -> None:
    if not isinstance(dest, Msg):
        return
    host = dest.get("host")
    if not dest.has("host") or host == "":
        r.error(dest.at("host"), "destination host is required")
    elif host == "*":
        r.error(dest.at("host"), "invalid destination host *")
    elif isinstance(host, str) and (problem := check_wildcard_domain(host)):
        r.error(dest.at("host"), problem)
    subset = dest.get("subset")
    if isinstance(subset, str) and (problem := _subset_name_problem(subset)):
        r.error(dest.at("subset"), problem)
    port = dest.get("port")
    if isinstance(port, Msg):
        _port(r, port.at("number"), port.get("number", 0))


def _subset_name_problem(name: str) -> str | None:
    if name == "":
        return "subset name cannot be empty"
    if not is_dns1123_label(name):
        return f"subset name is invalid: {name}"
    return None


def _route_destinations(r: Report, rule: Msg, http: bool) -> None:
    """Weights are relative; negative is invalid; several destinations summing to 0 is invalid."""
    dests = rule.get("route") or []
    total = 0
    for d in dests:
        if not isinstance(d, Msg):
            continue
        if not d.has("destination"):
            r.error(d.at("destination"), "destination is required")
        if http:
            _header_ops(r, d)
        _destination(r, d.get("destination"))
        weight = d.get("weight", 0)
        if weight < 0:
            r.error(d.at("weight"), f"weight {weight} < 0")
        total += weight
    typed = [d for d in dests if isinstance(d, Msg)]
    if len(dests) > 1 and total == 0 and all("weight" not in d.bad for d in typed):
        r.error(rule.at("route"), "total destination weight = 0")
    elif len(dests) > 1 and total > 0:
        for d in typed:
            if d.get("weight", 0) == 0 and "weight" not in d.bad:
                r.warn(d.at("weight") if d.has("weight") else d.path,
                       "weight 0: this destination gets no traffic (with several destinations a missing "
                       "weight counts as 0)")


# --- VirtualService ----------------------------------------------------------------------------------------


def _virtual_service(r: Report, vs: Msg, obj: RawObject) -> None:
    hosts = vs.get("hosts") or []
    gateways = [g for g in vs.get("gateways") or [] if isinstance(g, str)]
    is_delegate = not hosts and "hosts" not in vs.bad
    if is_delegate:
        for name in ("gateways", "tls", "tcp"):
            if vs.get(name):
                what = "gateways specified" if name == "gateways" else f"{name} route specified"
                r.error(vs.at(name), f"delegate virtual service must have no {what}")
    applies_to_gateway = bool(gateways) and MESH not in gateways
    applies_to_mesh = not applies_to_gateway
    _gateway_names(r, vs)
    if applies_to_mesh:
        for rule in _msgs(vs.get("http")):
            for match in _msgs(rule.get("match")):
                for name in ("headers", "withoutHeaders"):
                    for key in match.get(name) or {}:
                        if key.startswith(_JWT_CLAIM_PREFIX):
                            r.error(match.at(name, key), f"JWT claim based routing (key: {key}) is only "
                                                         f"supported for gateway, found no gateways: {gateways}")
    all_valid = True
    for k, host in enumerate(hosts):
        if not isinstance(host, str):
            all_valid = False
            continue
        problem = check_wildcard_domain(host)
        if problem and not is_ip(host):
            r.error(vs.at("hosts", k), problem)
            all_valid = False
        elif applies_to_mesh and host == "*":
            r.error(vs.at("hosts", k), "wildcard host * is not allowed for virtual services bound to the mesh "
                                       "gateway")
            all_valid = False
    if all_valid:
        for i in range(len(hosts)):
            for j in range(i + 1, len(hosts)):
                if host_matches(hosts[i], hosts[j]):
                    r.error(vs.at("hosts", j), f"duplicate hosts in virtual service: {hosts[i]} & {hosts[j]}")
    if not any(vs.get(name) or name in vs.bad for name in ("http", "tcp", "tls")):
        r.error(vs.path, "http, tcp or tls must be provided in virtual service")
    for rule in _msgs(vs.get("http")):
        _http_route(r, rule, is_delegate)
    for route in _msgs(vs.get("tls")):
        _tls_route(r, route, [h for h in hosts if isinstance(h, str)])
    for route in _msgs(vs.get("tcp")):
        _tcp_route(r, route)
    _export_to(r, vs, obj.namespace)
    _analyze_unreachable(r, vs, "http")
    _analyze_unreachable(r, vs, "tcp")
    _analyze_unreachable(r, vs, "tls")


def _msgs(items: Any) -> Iterable[Msg]:
    return [item for item in items or [] if isinstance(item, Msg)]


def _http_route(r: Report, rule: Msg, in_delegate_vs: bool) -> None:
    name = rule.get("name", "")
    if rule.has("delegate") and not in_delegate_vs:
        for field, what in (("redirect", "redirect"), ("route", "route"), ("directResponse", "direct_response")):
            if rule.has(field):
                r.error(rule.at(field), f"root HTTP route {name} must not specify {what}")
    else:
        if in_delegate_vs and rule.has("delegate"):
            r.error(rule.at("delegate"), "delegate HTTP route cannot contain delegate")
        _http_route_actions(r, rule)
    _http_matches(r, rule)
    rewrite = rule.get("rewrite")
    _header_ops(r, rule, rewrite.get("authority", "") if isinstance(rewrite, Msg) else "")
    _cors(r, rule.get("corsPolicy"))
    _fault(r, rule.get("fault"))
    mirror_percent = rule.get("mirrorPercent")
    if isinstance(mirror_percent, int):
        if mirror_percent > 100:
            r.error(rule.at("mirrorPercent"), f"mirror_percent must have a max value of 100 (it has {mirror_percent})")
        r.warn(rule.at("mirrorPercent"), 'using deprecated setting "mirrorPercent", use "mirrorPercentage" instead')
    pct = rule.get("mirrorPercentage")
    if isinstance(pct, Msg) and isinstance(value := pct.get("value"), float):
        if value > 100:
            r.error(pct.at("value"), f"mirror_percentage must have a max value of 100 (it has {value:g})")
        if value < 0:
            r.error(pct.at("value"), f"mirror_percentage must have a min value of 0 (it has {value:g})")
    _destination(r, rule.get("mirror"))
    for mirror in _msgs(rule.get("mirrors")):
        if not mirror.has("destination"):
            r.error(mirror.at("destination"), "destination is required for mirrors")
            continue
        _destination(r, mirror.get("destination"))
        mpct = mirror.get("percentage")
        if isinstance(mpct, Msg) and isinstance(value := mpct.get("value"), float) and not 0 <= value <= 100:
            r.error(mpct.at("value"), f"mirror percentage must be in range 0..100 (it has {value:g})")
    _redirect(r, rule)
    _direct_response(r, rule.get("directResponse"))
    _retries(r, rule.get("retries"))
    _rewrite(r, rewrite)
    _route_destinations(r, rule, http=True)
    _duration(r, rule, "timeout")


def _http_route_actions(r: Report, rule: Msg) -> None:
    """Exactly one action: route, redirect or directResponse (delegate is checked by the caller)."""
    has_route = bool(rule.get("route")) or "route" in rule.bad
    if rule.has("redirect"):
        for field, reason in (("route", "HTTP route cannot contain both route and redirect"),
                              ("fault", "HTTP route cannot contain both fault and redirect"),
                              ("rewrite", "HTTP route rule cannot contain both rewrite and redirect"),
                              ("directResponse", "HTTP route rule cannot contain both direct_response and redirect")):
            if (has_route if field == "route" else rule.has(field)):
                r.error(rule.at(field), reason)
    elif rule.has("directResponse"):
        for field, reason in (("route", "HTTP route cannot contain both route and direct_response"),
                              ("fault", "HTTP route cannot contain both fault and direct_response"),
                              ("rewrite", "HTTP route rule cannot contain both rewrite and direct_response")):
            if (has_route if field == "route" else rule.has(field)):
                r.error(rule.at(field), reason)
    elif not has_route:
        r.error(rule.path, "HTTP route, redirect or direct_response is required")
    if rule.has("mirror") and rule.get("mirrors"):
        r.error(rule.at("mirrors"), "HTTP route cannot contain both mirror and mirrors")


def _http_matches(r: Report, rule: Msg) -> None:
    for match in _msgs(rule.get("match")):
        for field in ("headers", "withoutHeaders"):
            for key, sm in (match.get(field) or {}).items():
                if problem := _header_name_problem(key):
                    r.error(match.at(field, key), problem)
                if field == "withoutHeaders" and isinstance(sm, Msg) and sm.get("regex") == "*":
                    continue  # `*` is not RE2 here: Istio turns it into a presence match
                _string_match(r, sm, field)
        _string_match(r, match.get("uri"), "uri", empty_prefix_ok=True)
        for field in ("scheme", "method", "authority"):
            _string_match(r, match.get(field), field)
        for sm in (match.get("queryParams") or {}).values():
            _string_match(r, sm, "queryParams")
        if match.get("port"):
            _port(r, match.at("port"), match["port"])
        _labels(r, match, "sourceLabels")
        _gateway_names(r, match)
        source_ns = match.get("sourceNamespace")
        if source_ns and not is_dns1123_label(source_ns):
            r.error(match.at("sourceNamespace"), f"sourceNamespace match {source_ns} is invalid")


def _cors(r: Report, cors: Any) -> None:
    if not isinstance(cors, Msg):
        return
    for k, origin in enumerate(cors.get("allowOrigins") or []):
        if not isinstance(origin, Msg):
            continue
        value = next((origin[f] for f in ("exact", "prefix", "regex") if f in origin), "")
        if value == "":
            r.error(cors.at("allowOrigins", k), f"{value!r} is not a valid match type for CORS allow origins")
        elif "regex" in origin:
            _regex(r, origin.at("regex"), value, "corsPolicy.allowOrigins")
    if cors.get("allowOrigin"):
        r.warn(cors.at("allowOrigin"), 'using deprecated setting "allowOrigin", use "allowOrigins" instead')
    for k, method in enumerate(cors.get("allowMethods") or []):
        if isinstance(method, str) and method not in _CORS_METHODS:
            r.error(cors.at("allowMethods", k), f'"{method}" is not a supported HTTP method')
    for field in ("allowHeaders", "exposeHeaders"):
        for k, name in enumerate(cors.get(field) or []):
            if not isinstance(name, str):
                continue
            if name == "":
                r.error(cors.at(field, k), "header name cannot be empty")
            elif name != "*" and not _HEADER_NAME.match(name):
                r.error(cors.at(field, k), f"header name {name} is not a valid header name")
    _duration(r, cors, "maxAge")
    max_age = cors.get("maxAge")
    if isinstance(max_age, int) and max_age >= MS and max_age % SECOND:
        r.error(cors.at("maxAge"), "max_age duration is accurate only to seconds precision")


def _fault(r: Report, fault: Any) -> None:
    if not isinstance(fault, Msg):
        return
    if not fault.has("abort") and not fault.has("delay"):
        r.error(fault.path, "HTTP fault injection must have an abort and/or a delay")
    abort = fault.get("abort")
    if isinstance(abort, Msg):
        _percentage(r, abort, "percentage")
        if "grpcStatus" in abort and abort["grpcStatus"] not in _GRPC_STATUS:
            r.error(abort.at("grpcStatus"), f"gRPC status {abort['grpcStatus']!r} is not supported. See "
                                            "https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a "
                                            "list of supported codes, for example 'NOT_FOUND'")
        elif abort.has("http2Error"):
            r.error(abort.at("http2Error"), "HTTP/2 abort fault injection not supported yet")
        elif "httpStatus" in abort and not 200 <= abort["httpStatus"] <= 600:
            r.error(abort.at("httpStatus"), f"HTTP status {abort['httpStatus']} is not in range 200-599")
        elif not any(abort.has(f) for f in ("grpcStatus", "http2Error", "httpStatus")):
            r.warn(abort.path, "abort configured, but error type not set")
        if not abort.has("percentage"):
            r.warn(abort.path, "abort has no percentage: no request will be aborted")
    delay = fault.get("delay")
    if isinstance(delay, Msg):
        _percentage(r, delay, "percentage")
        _percent_0_100(r, delay, "percent")
        _duration(r, delay, "fixedDelay")
        if delay.has("exponentialDelay"):
            _duration(r, delay, "exponentialDelay")
            r.error(delay.at("exponentialDelay"), "exponentialDelay not supported yet")
        elif not delay.has("fixedDelay"):
            r.warn(delay.path, "delay configured, but fixedDelay not set")
        if not delay.has("percentage") and not delay.get("percent"):
            r.warn(delay.path, "delay has no percentage: no request will be delayed")


def _redirect(r: Report, rule: Msg) -> None:
    redirect = rule.get("redirect")
    if not isinstance(redirect, Msg):
        return
    if not any(redirect.get(f) for f in ("uri", "authority", "scheme", "prefixRewrite")) and not (
            redirect.has("port") or redirect.has("derivePort")):
        r.error(redirect.path, "redirect must specify URI, prefixRewrite, authority, scheme, or port")
    code = redirect.get("redirectCode", 0)
    if code and not 300 <= code <= 399:
        r.error(redirect.at("redirectCode"), f"{code} is not a valid redirect code, must be 3xx")
    if redirect.get("scheme") not in (None, "", "http", "https"):
        r.error(redirect.at("scheme"), 'invalid redirect scheme, must be "http" or "https"')
    if redirect.get("port"):
        _port(r, redirect.at("port"), redirect["port"])
    if redirect.get("prefixRewrite") is not None:
        if redirect.get("uri"):
            r.error(redirect.at("prefixRewrite"), "redirect may only contain one of uri or prefixRewrite")
        for match in _msgs(rule.get("match")):
            uri = match.get("uri")
            if isinstance(uri, Msg) and "prefix" not in uri:
                r.error(redirect.at("prefixRewrite"), "prefixRewrite requires every uri match of the rule to be "
                                                      "a prefix match")
                break


def _direct_response(r: Report, response: Any) -> None:
    if not isinstance(response, Msg):
        return
    status = response.get("status", 0)
    if not 200 <= status <= 600:
        r.error(response.at("status"), f"HTTP status {status} is not in range 200-599")
    body = response.get("body")
    if isinstance(body, Msg):
        content = body.get("string") if "string" in body else body.get("bytes", b"")
        size = len(content.encode() if isinstance(content, str) else content)
        if size > 1024 * 1024:
            r.error(response.at("body"), "large direct_responses may impact control plane performance, must be "
                                         "less than 1MB")
        elif size > 100 * 1024:
            r.warn(response.at("body"), "large direct_responses may impact control plane performance")


def _retries(r: Report, retries: Any) -> None:
    if not isinstance(retries, Msg):
        return
    attempts = retries.get("attempts", 0)
    if attempts < 0:
        r.error(retries.at("attempts"), "attempts cannot be negative")
    if attempts == 0 and "attempts" not in retries.bad and (
            retries.has("perTryTimeout") or retries.get("retryOn") or retries.has("retryRemoteLocalities")):
        r.error(retries.at("attempts") if retries.has("attempts") else retries.path,
                "http retry policy configured when attempts are set to 0 (disabled)")
    _duration(r, retries, "perTryTimeout")
    _duration(r, retries, "backoff")
    retry_on = retries.get("retryOn")
    if retry_on:
        for policy in retry_on.split(","):
            status = int(policy) if policy.isdigit() else 0
            if status not in _HTTP_STATUS and policy not in _RETRY_ON:
                r.error(retries.at("retryOn"), f"{policy!r} is not a valid retryOn policy")


def _rewrite(r: Report, rewrite: Any) -> None:
    if not isinstance(rewrite, Msg):
        return
    regex_rewrite = rewrite.get("uriRegexRewrite")
    if rewrite.get("uri") and rewrite.has("uriRegexRewrite"):
        r.error(rewrite.at("uriRegexRewrite"), "rewrite may only contain one of URI or UriRegexRewrite")
    elif not rewrite.get("uri") and not rewrite.has("uriRegexRewrite") and not rewrite.get("authority"):
        r.error(rewrite.path, "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one "
                              "of URI or UriRegexRewrite may be specified")
    if isinstance(regex_rewrite, Msg):
        if not regex_rewrite.get("match") or not regex_rewrite.get("rewrite"):
            r.error(regex_rewrite.path, "UriRegexRewrite requires both Rewrite and Match fields to be specified")
        elif isinstance(regex_rewrite.get("match"), str):
            _regex(r, regex_rewrite.at("match"), regex_rewrite["match"], "HTTPRewrite.UriRegexRewrite.Match")


def _l4_match(r: Report, match: Msg) -> None:
    for k, subnet in enumerate(match.get("destinationSubnets") or []):
        if isinstance(subnet, str) and (problem := _ip_subnet_problem(subnet)):
            r.error(match.at("destinationSubnets", k), problem)
    if match.get("port"):
        _port(r, match.at("port"), match["port"])
    _labels(r, match, "sourceLabels")
    _gateway_names(r, match)


def _tcp_route(r: Report, route: Msg) -> None:
    for match in _msgs(route.get("match")):
        _l4_match(r, match)
    if not route.get("route") and "route" not in route.bad:
        r.error(route.at("route"), "TCP route is required")
    _route_destinations(r, route, http=False)


def _tls_route(r: Report, route: Msg, vs_hosts: list[str]) -> None:
    if not route.get("match") and "match" not in route.bad:
        r.error(route.at("match"), "TLS route must have at least one match condition")
    for match in _msgs(route.get("match")):
        sni_hosts = match.get("sniHosts") or []
        if not sni_hosts and "sniHosts" not in match.bad:
            r.error(match.at("sniHosts"), "TLS match must have at least one SNI host")
        for k, sni in enumerate(sni_hosts):
            if not isinstance(sni, str):
                continue
            if problem := check_wildcard_domain(sni):
                if is_ip(sni):
                    r.warn(match.at("sniHosts", k), f"using an IP address ({sni!r}) goes against SNI spec and "
                                                    "most clients do not support this")
                else:
                    r.error(match.at("sniHosts", k), problem)
            elif not any(host_subset_of(sni, h) for h in vs_hosts):
                r.error(match.at("sniHosts", k), f"SNI host {sni!r} is not a compatible subset of any of the "
                                                 f"virtual service hosts: [{', '.join(vs_hosts)}]")
        _l4_match(r, match)
    if not route.get("route") and "route" not in route.bad:
        r.error(route.at("route"), "TLS route is required")
    _route_destinations(r, route, http=False)


# Rules that can never match (Istio's analyzeUnreachable*Rules, warnings only) ------------------------------


def _label(rule: Msg, n: int, kind: str) -> str:
    name = rule.get("name") if kind == "http" else None
    return json.dumps(name) if name else f"#{n}"


def _is_catch_all(match: Msg) -> bool:
    """A match block that every request satisfies: empty, or only `uri: {prefix: "/"}`."""
    conditions = {k: v for k, v in match.items() if k not in ("name", "statPrefix", "ignoreUriCase")}
    uri = conditions.pop("uri", None)
    if conditions or match.bad:
        return False
    return uri is None or (isinstance(uri, Msg) and set(uri) == {"prefix"} and uri["prefix"] in ("", "/"))


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items() if k != "name"}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _analyze_unreachable(r: Report, vs: Msg, kind: str) -> None:
    rules = vs.get(kind) or []
    seen: dict[str, int] = {}
    catch_all: tuple[int, str] | None = None  # (index, label) of the first rule matching everything
    prefix_matches: list[dict[str, Any]] = []
    for n, rule in enumerate(rules):
        if not isinstance(rule, Msg):
            continue
        label = _label(rule, n, kind)
        matches = [m for m in rule.get("match") or [] if isinstance(m, Msg)]
        if catch_all is not None:
            reason = ("only the last rule can have no matches" if not matches
                      else f"route without matches defined before: rule {catch_all[1]} matches every request")
            r.warn(rule.path, f"virtualService rule {label} not used ({reason})")
            continue
        if not matches:
            if "match" not in rule.bad:
                catch_all = (n, label)
            continue
        duplicates = 0
        for k, match in enumerate(matches):
            key = json.dumps(_canonical(match), sort_keys=True, default=str)
            if key in seen:
                duplicates += 1
                dup = seen[key]
                r.warn(rule.at("match", k), f"virtualService rule {label} match {_match_label(match, k)} is not used "
                                            f"(duplicate/overlapping match in rule {_label(rules[dup], dup, kind)})")
                continue
            seen[key] = n
            if kind == "http" and (entry := _prefix_entry(match, label, _match_label(match, k))):
                entry["path"] = rule.at("match", k)
                prefix_matches.append(entry)
        if duplicates == len(matches):
            r.warn(rule.path, f"virtualService rule {label} not used (all matches used by prior rules)")
        elif any(_is_catch_all(m) for m in matches):
            catch_all = (n, label)
    for i, a in enumerate(prefix_matches):
        for b in prefix_matches[i + 1:]:
            if b["prefix"] != a["prefix"] and _covered(a, b):
                r.warn(b["path"], f"virtualService rule {b['rule']} match {b['match']} of prefix {b['prefix']} is not "
                                  f"used (duplicate/overlapping match in rule {a['match']} of prefix {a['prefix']} "
                                  f"on {a['rule']})")


def _match_label(match: Msg, k: int) -> str:
    return json.dumps(match["name"]) if match.get("name") else f"#{k}"


def _exact_or_prefix(sm: Any) -> str:
    if isinstance(sm, Msg):
        if sm.get("exact"):
            return "exact:" + sm["exact"]
        if sm.get("prefix"):
            return "prefix:" + sm["prefix"]
    return ""


def _prefix_entry(match: Msg, rule_label: str, match_label: str) -> dict[str, Any] | None:
    """What Istio compares to find a prefix match hidden by an earlier, shorter prefix."""
    uri = match.get("uri")
    prefix = uri.get("prefix", "") if isinstance(uri, Msg) else ""
    if not prefix:
        return None

    def table(name: str) -> dict[str, str]:
        return {k: _exact_or_prefix(v) for k, v in (match.get(name) or {}).items()}

    return {"rule": rule_label, "match": match_label, "prefix": prefix, "port": match.get("port", 0),
            "method": _exact_or_prefix(match.get("method")) or "exact:GET",
            "authority": _exact_or_prefix(match.get("authority")), "headers": table("headers"),
            "query": table("queryParams"), "without": table("withoutHeaders")}


def _covered(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Istio's coveredValidation: does earlier match `a` take every request later match `b` would?"""
    if not b["prefix"].startswith(a["prefix"]) or a["port"] != b["port"]:
        return False
    for field in ("method", "authority"):
        if a[field] != b[field] and not a[field].startswith(b[field]):
            return False
    for field in ("headers", "query", "without"):
        if len(a[field]) != len(b[field]):
            return False
        for key, value in a[field].items():
            if key not in b[field] or (value != b[field][key] and not value.startswith(b[field][key])):
                return False
    return True


# --- DestinationRule ---------------------------------------------------------------------------------------


def _destination_rule(r: Report, dr: Msg, obj: RawObject) -> None:
    host = dr.get("host")
    if not dr.has("host") or host == "":
        r.error(dr.at("host"), "host is required")
    elif isinstance(host, str) and (problem := check_wildcard_domain(host)):
        r.error(dr.at("host"), problem)
    _traffic_policy(r, dr.get("trafficPolicy"))
    names: set[str] = set()
    for subset in _msgs(dr.get("subsets")):
        name = subset.get("name", "")
        if "name" in subset.bad:
            continue
        if name in names:
            r.error(subset.at("name"), f"duplicate subset names: {name}")
        names.add(name)
        if problem := _subset_name_problem(name):
            r.error(subset.at("name"), problem)
        _labels(r, subset, "labels")
        _traffic_policy(r, subset.get("trafficPolicy"))
    selector = dr.get("workloadSelector")
    _export_to(r, dr, obj.namespace, with_selector=isinstance(selector, Msg))
    if isinstance(selector, Msg):
        _selector_labels(r, selector, "matchLabels", "workload selector specified without labels")
        if "matchLabels" not in selector:
            r.warn(selector.path, "workload selector specified without labels")


_POLICY_FIELDS = ("loadBalancer", "connectionPool", "outlierDetection", "tls", "portLevelSettings", "tunnel",
                  "proxyProtocol", "retryBudget")


def _set(m: Msg, name: str) -> bool:
    """Set as proto sees it: an empty list is the same as no list."""
    return name in m.bad or (name in m and m[name] != [])


def _traffic_policy(r: Report, policy: Any) -> None:
    if not isinstance(policy, Msg):
        return
    if not any(_set(policy, f) for f in _POLICY_FIELDS):
        r.error(policy.path, "traffic policy must have at least one field")
        return
    if policy.has("tunnel") and policy.has("proxyProtocol"):
        r.error(policy.at("proxyProtocol"), "tunnel and proxyProtocol must not be set together")
        return
    _port_policy(r, policy)
    for k, port_policy in enumerate(policy.get("portLevelSettings") or []):
        if not isinstance(port_policy, Msg):
            continue
        if not port_policy.has("port"):
            r.error(port_policy.at("port"), "portTrafficPolicy must have valid port")
        elif isinstance(port := port_policy.get("port"), Msg):
            _port(r, port.at("number"), port.get("number", 0))
        if not any(port_policy.has(f) for f in ("loadBalancer", "connectionPool", "outlierDetection", "tls")):
            r.error(policy.at("portLevelSettings", k), "port traffic policy must have at least one field")
        else:
            _port_policy(r, port_policy)
    _tunnel(r, policy.get("tunnel"))
    budget = policy.get("retryBudget")
    if isinstance(budget, Msg):
        _percentage(r, budget, "percent")


def _port_policy(r: Report, policy: Msg) -> None:
    """The four fields a TrafficPolicy shares with its per-port settings."""
    outlier = policy.get("outlierDetection")
    _outlier_detection(r, outlier)
    _connection_pool(r, policy.get("connectionPool"))
    _load_balancer(r, policy.get("loadBalancer"), isinstance(outlier, Msg))
    _client_tls(r, policy.get("tls"))


def _tunnel(r: Report, tunnel: Any) -> None:
    if not isinstance(tunnel, Msg):
        return
    if tunnel.get("protocol") not in (None, "", "CONNECT", "POST"):
        r.error(tunnel.at("protocol"), 'tunnel protocol must be "CONNECT" or "POST"')
    target = tunnel.get("targetHost", "")
    if (fqdn_problem := check_fqdn(target)) and not is_ip(target):
        r.error(tunnel.at("targetHost"), f"tunnel target host must be valid FQDN or IP address: {fqdn_problem}")
    if problem := _port_problem(tunnel.get("targetPort", 0)):
        r.error(tunnel.at("targetPort"), f"tunnel target port is invalid: {problem}")


def _outlier_detection(r: Report, outlier: Any) -> None:
    if not isinstance(outlier, Msg):
        return
    _duration(r, outlier, "baseEjectionTime")
    _duration(r, outlier, "interval")
    if outlier.get("consecutiveErrors"):
        r.warn(outlier.at("consecutiveErrors"), "outlier detection consecutive errors is deprecated, use "
                                                "consecutiveGatewayErrors or consecutive5xxErrors instead")
    if not outlier.get("splitExternalLocalOriginErrors") and outlier.get("consecutiveLocalOriginFailures", 0) > 0:
        r.error(outlier.at("consecutiveLocalOriginFailures"),
                "outlier detection consecutive local origin failures is specified, but split external local "
                "origin errors is set to false")
    _percent_0_100(r, outlier, "maxEjectionPercent")
    _percent_0_100(r, outlier, "minHealthPercent")


def _connection_pool(r: Report, pool: Any) -> None:
    if not isinstance(pool, Msg):
        return
    if not pool.has("http") and not pool.has("tcp"):
        r.error(pool.path, "connection pool must have at least one field")
        return
    http = pool.get("http")
    if isinstance(http, Msg):
        for field, what in (("http1MaxPendingRequests", "http1 max pending requests"),
                            ("http2MaxRequests", "http2 max requests"),
                            ("maxRequestsPerConnection", "max requests per connection"),
                            ("maxRetries", "max retries"), ("maxConcurrentStreams", "max concurrent streams")):
            if http.get(field, 0) < 0:
                r.error(http.at(field), f"{what} must be non-negative")
        _duration(r, http, "idleTimeout")
        if http.get("h2UpgradePolicy") == "UPGRADE" and http.get("useClientProtocol"):
            r.error(http.at("useClientProtocol"), "use client protocol must not be true when H2UpgradePolicy is "
                                                  "UPGRADE")
    tcp = pool.get("tcp")
    if isinstance(tcp, Msg):
        if tcp.get("maxConnections", 0) < 0:
            r.error(tcp.at("maxConnections"), "max connections must be non-negative")
        _duration(r, tcp, "connectTimeout")
        _duration(r, tcp, "maxConnectionDuration")
        _duration(r, tcp, "idleTimeout", zero_disables=True)
        keepalive = tcp.get("tcpKeepalive")
        if isinstance(keepalive, Msg):
            _duration(r, keepalive, "time")
            _duration(r, keepalive, "interval")


def _is_prime(x: int) -> bool:
    if 0 < x < 4:
        return True
    if x % 2 == 0:
        return False
    return all(x % f for f in range(3, int(x**0.5) + 1, 2))


def _load_balancer(r: Report, lb: Any, has_outlier: bool) -> None:
    if not isinstance(lb, Msg):
        return
    ch = lb.get("consistentHash")
    if isinstance(ch, Msg):
        cookie = ch.get("httpCookie")
        if isinstance(cookie, Msg) and not cookie.get("name"):
            r.error(cookie.at("name"), "name required for HttpCookie")
        if ch.get("minimumRingSize"):
            r.warn(ch.at("minimumRingSize"), "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's "
                                             "RingHash configuration instead")
            if ch.has("ringHash") or ch.has("maglev"):
                r.error(ch.at("minimumRingSize"), "only one of MinimumRingSize or Maglev/Ringhash can be specified")
        maglev = ch.get("maglev")
        if isinstance(maglev, Msg) and "tableSize" not in maglev.bad:
            size = maglev.get("tableSize", 0)
            if size == 0:
                r.error(maglev.at("tableSize"), "tableSize must be set for maglev")
            elif size >= 5000011:
                r.error(maglev.at("tableSize"), "tableSize must be less than 5000011 for maglev")
            elif not _is_prime(size):
                r.error(maglev.at("tableSize"), "tableSize must be a prime number for maglev")
    _locality_lb(r, lb.get("localityLbSetting"), has_outlier)
    warmup = lb.get("warmup")
    if isinstance(warmup, Msg):
        if not warmup.has("duration"):
            r.error(warmup.at("duration"), "duration is required")
        _duration(r, warmup, "duration")
        if warmup.get("minimumPercent", 0) > 100:
            r.error(warmup.at("minimumPercent"), "minimumPercent value should be less than or equal to 100")
        if "aggression" in warmup and warmup["aggression"] < 1:
            r.error(warmup.at("aggression"), "aggression should be greater than or equal to 1")


def _locality_lb(r: Report, setting: Any, has_outlier: bool) -> None:
    if not isinstance(setting, Msg):
        return
    distribute, failover = setting.get("distribute") or [], setting.get("failover") or []
    if distribute and failover:
        r.error(setting.path, "can not simultaneously specify 'distribute' and 'failover'")
        return
    priority = setting.get("failoverPriority") or []
    if failover and any(p in _TOPOLOGY_LABELS for p in priority):
        r.error(setting.at("failoverPriority"), "can not simultaneously set 'failover' and topology label in "
                                                "'failover_priority'")
    for rule in _msgs(distribute):
        weights = rule.get("to") or {}
        if any(not 1 <= w <= 100 for w in weights.values()):
            r.error(rule.at("to"), "locality weight must be in range [1, 100]")
        elif sum(weights.values()) != 100:
            r.error(rule.at("to"), f"total locality weight {sum(weights.values())} != 100")
    if (failover or priority) and not has_outlier:
        r.warn(setting.path, "outlier detection policy must be provided for failover")
    for rule in _msgs(failover):
        source, target = rule.get("from", ""), rule.get("to", "")
        if source == target:
            r.error(rule.path, "locality lb failover settings must specify different regions")
        if "/" in source or "/" in target:
            r.error(rule.path, "locality lb failover only specify region")
        if "*" in source or "*" in target:
            r.error(rule.path, "locality lb failover region should not contain '*' wildcard")


def _client_tls(r: Report, tls: Any) -> None:
    if not isinstance(tls, Msg):
        return
    mode = tls.get("mode", "DISABLE")
    if tls.get("insecureSkipVerify"):
        if mode == "SIMPLE" and (tls.get("caCertificates") or tls.get("credentialName") or
                                 tls.has("subjectAltNames")):
            r.error(tls.at("insecureSkipVerify"), "cannot specify CaCertificates or CredentialName or "
                                                  "SubjectAltNames when InsecureSkipVerify is set true")
        if mode == "MUTUAL" and (tls.get("caCertificates") or tls.has("subjectAltNames")):
            r.error(tls.at("insecureSkipVerify"), "cannot specify CaCertificates or SubjectAltNames when "
                                                  "InsecureSkipVerify is set true")
    if mode in ("SIMPLE", "MUTUAL") and tls.get("credentialName"):
        if any(tls.get(f) for f in ("clientCertificate", "caCertificates", "privateKey", "caCrl")):
            r.error(tls.at("credentialName"), "cannot specify client certificates or CA certificate or CA CRL If "
                                              "credentialName is set")
        return
    if mode == "MUTUAL":
        if not tls.get("clientCertificate"):
            r.error(tls.at("clientCertificate"), "client certificate required for mutual tls")
        if not tls.get("privateKey"):
            r.error(tls.at("privateKey"), "private key required for mutual tls")


# --- Gateway -----------------------------------------------------------------------------------------------


def _gateway(r: Report, gw: Msg, obj: RawObject) -> None:
    servers = gw.get("servers") or []
    if not servers and "servers" not in gw.bad:
        r.error(gw.at("servers"), "gateway must have at least one server")
    names: set[str] = set()
    for server in _msgs(servers):
        _server(r, server)
        port = server.get("port")
        if not isinstance(port, Msg):
            continue
        name = port.get("name", "")
        if name and name in names:
            r.error(port.at("name"), f"port names in servers must be unique: duplicate name {name}")
        names.add(name)
        tls = server.get("tls")
        protocol = _protocol(port.get("protocol", ""))
        if isinstance(tls, Msg) and tls.get("httpsRedirect") and protocol not in _HTTP_PROTOCOLS:
            r.warn(tls.at("httpsRedirect"), "tls.httpsRedirect should only be used with http servers")


def _gateway_host(r: Report, path: Path, host: str) -> None:
    """ValidateNamespaceSlashWildcardHostname for gateways: `[ns/]dnsName`, FQDN or `*`, IPs allowed."""
    if "/" in host:
        namespace, host = host.split("/", 1)
        if not namespace or not host:
            r.error(path, "config namespace and dnsName in host entry cannot be empty")
            return
        if namespace not in ("*", ".") and not is_dns1123_label(namespace):
            r.error(path, f"invalid namespace value {namespace!r} in gateway")
    if host != "*" and "." not in host and not is_ip(host):
        r.error(path, "short names (non FQDN) are not allowed")
    elif (problem := check_wildcard_domain(host)) and not is_ip(host):
        r.error(path, problem)
    if problem := check_partial_wildcard(host):
        r.error(path, problem)


def _server(r: Report, server: Msg) -> None:
    hosts = server.get("hosts") or []
    if not hosts and "hosts" not in server.bad:
        r.error(server.at("hosts"), "server config must contain at least one host")
    for k, host in enumerate(hosts):
        if isinstance(host, str):
            _gateway_host(r, server.at("hosts", k), host)
    bind = server.get("bind", "")
    port = server.get("port")
    before = len(r.errors)
    if not server.has("port"):
        r.error(server.at("port"), "port is required")
    elif isinstance(port, Msg):
        protocol = port.get("protocol", "")
        if _protocol(protocol) is None and "protocol" not in port.bad:
            r.error(port.at("protocol"), f"invalid protocol {protocol!r}, supported protocols are HTTP, HTTP2, GRPC, "
                                         "GRPC-WEB, MONGO, REDIS, MYSQL, TCP")
        number = port.get("number", 0)
        if "number" not in port.bad and (number > 0 or not bind.startswith(UNIX_PREFIX)):
            _port(r, port.at("number"), number)
        if port.get("targetPort", 0) > 0:
            r.error(port.at("targetPort"), "targetPort has no impact on Gateways")
        if not port.get("name") and "name" not in port.bad:
            r.error(port.at("name"), "port name must be set")
    port_ok = len(r.errors) == before and isinstance(port, Msg)
    if bind.startswith(UNIX_PREFIX):
        if problem := _unix_address_problem(bind[len(UNIX_PREFIX):]):
            r.error(server.at("bind"), problem)
        if isinstance(port, Msg) and port.get("number"):
            r.error(port.at("number"), "port number must be 0 for unix domain socket")
    elif bind and not is_ip(bind):
        r.error(server.at("bind"), f"{bind} is not a valid IP")
    tls = server.get("tls")
    if isinstance(tls, Msg):
        _server_tls(r, tls)
    if port_ok and isinstance(port, Msg):
        protocol = _protocol(port.get("protocol", ""))
        if protocol in _TLS_PROTOCOLS and not server.has("tls"):
            r.error(server.at("tls"), "server must have TLS settings for HTTPS/TLS protocols")
        elif protocol not in _TLS_PROTOCOLS and isinstance(tls, Msg):
            if protocol in _HTTP_PROTOCOLS:
                passthrough = tls.get("mode", "PASSTHROUGH") in ("PASSTHROUGH", "AUTO_PASSTHROUGH")
                if not passthrough or any(tls.get(f) for f in ("caCertificates", "privateKey", "serverCertificate")):
                    r.error(server.at("tls"), "server cannot have TLS settings for plain text HTTP ports")
            else:
                r.error(server.at("tls"), "server cannot have TLS settings for non HTTPS/TLS ports")


def _server_tls(r: Report, tls: Msg) -> None:
    mode = tls.get("mode", "PASSTHROUGH")
    if tls.get("minProtocolVersion") in ("TLSV1_0", "TLSV1_1") and not tls.get("cipherSuites"):
        r.warn(tls.at("minProtocolVersion"), "TLS version below TLSV1_2 require setting compatible ciphers as by "
                                             "default they no longer include compatible ciphers.")
    certs = [f for f in ("serverCertificate", "privateKey", "caCertificates", "tlsCertificates", "credentialName",
                         "credentialNames") if tls.get(f)]
    if mode == "ISTIO_MUTUAL":
        for field in certs:
            r.error(tls.at(field), f"ISTIO_MUTUAL TLS cannot have associated {field}")
        return
    if mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH") and (certs or tls.get("caCrl")):
        r.warn(tls.path, f"{mode} mode does not use certificates, they will be ignored")
    sources = sum([bool(tls.get("serverCertificate") and tls.get("privateKey")), bool(tls.get("credentialName")),
                   bool(tls.get("credentialNames")), bool(tls.get("tlsCertificates"))])
    if sources > 1:
        r.error(tls.path, "only one of credential_name, credential_names, server_certificate/private_key, "
                          "tls_certificates should be specified")
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
        prefix = "SIMPLE TLS" if mode == "SIMPLE" else "MUTUAL TLS"
        if not (tls.get("credentialName") or tls.get("credentialNames")):
            if mode != "SIMPLE" and not tls.get("caCertificates"):
                r.error(tls.at("caCertificates"), f"{prefix} requires a client CA bundle")
            pairs = _msgs(tls.get("tlsCertificates")) or [tls]
            for pair in pairs:
                if not pair.get("serverCertificate"):
                    r.error(pair.at("serverCertificate"), f"{prefix} requires a server certificate")
                if not pair.get("privateKey"):
                    r.error(pair.at("privateKey"), f"{prefix} requires a private key")
    if tls.get("caCrl"):
        if tls.get("credentialName"):
            r.error(tls.at("caCrl"), "CRL is not supported with credentialName. CRL has to be specified in the "
                                     "credential")
        if mode == "SIMPLE":
            r.error(tls.at("caCrl"), "CRL is not supported with SIMPLE TLS")


# --- ServiceEntry / WorkloadEntry --------------------------------------------------------------------------


def _service_entry(r: Report, se: Msg, obj: RawObject) -> None:
    selector = se.get("workloadSelector")
    if isinstance(selector, Msg):
        _selector_labels(r, selector, "labels", "service entry: workload selector specified without labels, will "
                                                "be applied to all services in namespace")
    if se.has("workloadSelector") and se.get("endpoints"):
        r.error(se.at("endpoints"), "only one of WorkloadSelector or Endpoints is allowed in Service Entry")
    hosts = list(se.get("hosts") or [])
    if not hosts and "hosts" not in se.bad:
        r.error(se.at("hosts"), "service entry must have at least one host")
    for k, host in enumerate(hosts):
        if not isinstance(host, str):
            continue
        if host == "*":
            r.error(se.at("hosts", k), "invalid host *")
        elif problem := check_wildcard_domain(host):
            r.error(se.at("hosts", k), problem)
        elif problem := check_partial_wildcard(host):
            r.warn(se.at("hosts", k), problem)
    resolution = se.get("resolution", "NONE")
    cidr = False
    for k, address in enumerate(se.get("addresses") or []):
        if isinstance(address, str):
            cidr = cidr or "/" in address
            if problem := _ip_subnet_problem(address):
                r.error(se.at("addresses", k), problem)
    if cidr and resolution not in ("NONE", "STATIC"):
        r.error(se.at("addresses"), "CIDR addresses are allowed only for NONE/STATIC resolution types")
    port_names: set[str] = set()
    port_numbers: set[int] = set()
    ports = _msgs(se.get("ports"))
    for port in ports:
        name, number = port.get("name", ""), port.get("number", 0)
        if name in port_names and "name" not in port.bad:
            r.error(port.at("name"), f"service entry port name {name!r} already defined")
        if number in port_numbers and "number" not in port.bad:
            r.error(port.at("number"), f"service entry port {number} already defined")
        port_names.add(name)
        port_numbers.add(number)
        if port.get("targetPort"):
            _port(r, port.at("targetPort"), port["targetPort"])
        if "name" not in port.bad and not is_dns1123_label(name):
            r.error(port.at("name"), f"invalid port name: {name}")
        protocol = port.get("protocol", "")
        if protocol and _protocol(protocol) is None:
            r.error(port.at("protocol"), f"unsupported protocol: {protocol}")
        if "number" not in port.bad:
            _port(r, port.at("number"), number)
    endpoints = se.get("endpoints") or []
    if resolution == "NONE":
        if endpoints:
            r.error(se.at("endpoints"), "no endpoints should be provided for resolution type none")
        if se.has("workloadSelector"):
            r.warn(se.at("workloadSelector"), "workloadSelector should not be set when resolution mode is NONE")
    elif resolution == "STATIC":
        for endpoint in _msgs(endpoints):
            _workload_entry(r, endpoint, port_names, allow_fqdn=False)
        if not endpoints and not se.has("workloadSelector") and "endpoints" not in se.bad:
            r.warn(se.at("endpoints"), "service has no endpoints (resolution STATIC without endpoints or "
                                       "workloadSelector): requests to it will get 503 UH")
    else:  # DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS
        if not endpoints and resolution != "DYNAMIC_DNS":
            for k, host in enumerate(hosts):
                if isinstance(host, str) and check_fqdn(host):
                    r.error(se.at("hosts", k), f"hosts must be FQDN if no endpoints are provided for resolution "
                                               f"mode {resolution}")
        if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
            r.error(se.at("endpoints"), f"there must only be 0 or 1 endpoint for resolution mode {resolution}")
        for endpoint in _msgs(endpoints):
            _workload_entry(r, endpoint, port_names, allow_fqdn=True)
    if resolution != "NONE" and len(hosts) > 1:
        for port in ports:
            protocol = _protocol(port.get("protocol", ""))
            if protocol not in _HTTP_PROTOCOLS and protocol not in _TLS_PROTOCOLS:
                r.error(port.at("protocol"), "multiple hosts provided with non-HTTP, non-TLS ports")
                break
    _export_to(r, se, obj.namespace, service_entry=True)


def _workload_entry(r: Report, we: Msg, service_ports: set[str] | None, allow_fqdn: bool) -> None:
    address = we.get("address", "")
    if not address and "address" not in we.bad:
        if not we.get("network"):
            r.error(we.at("address"), "address is required")
            return
        r.warn(we.at("address"), f"address is unset with network {we['network']!r}")
    unix = address.startswith(UNIX_PREFIX)
    if unix:
        if problem := _unix_address_problem(address[len(UNIX_PREFIX):]):
            r.error(we.at("address"), problem)
        if we.get("ports"):
            r.error(we.at("ports"), f"unix endpoint {address} must not include ports")
    elif address and not is_ip(address):
        if not allow_fqdn:
            r.error(we.at("address"), f"endpoint address {address!r} is not a valid IP address (resolution STATIC "
                                      "takes IP addresses or unix:// paths)")
        elif check_fqdn(address):
            r.error(we.at("address"), f"endpoint address {address!r} is not a valid FQDN or an IP address")
    for name, number in (we.get("ports") or {}).items():
        if service_ports is not None and name not in service_ports:
            defined = ", ".join(sorted(service_ports)) or "none"
            r.error(we.at("ports", name), f"endpoint port {name!r} is not defined by the service entry "
                                          f"(its ports: {defined})")
        if not is_dns1123_label(name):
            r.error(we.at("ports", name), f"invalid port name: {name}")
        _port(r, we.at("ports", name), number)
    _labels(r, we, "labels")
    if unix and service_ports is not None and len(service_ports) != 1:
        r.error(we.at("address"), "exactly 1 service port required for unix endpoints")


def _standalone_workload_entry(r: Report, we: Msg, obj: RawObject) -> None:
    _workload_entry(r, we, None, allow_fqdn=True)


_KIND_RULES: dict[str, Callable[[Report, Msg, RawObject], None]] = {
    "VirtualService": _virtual_service,
    "DestinationRule": _destination_rule,
    "Gateway": _gateway,
    "ServiceEntry": _service_entry,
    "WorkloadEntry": _standalone_workload_entry,
}


# --- Across objects: references that do not resolve (warnings) --------------------------------------------


def _warn(r: Report, path: Path, reason: str) -> None:
    """Cross-object warnings stay quiet where the object itself already has an error."""
    if not r.has_error_within(path):
        r.warn(path, reason)


class _CrossCheck:
    def __init__(self, checked: list[_Checked]) -> None:
        self.checked = [c for c in checked if c.spec is not None]
        self.service_hosts: list[str] = []  # FQDNs (or wildcards) of every ServiceEntry host
        self.subsets: dict[str, set[str]] = {}  # DestinationRule host FQDN → subset names
        self.gateways: set[tuple[str, str]] = set()
        self.virtual_services: dict[tuple[str, str], Msg] = {}
        self.workload_entries: list[tuple[str, dict[str, str]]] = []
        for c in self.checked:
            spec, ns = c.spec, c.obj.namespace
            assert spec is not None
            if c.obj.kind == "ServiceEntry":
                self.service_hosts += [fqdn(h, ns) for h in spec.get("hosts") or [] if isinstance(h, str)]
            elif c.obj.kind == "DestinationRule" and isinstance(host := spec.get("host"), str):
                names = {s["name"] for s in _msgs(spec.get("subsets")) if isinstance(s.get("name"), str)}
                self.subsets.setdefault(fqdn(host, ns), set()).update(names)
            elif c.obj.kind == "Gateway":
                self.gateways.add((ns, c.obj.name))
            elif c.obj.kind == "VirtualService":
                self.virtual_services[(ns, c.obj.name)] = spec
            elif c.obj.kind == "WorkloadEntry":
                self.workload_entries.append((ns, spec.get("labels") or {}))

    def run(self) -> None:
        for c in self.checked:
            assert c.spec is not None
            if c.obj.kind == "VirtualService":
                self._virtual_service(c.report, c.spec, c.obj.namespace)
            elif c.obj.kind == "DestinationRule":
                host = c.spec.get("host")
                if isinstance(host, str) and "*" not in host and not check_wildcard_domain(host):
                    self._known_host(c.report, c.spec.at("host"), fqdn(host, c.obj.namespace))
            elif c.obj.kind == "ServiceEntry":
                self._selected_workloads(c.report, c.spec, c.obj.namespace)

    def _known_host(self, r: Report, path: Path, host: str) -> None:
        if is_ip(host) or any(host_matches(h, host) if h.startswith("*") else h == host
                              for h in self.service_hosts):
            return
        _warn(r, path, f"host {host} is not defined by any ServiceEntry: requests to it will fail "
                     "(no service, no endpoints)")

    def _subsets_for(self, host: str) -> set[str] | None:
        if host in self.subsets:
            return self.subsets[host]
        # Istio picks the most specific wildcard DestinationRule host
        wild = sorted((h for h in self.subsets if h.startswith("*") and host_matches(h, host)), key=len, reverse=True)
        return self.subsets[wild[0]] if wild else None

    def _virtual_service(self, r: Report, vs: Msg, ns: str) -> None:
        gateways = [g for g in vs.get("gateways") or [] if isinstance(g, str)]
        for k, gateway in enumerate(gateways):
            if gateway == MESH:
                continue
            key = self._gateway_key(gateway, ns)
            if key is not None and key not in self.gateways:
                _warn(r, vs.at("gateways", k), f"gateway {key[0]}/{key[1]} is not defined by any Gateway: these "
                                             "rules apply to no listener")
        warned: set[str] = set()  # one "not defined by any ServiceEntry" per host and VirtualService
        if not gateways or MESH in gateways:
            for k, host in enumerate(vs.get("hosts") or []):
                if isinstance(host, str) and "*" not in host and fqdn(host, ns) not in warned:
                    warned.add(fqdn(host, ns))
                    self._known_host(r, vs.at("hosts", k), fqdn(host, ns))
        for dest in self._destinations(vs):
            host = dest.get("host")
            if not isinstance(host, str) or not host or check_wildcard_domain(host):
                continue
            full = fqdn(host, ns)
            subset = dest.get("subset")
            if isinstance(subset, str) and subset:
                if subset not in (self._subsets_for(full) or set()):
                    _warn(r, dest.at("subset"), f"subset {subset} is not defined by any DestinationRule for {full}: "
                                              f"{_SUBSET_NC}")
            if full not in warned and "*" not in full:
                warned.add(full)
                self._known_host(r, dest.at("host"), full)
        for rule in _msgs(vs.get("http")):
            delegate = rule.get("delegate")
            if isinstance(delegate, Msg) and isinstance(name := delegate.get("name"), str):
                target = (delegate.get("namespace") or ns, name)
                found = self.virtual_services.get(target)
                if found is None:
                    _warn(r, rule.at("delegate"), f"delegate VirtualService {target[0]}/{target[1]} is not defined")
                elif found.get("hosts"):
                    _warn(r, rule.at("delegate"), f"VirtualService {target[0]}/{target[1]} has hosts, so it is not a "
                                                "delegate and is not used here")

    @staticmethod
    def _gateway_key(gateway: str, ns: str) -> tuple[str, str] | None:
        if "/" in gateway:
            namespace, name = gateway.split("/", 1)
            return (ns if namespace == "." else namespace, name)
        if "." in gateway:  # legacy name.namespace.svc.cluster.local
            parts = gateway.split(".")
            return (parts[1], parts[0])
        return (ns, gateway)

    @staticmethod
    def _destinations(vs: Msg) -> list[Msg]:
        out: list[Msg] = []
        for kind in ("http", "tcp", "tls"):
            for rule in _msgs(vs.get(kind)):
                out += [d["destination"] for d in _msgs(rule.get("route")) if isinstance(d.get("destination"), Msg)]
                if kind == "http":
                    if isinstance(rule.get("mirror"), Msg):
                        out.append(rule["mirror"])
                    out += [m["destination"] for m in _msgs(rule.get("mirrors"))
                            if isinstance(m.get("destination"), Msg)]
        return out

    def _selected_workloads(self, r: Report, se: Msg, ns: str) -> None:
        selector = se.get("workloadSelector")
        if se.get("resolution", "NONE") == "NONE" or not isinstance(selector, Msg):
            return
        labels = selector.get("labels") or {}
        if not any(we_ns == ns and all(we_labels.get(k) == v for k, v in labels.items())
                   for we_ns, we_labels in self.workload_entries):
            _warn(r, se.at("workloadSelector"), f"no WorkloadEntry in namespace {ns} matches this workloadSelector: "
                                              "the service has no endpoints (requests will get 503 UH)")
