"""Compile the pieces of a VirtualService HTTP rule: match blocks into predicates (proxy.routing.match),
fault injection and rewrite. Pure functions, called by compile.py. No I/O, no asyncio.
"""

from __future__ import annotations

from typing import Any

from proxy.config.duration import parse_duration
from proxy.routing.match import HttpMatch, StringMatcher
from proxy.routing.snapshot import Fault, Rewrite


def string_matcher(spec: dict[str, Any] | None, ignore_case: bool = False,
                   star_is_present: bool = False) -> StringMatcher:
    spec = spec or {}
    if star_is_present and spec.get("regex") == "*":  # Istio: `*` in withoutHeaders is a presence match
        return StringMatcher.build("present")
    for kind in ("exact", "prefix", "regex"):
        if kind in spec:
            return StringMatcher.build(kind, str(spec[kind]), ignore_case)  # type: ignore[arg-type]
    return StringMatcher.build("present")


def http_match(block: dict[str, Any], port: int) -> HttpMatch:
    def named(key: str) -> tuple[tuple[str, StringMatcher], ...]:
        return tuple((str(k).lower(), string_matcher(v, star_is_present=key == "withoutHeaders"))
                     for k, v in (block.get(key) or {}).items())

    def optional(key: str) -> StringMatcher | None:
        return string_matcher(block[key]) if block.get(key) is not None else None

    uri = block.get("uri")
    return HttpMatch(
        name=str(block.get("name") or ""),
        uri=string_matcher(uri, bool(block.get("ignoreUriCase"))) if uri is not None else None,
        scheme=optional("scheme"), method=optional("method"), authority=optional("authority"),
        headers=named("headers"), without_headers=named("withoutHeaders"), query_params=named("queryParams"),
        port=port,
    )


def any_catch_all(matches: list[HttpMatch]) -> bool:
    """A block with no conditions (or `prefix: /` alone) matches everything."""
    for m in matches:
        if (m.uri is None or (m.uri.kind == "prefix" and m.uri.value in ("", "/"))) and not (
                m.scheme or m.method or m.authority or m.headers or m.without_headers or m.query_params or m.port):
            return True
    return False


def _fault_percent(part: dict[str, Any]) -> float:
    """`percentage.value`, else the deprecated integer `percent`; unset means no request (Istio)."""
    percentage = part.get("percentage")
    if percentage is not None:
        return float((percentage or {}).get("value") or 0.0)
    return float(part.get("percent") or 0)


def fault(fault: dict[str, Any]) -> Fault | None:
    """The route's fault injection, or None when no request can be delayed or aborted."""
    delay = fault.get("delay") or {}
    abort = fault.get("abort") or {}
    delay_seconds = parse_duration(str(delay["fixedDelay"])) if delay.get("fixedDelay") else None
    delay_percent = _fault_percent(delay) if delay_seconds is not None else 0.0
    abort_status = int(abort["httpStatus"]) if abort.get("httpStatus") else None
    abort_percent = _fault_percent(abort) if abort_status is not None else 0.0
    if not delay_percent and not abort_percent:
        return None
    return Fault(delay_seconds, delay_percent, abort_status, abort_percent)


def rewrite(spec: dict[str, Any] | None) -> Rewrite | None:
    if not spec:
        return None
    regex = spec.get("uriRegexRewrite") or {}
    return Rewrite(uri=spec.get("uri"), authority=spec.get("authority"), regex_match=regex.get("match"),
                   regex_rewrite=regex.get("rewrite"))
