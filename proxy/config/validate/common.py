"""Field checks every kind shares: ports, durations, percentages, labels and selectors, IP and unix
addresses, protocols, exportTo, string matches and regexes, header names, values and header operations,
gateway references, and route destinations with their weights.

The `_`-prefixed names are private to the `proxy.config.validate` package, shared by its modules.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from proxy.config.diagnostics import Path
from proxy.config.hosts import check_fqdn, check_wildcard_domain, is_dns1123_label, is_ip
from proxy.config.schema import Msg, Report
from proxy.routing.regex import compile_regex

MS = 1_000_000  # nanoseconds
SECOND = 1_000_000_000
MESH = "mesh"
UNIX_PREFIX = "unix://"
# protocol.Parse in istio: case-insensitive names; anything else is "Unsupported"
_PROTOCOLS = {"TCP", "UDP", "GRPC", "GRPC-WEB", "HTTP", "HTTP_PROXY", "HTTP2", "HTTPS", "TLS", "MONGO", "REDIS",
              "MYSQL"}
_HTTP_PROTOCOLS = {"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB"}
_TLS_PROTOCOLS = {"HTTPS", "TLS"}
_PSEUDO_HEADERS = {":method", ":scheme", ":authority", ":path", ":status"}
_JWT_CLAIM_PREFIX = "@request.auth.claims."
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~A-Za-z0-9]+\Z")  # RFC 7230 token
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DNS_LABEL = r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_TAG_KEY = re.compile(rf"((?:{_DNS_LABEL}(?:\.{_DNS_LABEL})*)/)?((?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])\Z")
_TAG_VALUE = re.compile(r"(?:(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")


def _msgs(items: Any) -> Iterable[Msg]:
    return [item for item in items or [] if isinstance(item, Msg)]


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
    return None  # upper case is valid: header names compare case-insensitively


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
