"""Validation of a core v1 Service: the fields that make it a service of the mesh (ports, selector)."""

from __future__ import annotations

import re

from proxy.config.load import RawObject
from proxy.config.schema import Report, describe
from proxy.gatewayapi import check

_SPEC = ("ports", "selector", "type", "clusterIP", "clusterIPs", "sessionAffinity", "sessionAffinityConfig",
         "externalTrafficPolicy", "internalTrafficPolicy", "ipFamilies", "ipFamilyPolicy", "externalName",
         "publishNotReadyAddresses", "loadBalancerIP", "loadBalancerSourceRanges", "loadBalancerClass",
         "externalIPs", "healthCheckNodePort", "allocateLoadBalancerNodePorts", "trafficDistribution")
_PORT = ("name", "port", "targetPort", "protocol", "appProtocol", "nodePort")
_PORT_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z")


def check_service(r: Report, obj: RawObject) -> None:
    spec = check.mapping(r, obj.body.get("spec"), ("spec",), "a Service spec", _SPEC)
    if spec is None:
        return
    path = ("spec",)
    kind = check.string(r, spec, path, "type")
    if kind == "ExternalName":
        r.warn((*path, "type"), "ExternalName Services are not served (no endpoints): use a ServiceEntry with "
                                "resolution DNS")
    selector = spec.get("selector")
    if selector is not None:
        sel = check.mapping(r, selector, (*path, "selector"), "selector", list(selector) if isinstance(selector,
                                                                                                    dict) else ())
        for key, value in (sel or {}).items():
            if not isinstance(value, str):
                r.error((*path, "selector", key), f"label value must be a string, got {describe(value)}")
    ports = check.items(r, spec, path, "ports", 256)
    names: dict[str, int] = {}
    for i, item in enumerate(ports):
        where = (*path, "ports", i)
        p = check.mapping(r, item, where, "a Service port", _PORT)
        if p is None:
            continue
        check.port(r, p, where, required=True)
        name = check.string(r, p, where, "name", required=len(ports) > 1, max_len=63)
        if name is not None:
            if not _PORT_NAME.match(name):
                r.error((*where, "name"), f"port name {name!r} must be a lowercase RFC 1123 label")
            if name in names:
                r.error((*where, "name"), f"port name {name!r} is already used by ports[{names[name]}]")
            names.setdefault(name, i)
        target = p.get("targetPort")
        if isinstance(target, int) and not isinstance(target, bool):
            check.port(r, p, where, "targetPort")
        elif target is not None and not isinstance(target, str):
            r.error((*where, "targetPort"), f"targetPort must be a port number or name, got {describe(target)}")
        protocol = check.enum(r, p, where, "protocol", ("TCP", "UDP", "SCTP"), "TCP")
        if protocol in ("UDP", "SCTP"):
            r.warn((*where, "protocol"), f"{protocol} ports are not served: this proxy relays TCP only")
        check.string(r, p, where, "appProtocol")
