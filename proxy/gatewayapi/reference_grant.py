"""Validation of a ReferenceGrant: which routes of other namespaces may name this namespace's Services."""

from __future__ import annotations

from proxy.config.load import RawObject
from proxy.config.schema import Report
from proxy.gatewayapi import check


def check_reference_grant(r: Report, obj: RawObject) -> None:
    spec = check.mapping(r, obj.body.get("spec"), ("spec",), "a ReferenceGrant spec", ("from", "to"))
    if spec is None:
        return
    for i, item in enumerate(check.items(r, spec, ("spec",), "from", 16, required=True, min_items=1)):
        where = ("spec", "from", i)
        m = check.mapping(r, item, where, "a from entry", ("group", "kind", "namespace"))
        if m is not None:
            check.string(r, m, where, "group", required=True)
            check.string(r, m, where, "kind", required=True)
            check.dns_label(r, m, where, "namespace", required=True)
    for i, item in enumerate(check.items(r, spec, ("spec",), "to", 16, required=True, min_items=1)):
        where = ("spec", "to", i)
        m = check.mapping(r, item, where, "a to entry", ("group", "kind", "name"))
        if m is not None:
            if "group" not in m:
                r.error((*where, "group"), 'group is required ("" for core Services)')
            check.string(r, m, where, "group")
            check.string(r, m, where, "kind", required=True)
            check.string(r, m, where, "name")
