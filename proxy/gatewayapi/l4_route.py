"""Validation of TCPRoute and TLSRoute (v1alpha2): parentRefs, (TLS) hostnames, rules with backendRefs."""

from __future__ import annotations

from proxy.config.diagnostics import Path
from proxy.config.load import RawObject
from proxy.config.schema import Report
from proxy.gatewayapi import check


def check_l4_route(r: Report, obj: RawObject) -> None:
    tls = obj.kind == "TLSRoute"
    fields = ("parentRefs", "hostnames", "rules") if tls else ("parentRefs", "rules")
    spec = check.mapping(r, obj.body.get("spec"), ("spec",), f"a {obj.kind} spec", fields)
    if spec is None:
        return
    path: Path = ("spec",)
    check.parent_refs(r, spec, path)
    if tls:
        for i, host in enumerate(check.items(r, spec, path, "hostnames", 16)):
            check.hostname(r, (*path, "hostnames", i), host)
    rules = check.items(r, spec, path, "rules", 16, required=True, min_items=1)
    if len(rules) > 1:
        r.warn((*path, "rules"), f"only the first rule of a {obj.kind} is served (rules are not told apart "
                                 "without SNI)")
    for i, rule in enumerate(rules):
        where = (*path, "rules", i)
        m = check.mapping(r, rule, where, "a rule", ("name", "backendRefs"))
        if m is None:
            continue
        for j, ref in enumerate(check.items(r, m, where, "backendRefs", 16, required=True, min_items=1)):
            check.backend_ref(r, ref, (*where, "backendRefs", j))
