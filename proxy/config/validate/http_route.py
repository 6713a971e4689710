"""A VirtualService HTTP route: its one action (route, redirect, directResponse or delegate), matches,
CORS, fault injection, mirrors, retries and rewrite."""

from __future__ import annotations

from typing import Any

from proxy.config.hosts import is_dns1123_label
from proxy.config.schema import Msg, Report
from proxy.config.validate.common import (
    _HEADER_NAME,
    MS,
    SECOND,
    _destination,
    _duration,
    _gateway_names,
    _header_name_problem,
    _header_ops,
    _labels,
    _msgs,
    _percent_0_100,
    _percentage,
    _port,
    _regex,
    _route_destinations,
    _string_match,
)
from proxy.routing.regex import compile_regex, parse_substitution

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


def _http_route(r: Report, rule: Msg, in_delegate_vs: bool) -> None:
    name = rule.get("name", "")
    if rule.has("delegate") and not in_delegate_vs:
        # as Istio: a root rule's own directResponse stays valid (its delegate rules inherit it)
        for field, what in (("redirect", "redirect"), ("route", "route")):
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
            _substitution(r, regex_rewrite)


def _substitution(r: Report, regex_rewrite: Msg) -> None:
    """Istio passes the rewrite string to Envoy unchecked; one RE2 refuses leaves every path unchanged."""
    try:
        groups = compile_regex(regex_rewrite["match"]).groups
    except ValueError:
        return  # reported as an error on `match`
    _, problem = parse_substitution(regex_rewrite.get("rewrite", ""), groups)
    if problem:
        r.warn(regex_rewrite.at("rewrite"), f"{problem}; Envoy (RE2) then leaves the path unchanged")
