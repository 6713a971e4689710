"""Validation of a Gateway (gateway.networking.k8s.io): gatewayClassName, listeners and their routes."""

from __future__ import annotations

from typing import Any

from proxy.config.load import RawObject
from proxy.config.schema import Report
from proxy.gatewayapi import check

PROTOCOLS = ("HTTP", "HTTPS", "TLS", "TCP", "UDP")
ISTIO_CLASSES = ("istio", "istio-waypoint", "istio-remote")
_SPEC = ("gatewayClassName", "listeners", "addresses", "infrastructure", "backendTLS")
_LISTENER = ("name", "hostname", "port", "protocol", "tls", "allowedRoutes")
_ROUTE_KINDS = ("HTTPRoute", "TCPRoute", "TLSRoute", "GRPCRoute", "UDPRoute")


def check_gateway(r: Report, obj: RawObject) -> None:
    spec = check.mapping(r, obj.body.get("spec"), ("spec",), "a Gateway spec", _SPEC)
    if spec is None:
        return
    path = ("spec",)
    cls = check.string(r, spec, path, "gatewayClassName", required=True, max_len=253)
    if cls is not None and cls not in ISTIO_CLASSES:
        r.warn((*path, "gatewayClassName"), f"gatewayClassName {cls!r} is not Istio's ({', '.join(ISTIO_CLASSES)})"
                                            "; served anyway")
    seen_names: dict[str, int] = {}
    seen_bindings: dict[tuple[Any, ...], int] = {}
    for i, item in enumerate(check.items(r, spec, path, "listeners", 64, required=True, min_items=1)):
        where = (*path, "listeners", i)
        li = check.mapping(r, item, where, "a listener", _LISTENER)
        if li is None:
            continue
        name = check.string(r, li, where, "name", required=True, max_len=253)
        if name is not None:
            if name in seen_names:
                r.error((*where, "name"), f"listener name {name!r} is already used by listeners[{seen_names[name]}]")
            seen_names.setdefault(name, i)
        number = check.port(r, li, where, required=True)
        protocol = check.enum(r, li, where, "protocol", PROTOCOLS, required=True)
        host = li.get("hostname")
        if host is not None:
            check.hostname(r, (*where, "hostname"), host)
            if protocol in ("TCP", "UDP"):
                r.error((*where, "hostname"), f"hostname must not be set on a {protocol} listener")
        if protocol == "UDP":
            r.error((*where, "protocol"), "UDP listeners are not supported: this proxy relays TCP only")
        tls = li.get("tls")
        if protocol == "HTTPS" and tls is None:
            r.error((*where, "tls"), "an HTTPS listener needs tls (certificateRefs)")
        if protocol in ("HTTP", "TCP", "UDP") and tls is not None:
            r.error((*where, "tls"), f"tls must not be set on a {protocol} listener")
        if tls is not None:
            check.mapping(r, tls, (*where, "tls"), "tls", ("mode", "certificateRefs", "options",
                                                            "frontendValidation"))
        _allowed_routes(r, li, where)
        binding = (number, protocol, host)
        if number is not None and protocol is not None:
            if binding in seen_bindings:
                r.error(where, f"listeners[{seen_bindings[binding]}] already has port {number}, protocol "
                               f"{protocol} and hostname {host or '(none)'}")
            seen_bindings.setdefault(binding, i)


def _allowed_routes(r: Report, li: dict[str, Any], where: tuple[Any, ...]) -> None:
    if li.get("allowedRoutes") is None:
        return
    path = (*where, "allowedRoutes")
    allowed = check.mapping(r, li["allowedRoutes"], path, "allowedRoutes", ("namespaces", "kinds"))
    if allowed is None:
        return
    if allowed.get("namespaces") is not None:
        ns_path = (*path, "namespaces")
        ns = check.mapping(r, allowed["namespaces"], ns_path, "allowedRoutes.namespaces", ("from", "selector"))
        if ns is not None:
            source = check.enum(r, ns, ns_path, "from", ("All", "Same", "Selector"), "Same")
            if source == "Selector":
                if ns.get("selector") is None:
                    r.error((*ns_path, "selector"), "from: Selector needs a selector")
                r.warn((*ns_path, "from"), "namespace selectors cannot be evaluated here (no Namespace objects): "
                                           "no route is allowed by this listener")
    for k, kind in enumerate(check.items(r, allowed, path, "kinds", 8)):
        kind_path = (*path, "kinds", k)
        km = check.mapping(r, kind, kind_path, "a route kind", ("group", "kind"))
        if km is None:
            continue
        group = check.string(r, km, kind_path, "group")
        name = check.string(r, km, kind_path, "kind", required=True)
        if group not in (None, "gateway.networking.k8s.io") or (name is not None and name not in _ROUTE_KINDS):
            r.error(kind_path, f"route kind {group or 'gateway.networking.k8s.io'}/{name} is not supported "
                               f"(one of {', '.join(_ROUTE_KINDS[:3])})")
