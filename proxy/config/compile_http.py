"""Compile the HTTP features that sit beside routing: consistent hash, mirrors, CORS, source matches
and header values with Envoy `%VAR%` operators. Pure functions over canonical (camelCase) specs, called
by compile.py; Istio's translation (pilot/pkg/networking/core/route) is the model. No I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from proxy.config.duration import parse_duration
from proxy.routing.formatters import Format, parse
from proxy.routing.match import StringMatcher
from proxy.routing.snapshot import Cluster, CorsPolicy, HashPolicy, HeaderOps, Mirror

DEFAULT_RING_SIZE = 1024  # Envoy's (and Istio's) minimum_ring_size
DEFAULT_MAGLEV_SIZE = 65537  # Envoy's Maglev table size

# consistent hash ----------------------------------------------------------------------------------


def hash_policy(load_balancer: Mapping[str, Any] | None) -> HashPolicy | None:
    """`loadBalancer.consistentHash` → HashPolicy; None when the balancer is a `simple` one."""
    ch = (load_balancer or {}).get("consistentHash")
    if not ch:
        return None
    table, size = "ring", int(ch.get("minimumRingSize") or 0) or DEFAULT_RING_SIZE
    if ch.get("maglev") is not None:
        table, size = "maglev", int((ch["maglev"] or {}).get("tableSize") or 0) or DEFAULT_MAGLEV_SIZE
    elif ch.get("ringHash") is not None:
        size = int((ch["ringHash"] or {}).get("minimumRingSize") or 0) or DEFAULT_RING_SIZE
    cookie = ch.get("httpCookie") or {}
    ttl = cookie.get("ttl")
    return HashPolicy(
        header=str(ch["httpHeaderName"]).lower() if ch.get("httpHeaderName") else None,
        cookie=str(cookie["name"]) if cookie.get("name") else None,
        cookie_path=str(cookie.get("path") or ""),
        cookie_ttl=parse_duration(str(ttl)) if ttl is not None else None,
        source_ip=bool(ch.get("useSourceIp")),
        query_parameter=str(ch["httpQueryParameterName"]) if ch.get("httpQueryParameterName") else None,
        table=table,  # type: ignore[arg-type]
        table_size=size,
        cookie_attributes=tuple((str(a.get("name") or ""), str(a.get("value") or ""))
                                for a in cookie.get("attributes") or [] if (a or {}).get("name")),
    )


# mirrors ------------------------------------------------------------------------------------------


def _percent(percentage: Any) -> float | None:
    """Istio's Percent message: None (no mirroring) when explicitly 0."""
    value = float((percentage or {}).get("value") or 0.0)
    return value if value > 0 else None


def mirrors(rule: Mapping[str, Any],
            resolve: Callable[[Mapping[str, Any]], tuple[str, Cluster | None]]) -> tuple[Mirror, ...]:
    """`mirror` (+ `mirrorPercentage`, or the deprecated integer `mirrorPercent`) and `mirrors[]`, as
    istiod translates them: an unset percentage is 100 %, an explicit 0 mirrors nothing."""
    out: list[Mirror] = []
    if rule.get("mirror"):
        if "mirrorPercentage" in rule and rule["mirrorPercentage"] is not None:
            percent = _percent(rule["mirrorPercentage"])
        elif rule.get("mirrorPercent") is not None:
            percent = float(rule["mirrorPercent"]) or None
        else:
            percent = 100.0
        if percent is not None:
            out.append(Mirror(*resolve(rule["mirror"]), percent=min(percent, 100.0)))
    for policy in rule.get("mirrors") or []:
        if not (policy or {}).get("destination"):
            continue
        percent = _percent(policy["percentage"]) if policy.get("percentage") is not None else 100.0
        if percent is not None:
            out.append(Mirror(*resolve(policy["destination"]), percent=min(percent, 100.0)))
    return tuple(out)


# CORS ---------------------------------------------------------------------------------------------


def _origin_matcher(spec: Mapping[str, Any]) -> StringMatcher | None:
    for kind in ("exact", "prefix", "regex"):
        if spec.get(kind):
            return StringMatcher.build(kind, str(spec[kind]))  # type: ignore[arg-type]
    return None


def cors_policy(spec: Mapping[str, Any] | None) -> CorsPolicy | None:
    """`corsPolicy` as Istio hands it to Envoy's CORS filter: lists joined with `,`, maxAge in seconds,
    the deprecated `allowOrigin` strings as exact matches."""
    if not spec:
        return None
    if spec.get("allowOrigins") is not None:
        origins = tuple(m for m in (_origin_matcher(o or {}) for o in spec["allowOrigins"]) if m is not None)
    else:
        origins = tuple(StringMatcher.build("exact", str(o)) for o in spec.get("allowOrigin") or [])
    max_age = spec.get("maxAge")
    return CorsPolicy(
        allow_origins=origins,
        allow_methods=",".join(str(m) for m in spec.get("allowMethods") or []),
        allow_headers=",".join(str(h) for h in spec.get("allowHeaders") or []),
        expose_headers=",".join(str(h) for h in spec.get("exposeHeaders") or []),
        max_age=str(int(parse_duration(str(max_age)))) if max_age is not None else "",
        allow_credentials=bool(spec.get("allowCredentials")),
        forward_unmatched_preflights=str(spec.get("unmatchedPreflights") or "FORWARD").upper() != "IGNORE",
    )


# source matches -----------------------------------------------------------------------------------


def source_matches(block: Mapping[str, Any], labels: Mapping[str, str], namespace: str) -> bool:
    """istiod keeps a match block for a proxy only when its `sourceLabels` are a subset of the proxy's
    labels and its `sourceNamespace` (if any) is the proxy's namespace; a block naming `gateways` is
    selected by those instead."""
    if block.get("gateways"):
        return True
    for key, value in (block.get("sourceLabels") or {}).items():
        if labels.get(str(key)) != str(value):
            return False
    source_ns = block.get("sourceNamespace")
    return not source_ns or str(source_ns) == namespace


# header values ------------------------------------------------------------------------------------


def header_ops(spec: Mapping[str, Any] | None) -> HeaderOps | None:
    """Header operations; values with `%VAR%` operators are parsed here once (problems are reported by
    `format_problems`; such a value is sent as written)."""
    if not spec:
        return None
    constant: dict[str, list[tuple[str, str]]] = {"set": [], "add": []}
    formats: dict[str, list[tuple[str, Format]]] = {"set": [], "add": []}
    for op in ("set", "add"):
        for name, value in (spec.get(op) or {}).items():
            parsed, _ = parse(str(value))
            if isinstance(parsed, Format):
                formats[op].append((str(name).lower(), parsed))
            else:
                constant[op].append((str(name).lower(), parsed))
    return HeaderOps(
        set=tuple(constant["set"]), add=tuple(constant["add"]),
        remove=tuple(str(k).lower() for k in spec.get("remove") or []),
        set_formats=tuple(formats["set"]), add_formats=tuple(formats["add"]),
    )


def format_problems(rule: Mapping[str, Any], where: str) -> list[str]:
    """One line per header value of an HTTP rule (and its destinations) with a bad `%` operator."""
    out: list[str] = []

    def scan(headers: Any, path: str) -> None:
        for side in ("request", "response"):
            for op in ("set", "add"):
                for name, value in ((headers or {}).get(side) or {}).get(op, {}).items():
                    for problem in parse(str(value))[1]:
                        out.append(f"{where}.{path}headers.{side}.{op}.{name}: {problem}; the value is sent as "
                                   "written")

    scan(rule.get("headers"), "")
    for i, destination in enumerate(rule.get("route") or []):
        scan((destination or {}).get("headers"), f"route[{i}].")
    return out
