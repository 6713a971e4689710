"""Validation of an HTTPRoute: parentRefs, hostnames, rules with matches, filters, backendRefs and timeouts,
against the Gateway API CRD's rules (limits, path values, filter combinations, weights 0..1,000,000)."""

from __future__ import annotations

import re
from typing import Any

from proxy.config.diagnostics import Path
from proxy.config.load import RawObject
from proxy.config.schema import Report
from proxy.config.validate.common import _header_name_problem as _istio_header_name_problem
from proxy.config.validate.common import _header_value_problem
from proxy.gatewayapi import check
from proxy.routing.regex import compile_regex

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
FILTERS = {"RequestHeaderModifier": "requestHeaderModifier", "ResponseHeaderModifier": "responseHeaderModifier",
           "RequestRedirect": "requestRedirect", "URLRewrite": "urlRewrite", "RequestMirror": "requestMirror",
           "ExtensionRef": "extensionRef"}
_SPEC = ("parentRefs", "hostnames", "rules")
_RULE = ("name", "matches", "filters", "backendRefs", "timeouts", "retry", "sessionPersistence")
_MATCH = ("path", "headers", "queryParams", "method")
_BAD_PATH = re.compile(r"//|/\./|/\.\./|%2f|%2F|#")


def check_http_route(r: Report, obj: RawObject) -> None:
    spec = check.mapping(r, obj.body.get("spec"), ("spec",), "an HTTPRoute spec", _SPEC)
    if spec is None:
        return
    path: Path = ("spec",)
    check.parent_refs(r, spec, path)
    for i, host in enumerate(check.items(r, spec, path, "hostnames", 16)):
        check.hostname(r, (*path, "hostnames", i), host)
    for i, rule in enumerate(check.items(r, spec, path, "rules", 16)):
        _rule(r, rule, (*path, "rules", i))


def _rule(r: Report, value: Any, path: Path) -> None:
    rule = check.mapping(r, value, path, "a rule", _RULE)
    if rule is None:
        return
    for key in ("retry", "sessionPersistence"):
        if key in rule:
            r.warn((*path, key), f"{key} is accepted but not enforced yet")
    matches = check.items(r, rule, path, "matches", 64)
    prefix_matches = True
    for i, match in enumerate(matches):
        kind = _match(r, match, (*path, "matches", i))
        prefix_matches = prefix_matches and kind == "PathPrefix"
    filters = check.items(r, rule, path, "filters", 16)
    kinds = [_filter(r, f, (*path, "filters", i), prefix_matches) for i, f in enumerate(filters)]
    if "RequestRedirect" in kinds and "URLRewrite" in kinds:
        r.error((*path, "filters"), "RequestRedirect and URLRewrite cannot be used together")
    for kind in set(kinds) - {None, "RequestMirror"}:
        if kinds.count(kind) > 1:
            r.error((*path, "filters"), f"{kind} may appear only once per rule")
    refs = check.items(r, rule, path, "backendRefs", 16)
    if "RequestRedirect" in kinds and refs:
        r.error((*path, "backendRefs"), "a rule with a RequestRedirect filter may not have backendRefs")
    for i, ref in enumerate(refs):
        where = (*path, "backendRefs", i)
        backend = check.backend_ref(r, ref, where, ("filters",))
        if backend is None:
            continue
        for j, f in enumerate(check.items(r, backend, where, "filters", 16)):
            kind = _filter(r, f, (*where, "filters", j), prefix_matches)
            if kind not in (None, "RequestHeaderModifier", "ResponseHeaderModifier"):
                r.error((*where, "filters", j, "type"), f"{kind} is not supported on a backendRef (only the header "
                                                        "modifiers)")
    if rule.get("timeouts") is not None:
        where = (*path, "timeouts")
        timeouts = check.mapping(r, rule["timeouts"], where, "timeouts", ("request", "backendRequest"))
        if timeouts is not None:
            request = check.duration_ms(r, timeouts, where, "request")
            backend_request = check.duration_ms(r, timeouts, where, "backendRequest")
            if request and backend_request and backend_request > request:
                r.error((*where, "backendRequest"), "backendRequest must not be longer than request")


def _match(r: Report, value: Any, path: Path) -> str | None:
    match = check.mapping(r, value, path, "a match", _MATCH)
    if match is None:
        return None
    kind: str | None = "PathPrefix"
    if match.get("path") is not None:
        where = (*path, "path")
        p = check.mapping(r, match["path"], where, "a path match", ("type", "value"))
        if p is not None:
            kind = check.enum(r, p, where, "type", ("Exact", "PathPrefix", "RegularExpression"), "PathPrefix")
            text = check.string(r, p, where, "value", max_len=1024)
            text = "/" if text is None else text
            if kind in ("Exact", "PathPrefix"):
                if not text.startswith("/"):
                    r.error((*where, "value"), f"path {text!r} must start with '/'")
                elif _BAD_PATH.search(text) or text.endswith(("/..", "/.")):
                    r.error((*where, "value"), f"path {text!r} must not contain '//', '/./', '/../', '%2f', '#' "
                                               "or end with '/..' or '/.'")
            elif kind == "RegularExpression":
                _regex(r, (*where, "value"), text)
    for key in ("headers", "queryParams"):
        seen: set[str] = set()
        for i, item in enumerate(check.items(r, match, path, key, 16)):
            where = (*path, key, i)
            h = check.mapping(r, item, where, "a header match" if key == "headers" else "a query parameter match",
                              ("type", "name", "value"))
            if h is None:
                continue
            htype = check.enum(r, h, where, "type", ("Exact", "RegularExpression"), "Exact")
            name = check.string(r, h, where, "name", required=True, max_len=256)
            text = check.string(r, h, where, "value", required=True, max_len=4096 if key == "headers" else 1024)
            if name is not None:
                problem = _header_name_problem(name) if key == "headers" else None
                if problem:
                    r.error((*where, "name"), problem)
                folded = name.lower() if key == "headers" else name
                if folded in seen:
                    r.error((*where, "name"), f"{name!r} is matched twice in this match")
                seen.add(folded)
            if text is not None and htype == "RegularExpression":
                _regex(r, (*where, "value"), text)
    check.enum(r, match, path, "method", METHODS)
    return kind


def _header_name_problem(name: str) -> str | None:
    """Istio's header name rule, case-insensitively: Gateway API header names are not case-sensitive."""
    return _istio_header_name_problem(name.lower())


def _regex(r: Report, path: Path, pattern: str) -> None:
    try:
        compile_regex(pattern)
    except (ValueError, re.error) as exc:
        r.error(path, f"invalid regular expression {pattern!r}: {exc}")


def _filter(r: Report, value: Any, path: Path, prefix_matches: bool) -> str | None:
    f = check.mapping(r, value, path, "a filter", ("type", *FILTERS.values()))
    if f is None:
        return None
    kind = check.enum(r, f, path, "type", tuple(FILTERS), required=True)
    if kind is None:
        return None
    field = FILTERS[kind]
    for other in FILTERS.values():
        if other != field and other in f:
            r.error((*path, other), f"{other} must not be set on a filter of type {kind}")
    if f.get(field) is None:
        r.error((*path, field), f"a {kind} filter needs {field}")
        return kind
    where = (*path, field)
    if kind in ("RequestHeaderModifier", "ResponseHeaderModifier"):
        _header_modifier(r, f[field], where)
    elif kind in ("RequestRedirect", "URLRewrite"):
        fields = ("scheme", "hostname", "path", "port", "statusCode") if kind == "RequestRedirect" else (
            "hostname", "path")
        spec = check.mapping(r, f[field], where, field, fields)
        if spec is None:
            return kind
        if kind == "RequestRedirect":
            check.enum(r, spec, where, "scheme", ("http", "https"))
            check.port(r, spec, where)
            code = spec.get("statusCode")
            if code is not None and code not in (301, 302, 303, 307, 308):
                r.error((*where, "statusCode"), f"statusCode {code!r} is not one of 301, 302, 303, 307, 308")
        if spec.get("hostname") is not None:
            check.hostname(r, (*where, "hostname"), spec["hostname"])
        _path_modifier(r, spec, where, kind, prefix_matches)
    elif kind == "RequestMirror":
        r.warn((*path, "type"), "RequestMirror is accepted but not enforced yet (requests are not mirrored)")
    else:
        r.error((*path, "type"), "ExtensionRef filters are not supported")
    return kind


def _header_modifier(r: Report, value: Any, path: Path) -> None:
    spec = check.mapping(r, value, path, "a header modifier", ("set", "add", "remove"))
    if spec is None:
        return
    seen: set[str] = set()
    for op in ("set", "add"):
        for i, item in enumerate(check.items(r, spec, path, op, 16)):
            where = (*path, op, i)
            h = check.mapping(r, item, where, "a header", ("name", "value"))
            if h is None:
                continue
            name = check.string(r, h, where, "name", required=True, max_len=256)
            text = check.string(r, h, where, "value", required=True, max_len=4096)
            if name is not None:
                if problem := _header_name_problem(name):
                    r.error((*where, "name"), problem)
                if name.lower() in seen:
                    r.error((*where, "name"), f"header {name!r} is modified twice")
                seen.add(name.lower())
            if text is not None and (problem := _header_value_problem(text)):
                r.error((*where, "value"), problem)
    for i, name in enumerate(check.items(r, spec, path, "remove", 16)):
        if not isinstance(name, str) or _header_name_problem(name):
            r.error((*path, "remove", i), f"invalid header name {name!r}")


def _path_modifier(r: Report, spec: dict[str, Any], path: Path, kind: str, prefix_matches: bool) -> None:
    if spec.get("path") is None:
        return
    where = (*path, "path")
    p = check.mapping(r, spec["path"], where, "a path modifier", ("type", "replaceFullPath", "replacePrefixMatch"))
    if p is None:
        return
    ptype = check.enum(r, p, where, "type", ("ReplaceFullPath", "ReplacePrefixMatch"), required=True)
    if ptype is None:
        return
    field = "replaceFullPath" if ptype == "ReplaceFullPath" else "replacePrefixMatch"
    other = "replacePrefixMatch" if ptype == "ReplaceFullPath" else "replaceFullPath"
    if other in p:
        r.error((*where, other), f"{other} must not be set when type is {ptype}")
    text = check.string(r, p, where, field, required=True, max_len=1024)
    if text is not None and not text.startswith("/"):
        r.error((*where, field), f"path {text!r} must start with '/'")
    if ptype == "ReplacePrefixMatch":
        if not prefix_matches:
            r.error((*where, "type"), "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match")
        if kind == "RequestRedirect":
            r.error((*where, "type"), "RequestRedirect with ReplacePrefixMatch is not supported yet; use "
                                      "ReplaceFullPath")
