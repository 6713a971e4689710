"""The status Istio's gateway controller writes on Gateway API objects, computed from the serving config.

Routes get `status.parents[]` (one per parentRef: `Accepted` with its reason, `ResolvedRefs` with
`BackendNotFound`, `RefNotPermitted` or `InvalidKind` when a backendRef does not resolve); Gateways get
their conditions and, per listener, the attached-route count, the supported kinds and conditions.
`get` shows it; the objects themselves are never changed.
"""

from __future__ import annotations

from typing import Any

from proxy.config.load import RawObject
from proxy.gatewayapi import kinds
from proxy.gatewayapi.resolve import ENFORCED_PROTOCOLS, Condition, Resolution, Route, resolve

CONTROLLER = "istio.io/gateway-controller"


def statuses(objects: list[RawObject]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """status by object key for every Gateway and route among `objects`."""
    if not any(o.kind in (kinds.GATEWAY, *kinds.ROUTE_KINDS) for o in objects):
        return {}
    res = resolve(objects)
    out = {route.obj.key: route_status(route) for route in res.routes}
    for key, gw in res.gateways.items():
        out[gw.key] = gateway_status(res, key)
    return out


def route_status(route: Route) -> dict[str, Any]:
    resolved = route.resolved_refs.as_dict()
    parents = []
    for parent in route.parents:
        accepted = parent.accepted.as_dict()
        unserved = parent.listeners and all(li.protocol not in ENFORCED_PROTOCOLS for li, _ in parent.listeners)
        if parent.accepted.status and (route.obj.kind == kinds.TLS_ROUTE or unserved):
            accepted["message"] += "; not enforced yet (no TLS support)"
        parents.append({"parentRef": parent.ref, "controllerName": CONTROLLER,
                        "conditions": [accepted, resolved]})
    return {"parents": parents}


def gateway_status(res: Resolution, key: tuple[str, str]) -> dict[str, Any]:
    gw = res.gateways[key]
    listeners = []
    served = 0
    for li in res.listeners[key]:
        enforced = li.protocol in ENFORCED_PROTOCOLS
        served += enforced
        programmed = Condition("Programmed", True, "Programmed", "Served") if enforced else Condition(
            "Programmed", False, "Pending", f"{li.protocol} listeners are accepted but not served yet (no TLS "
                                            "support)")
        listeners.append({
            "name": li.name, "attachedRoutes": li.attached,
            "supportedKinds": [{"group": kinds.GROUP, "kind": k} for k in li.allowed_kinds],
            "conditions": [Condition("Accepted", True, "Accepted", "No errors found").as_dict(),
                           programmed.as_dict(),
                           Condition("ResolvedRefs", True, "ResolvedRefs", "No errors found").as_dict()],
        })
    label = f"gateway.networking.k8s.io/gateway-name={gw.name}"
    programmed = Condition("Programmed", bool(served), "Programmed" if served else "Pending",
                           f"Served by shiftproxy run --labels {label}" if served else "no listener is served yet")
    return {"conditions": [Condition("Accepted", True, "Accepted", "Resource accepted").as_dict(),
                           programmed.as_dict()],
            "listeners": listeners}
