"""VirtualService delegation, as istiod merges it before building routes.

A root VirtualService's HTTP rule with `delegate: {name, namespace}` is replaced by the delegate
VirtualService's HTTP rules (a delegate has no `hosts`), each with the root rule's match ANDed in and the
root rule's rewrite, timeout, retries, fault, mirror, CORS and headers inherited where the delegate rule
does not set them. Delegation is one level deep. A delegate rule whose match contradicts every root
match is dropped, as Istio drops it (`mergeHTTPRoute` in pilot/pkg/model/virtualservice.go).

Works on plain dicts with camelCase keys (compiled specs and the validator's typed tree alike). No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from proxy.config.hosts import fqdn
from proxy.config.load import RawObject

# fields a delegate rule inherits from the root rule when it does not set them
_INHERITED = ("rewrite", "directResponse", "timeout", "retries", "fault", "mirror", "mirrorPercent",
              "mirrorPercentage", "corsPolicy", "mirrors", "headers")
_STRING_MATCHES = ("uri", "scheme", "method", "authority")
_MAPS = ("headers", "withoutHeaders", "queryParams", "sourceLabels")


def is_delegate(vs: RawObject) -> bool:
    """A VirtualService without hosts exists only to be delegated to."""
    return not vs.spec.get("hosts")


def delegate_key(rule: dict[str, Any], namespace: str) -> tuple[str, str] | None:
    """(namespace, name) of the rule's delegate; None for a rule without `delegate`. An empty `delegate: {}`
    names no VirtualService, so istiod finds none and drops the rule: the name is then ""."""
    delegate = rule.get("delegate")
    if not isinstance(delegate, dict):
        return None
    return (str(delegate.get("namespace") or namespace), str(delegate.get("name") or ""))


def expand_delegates(virtual_services: Iterable[RawObject]) -> tuple[list[RawObject], list[str]]:
    """The routable VirtualServices, root rules replaced by their delegates' merged rules; plus notices
    for what Istio ignores (a missing or unexported delegate, a delegate rule that contradicts its root)."""
    every = list(virtual_services)
    delegates = {(vs.namespace, vs.name): vs for vs in every if is_delegate(vs)}
    out: list[RawObject] = []
    notices: list[str] = []
    for vs in every:
        if is_delegate(vs):
            continue
        rules = vs.spec.get("http") or []
        if not any(delegate_key(r, vs.namespace) for r in rules):
            out.append(vs)
            continue
        merged: list[dict[str, Any]] = []
        for index, rule in enumerate(rules):
            key = delegate_key(rule, vs.namespace)
            if key is None:
                merged.append(rule)
                continue
            where = f"{vs.file}: VirtualService {vs.namespace}/{vs.name} spec.http[{index}].delegate"
            target = delegates.get(key)
            if target is None:
                notices.append(f"{where}: delegate VirtualService {key[0]}/{key[1]} not found; rule ignored")
                continue
            if not _exported_to(target, vs.namespace):
                notices.append(f"{where}: delegate VirtualService {key[0]}/{key[1]} is not exported to namespace "
                               f"{vs.namespace}; rule ignored")
                continue
            leaves = [resolve_short_names(r, target.namespace) for r in target.spec.get("http") or []]
            # both sides with short names resolved first, as istiod does, so `gw` and `default/gw` agree
            kept, dropped = merge_http_routes(resolve_short_names(rule, vs.namespace), leaves)
            for n in dropped:
                notices.append(f"{where}: rule {n} of delegate {key[0]}/{key[1]} conflicts with the root rule's "
                               "match; ignored")
            merged.extend(kept)
        out.append(replace(vs, body={**vs.body, "spec": {**vs.spec, "http": merged}}))
    return out, notices


def _exported_to(vs: RawObject, namespace: str) -> bool:
    export = [str(e) for e in vs.spec.get("exportTo") or []]
    if not export:
        return True
    return "*" in export or namespace in export or ("." in export and vs.namespace == namespace)


def resolve_short_names(rule: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A delegate's destinations and gateways are short names in the delegate's own namespace."""
    out = dict(rule)
    if rule.get("route"):
        out["route"] = [{**d, "destination": _destination(d.get("destination"), namespace)}
                        if isinstance(d, dict) else d for d in rule["route"]]
    if isinstance(rule.get("mirror"), dict):
        out["mirror"] = _destination(rule["mirror"], namespace)
    if rule.get("mirrors"):
        out["mirrors"] = [{**m, "destination": _destination(m.get("destination"), namespace)}
                          if isinstance(m, dict) else m for m in rule["mirrors"]]
    if rule.get("match"):
        out["match"] = [{**m, "gateways": [_gateway(g, namespace) for g in m["gateways"]]}
                        if isinstance(m, dict) and m.get("gateways") else m for m in rule["match"]]
    return out


def _destination(dest: Any, namespace: str) -> Any:
    if not isinstance(dest, dict) or not isinstance(dest.get("host"), str):
        return dest
    return {**dest, "host": fqdn(dest["host"], namespace)}


def _gateway(ref: Any, namespace: str) -> Any:
    ref = str(ref)
    if ref == "mesh" or "/" in ref:
        return ref
    if "." in ref:  # legacy name.namespace.svc.cluster.local
        name, ns = ref.split(".")[:2]
        return f"{ns}/{name}"
    return f"{namespace}/{ref}"


def merge_http_routes(root: dict[str, Any], leaves: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """(merged rules, indexes of the delegate rules dropped for a match conflict)."""
    kept: list[dict[str, Any]] = []
    dropped: list[int] = []
    for n, leaf in enumerate(leaves):
        merged = _merge_http_route(root, leaf)
        if merged is None:
            dropped.append(n)
        else:
            kept.append(merged)
    return kept, dropped


def _merge_http_route(root: dict[str, Any], leaf: dict[str, Any]) -> dict[str, Any] | None:
    matches = _merge_matches([m or {} for m in root.get("match") or []], [m or {} for m in leaf.get("match") or []])
    if matches is None:
        return None
    out = {k: v for k, v in leaf.items() if k != "delegate"}
    out["match"] = matches
    root_name, leaf_name = root.get("name") or "", leaf.get("name") or ""
    name = f"{root_name}-{leaf_name}" if root_name and leaf_name else root_name or leaf_name
    if name:
        out["name"] = name
    for key in _INHERITED:
        if out.get(key) is None and root.get(key) is not None:
            out[key] = root[key]
    return out


def _merge_matches(root: list[dict[str, Any]], leaf: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Every delegate match must fit inside at least one root match; None when one does not."""
    if not root:
        return leaf
    if not leaf:
        return root
    out: list[dict[str, Any]] = []
    for sub in leaf:
        found = False
        for top in root:
            if _conflict(top, sub):
                continue
            out.append(_merge_match(top, sub))
            found = True
        if not found:
            return None
    return out or None


def _merge_match(root: dict[str, Any], leaf: dict[str, Any]) -> dict[str, Any]:
    out = dict(leaf)
    root_name, leaf_name = root.get("name") or "", leaf.get("name") or ""
    name = f"{root_name}-{leaf_name}" if root_name and leaf_name else root_name or leaf_name
    if name:
        out["name"] = name
    for key in (*_STRING_MATCHES, "port", "sourceNamespace", "statPrefix"):
        if not out.get(key) and root.get(key):
            out[key] = root[key]
    if not out.get("gateways") and root.get("gateways"):
        out["gateways"] = root["gateways"]
    for key in _MAPS:
        if root.get(key) or leaf.get(key):
            out[key] = {**(root.get(key) or {}), **(leaf.get(key) or {})}
    return out


def _conflict(root: dict[str, Any], leaf: dict[str, Any]) -> bool:
    """Istio's hasConflict: could no request satisfy both the root and the delegate match?"""
    for key in _STRING_MATCHES:
        if _string_conflict(root.get(key), leaf.get(key)):
            return True
    for key in ("headers", "withoutHeaders", "queryParams"):
        theirs = root.get(key) or {}
        if any(_string_conflict(theirs.get(name), value) for name, value in (leaf.get(key) or {}).items()):
            return True
    if bool(root.get("ignoreUriCase")) != bool(leaf.get("ignoreUriCase")):
        return True
    if root.get("port") and leaf.get("port") and root["port"] != leaf["port"]:
        return True
    if root.get("sourceNamespace") and leaf.get("sourceNamespace") != root["sourceNamespace"]:
        return True
    root_labels = root.get("sourceLabels") or {}
    if any(k in root_labels and root_labels[k] != v for k, v in (leaf.get("sourceLabels") or {}).items()):
        return True
    root_gws, leaf_gws = root.get("gateways") or [], leaf.get("gateways") or []
    return bool(root_gws and leaf_gws and (len(root_gws) < len(leaf_gws) or not set(leaf_gws) <= set(root_gws)))


def _string_conflict(root: Any, leaf: Any) -> bool:
    """Istio's stringMatchConflict: a regex on one side admits no other kind on the other; an exact root
    admits only the same exact; a prefix root admits a longer prefix or an exact under it."""
    if not isinstance(root, dict) or not isinstance(leaf, dict):
        return False
    if root.get("regex") and (leaf.get("regex") or leaf.get("prefix") or leaf.get("exact")):
        return True
    if leaf.get("regex") and (root.get("regex") or root.get("prefix") or root.get("exact")):
        return True
    if root.get("exact"):
        return bool(leaf.get("prefix")) or leaf.get("exact") != root["exact"]
    if root.get("prefix"):
        if leaf.get("prefix"):
            return not str(leaf["prefix"]).startswith(root["prefix"])
        if leaf.get("exact"):
            return not str(leaf["exact"]).startswith(root["prefix"])
    return True
