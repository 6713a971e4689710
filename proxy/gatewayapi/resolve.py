"""Resolve Gateway API objects against each other and the Istio registry, as Istio's gateway controller does.

For every route and each of its `parentRefs`: which Gateway listeners (or which mesh Service) it attaches
to, with the `Accepted` condition and its reason; for every `backendRef`: the service host it names, or
why it does not resolve (`BackendNotFound`, `RefNotPermitted`, `InvalidKind`). The same answer drives the
translation into Istio objects and the status `get` shows, so what is reported is what is served.

Input objects may be unvalidated (the validator asks too): every field read here is type-checked.
No I/O.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from proxy.config.hosts import fqdn
from proxy.config.load import RawObject
from proxy.gatewayapi import kinds

CORE = ""
ISTIO_GROUP = "networking.istio.io"
# the route kinds a listener of each protocol admits when `allowedRoutes.kinds` is not set
DEFAULT_KINDS = {"HTTP": (kinds.HTTP_ROUTE,), "HTTPS": (kinds.HTTP_ROUTE,), "TCP": (kinds.TCP_ROUTE,),
                 "TLS": (kinds.TLS_ROUTE,)}
ENFORCED_PROTOCOLS = ("HTTP", "TCP")  # HTTPS and TLS listeners are accepted but not served yet


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "status": "True" if self.status else "False", "reason": self.reason,
                "message": self.message}


@dataclass(slots=True)
class Listener:
    gateway: RawObject
    index: int
    name: str
    port: int
    protocol: str
    hostname: str | None
    allowed_kinds: tuple[str, ...]
    namespaces_from: str  # Same | All | Selector
    attached: int = 0

    @property
    def gateway_ref(self) -> str:
        return f"{self.gateway.namespace}/{self.gateway.name}"


@dataclass(slots=True)
class Parent:
    """One parentRef of a route, resolved."""

    index: int
    ref: dict[str, Any]  # as written, with group/kind/namespace filled in (the status echoes it)
    accepted: Condition
    listeners: list[tuple[Listener, list[str]]] = field(default_factory=list)  # with the hosts it serves
    service: str = ""  # the mesh parent's host (FQDN)
    service_port: int | None = None


@dataclass(slots=True)
class Backend:
    """One backendRef: the host it routes to, or the reason it does not resolve."""

    host: str
    port: int | None
    weight: int
    reason: str = ""  # "" when resolved
    message: str = ""


@dataclass(slots=True)
class Route:
    obj: RawObject
    parents: list[Parent] = field(default_factory=list)
    backends: dict[tuple[int, int], Backend] = field(default_factory=dict)  # (rule, backendRef) → backend

    @property
    def resolved_refs(self) -> Condition:
        bad = [b for b in self.backends.values() if b.reason]
        if not bad:
            return Condition("ResolvedRefs", True, "ResolvedRefs", "All references resolved")
        return Condition("ResolvedRefs", False, bad[0].reason, "; ".join(b.message for b in bad))

    def age_key(self) -> tuple[int, str, str]:
        """Oldest first (creationTimestamp), then namespace/name: the Gateway API's tie-break."""
        stamp = created_at(self.obj)
        return (0 if stamp else 1, stamp, f"{self.obj.namespace}/{self.obj.name}")


@dataclass(slots=True)
class Resolution:
    services: dict[tuple[str, str], RawObject]  # Kubernetes Services by (namespace, name)
    entry_hosts: dict[str, RawObject]  # ServiceEntry host FQDN → its ServiceEntry
    gateways: dict[tuple[str, str], RawObject]
    listeners: dict[tuple[str, str], list[Listener]]
    routes: list[Route]
    notices: list[str] = field(default_factory=list)

    def port_names(self, host: str) -> dict[str, int]:
        """A Service's (else ServiceEntry's) port numbers by port name."""
        for (ns, name), svc in self.services.items():
            if fqdn(name, ns) == host:
                found = [as_dict(p) for p in as_list(svc.spec.get("ports"))]
                return {as_str(p.get("name")): as_int(p.get("port")) or 0 for p in found}
        se = self.entry_hosts.get(host)
        found = [as_dict(p) for p in as_list(se.spec.get("ports"))] if se is not None else []
        return {as_str(p.get("name")): as_int(p.get("number")) or 0 for p in found}

    def service_ports(self, host: str) -> list[int]:
        for (ns, name), svc in self.services.items():
            if fqdn(name, ns) == host:
                return [p for p in (as_int(as_dict(x).get("port")) for x in as_list(svc.spec.get("ports"))) if p]
        se = self.entry_hosts.get(host)
        if se is not None:
            return [p for p in (as_int(as_dict(x).get("number")) for x in as_list(se.spec.get("ports"))) if p]
        return []


def created_at(obj: RawObject) -> str:
    stamp = as_dict(obj.body.get("metadata")).get("creationTimestamp")
    if isinstance(stamp, datetime.datetime):
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=datetime.UTC)
        return stamp.astimezone(datetime.UTC).isoformat()
    if isinstance(stamp, str):
        try:
            parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return stamp
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        return parsed.astimezone(datetime.UTC).isoformat()
    return ""


def resolve(objects: list[RawObject]) -> Resolution:
    services = {(o.namespace, o.name): o for o in objects if o.kind == kinds.SERVICE}
    entry_hosts: dict[str, RawObject] = {}
    for se in (o for o in objects if o.kind == "ServiceEntry"):
        for host in as_list(se.spec.get("hosts")):
            if isinstance(host, str):
                entry_hosts.setdefault(fqdn(host, se.namespace), se)
    gateways = {(o.namespace, o.name): o for o in objects if o.kind == kinds.GATEWAY}
    listeners = {key: _listeners(gw) for key, gw in gateways.items()}
    grants = [o for o in objects if o.kind == kinds.REFERENCE_GRANT]
    res = Resolution(services, entry_hosts, gateways, listeners, [])
    routes = sorted((o for o in objects if o.kind in kinds.ROUTE_KINDS),
                    key=lambda o: (created_at(o) == "", created_at(o), o.namespace, o.name))
    for obj in routes:
        route = Route(obj)
        for i, ref in enumerate(as_list(obj.spec.get("parentRefs"))):
            route.parents.append(_parent(res, obj, i, as_dict(ref)))
        for r, rule in enumerate(as_list(obj.spec.get("rules"))):
            for b, ref in enumerate(as_list(as_dict(rule).get("backendRefs"))):
                route.backends[(r, b)] = _backend(res, grants, obj, as_dict(ref))
        res.routes.append(route)
    return res


def _listeners(gw: RawObject) -> list[Listener]:
    out = []
    for i, item in enumerate(as_list(gw.spec.get("listeners"))):
        item = as_dict(item)
        protocol = as_str(item.get("protocol")).upper()
        allowed = as_dict(item.get("allowedRoutes"))
        route_kinds = tuple(as_str(as_dict(k).get("kind")) for k in as_list(allowed.get("kinds")))
        hostname = item.get("hostname")
        out.append(Listener(gw, i, as_str(item.get("name")), as_int(item.get("port")) or 0, protocol,
                            hostname.lower() if isinstance(hostname, str) and hostname else None,
                            route_kinds or DEFAULT_KINDS.get(protocol, ()),
                            as_str(as_dict(allowed.get("namespaces")).get("from"), "Same")))
    return out


def _parent(res: Resolution, route: RawObject, index: int, ref: dict[str, Any]) -> Parent:
    kind = as_str(ref.get("kind"), "Gateway")
    group = as_str(ref.get("group"), kinds.GROUP if kind == "Gateway" else CORE)
    namespace = as_str(ref.get("namespace"), route.namespace)
    name = as_str(ref.get("name"))
    shown = {"group": group, "kind": kind, "name": name, "namespace": namespace,
             **{k: ref[k] for k in ("sectionName", "port") if k in ref}}
    port = as_int(ref.get("port"))
    if kind == "Service" and group == CORE:
        host = fqdn(name, namespace)
        ports = res.service_ports(host)
        if not ports and host not in res.entry_hosts:
            return Parent(index, shown, Condition("Accepted", False, "NoMatchingParent",
                                                  f"no Service or ServiceEntry named {name} in {namespace}"))
        if port is not None and ports and port not in ports:
            return Parent(index, shown, Condition("Accepted", False, "NoMatchingParent",
                                                  f"service {host} has no port {port}"))
        section = ref.get("sectionName")
        if isinstance(section, str):  # a Service parent's section is one of its port names
            named = res.port_names(host)
            if section not in named:
                return Parent(index, shown, Condition("Accepted", False, "NoMatchingParent",
                                                      f"service {host} has no port named {section!r}"))
            port = named[section]
        return Parent(index, shown, Condition("Accepted", True, "Accepted", "Route was valid"),
                      service=host, service_port=port if len(ports) > 1 else None)
    if kind != "Gateway" or group != kinds.GROUP:
        return Parent(index, shown, Condition("Accepted", False, "InvalidKind",
                                              f"parentRef kind {group or 'core'}/{kind} is not supported "
                                              "(Gateway or core Service)"))
    candidates = res.listeners.get((namespace, name))
    if candidates is None:
        return Parent(index, shown, Condition("Accepted", False, "NoMatchingParent",
                                              f"gateway {namespace}/{name} not found"))
    section = ref.get("sectionName")
    if isinstance(section, str):
        candidates = [li for li in candidates if li.name == section]
    if port is not None:
        candidates = [li for li in candidates if li.port == port]
    if not candidates:
        what = f"sectionName {section!r}" if isinstance(section, str) else f"port {port}"
        return Parent(index, shown, Condition("Accepted", False, "NoMatchingParent",
                                              f"gateway {namespace}/{name} has no listener with {what}"))
    allowed = [li for li in candidates if _allows(li, route)]
    if not allowed:
        return Parent(index, shown, Condition("Accepted", False, "NotAllowedByListeners",
                                              _not_allowed_message(candidates, route)))
    hostnames = [h.lower() for h in as_list(route.spec.get("hostnames")) if isinstance(h, str)]
    parent = Parent(index, shown, Condition("Accepted", True, "Accepted", "Route was valid"))
    for li in allowed:
        hosts = ["*"] if route.kind == kinds.TCP_ROUTE else intersect_hostnames(li.hostname, hostnames)
        if hosts:
            parent.listeners.append((li, hosts))
            li.attached += 1
    if not parent.listeners:
        parent.accepted = Condition("Accepted", False, "NoMatchingListenerHostname",
                                    "no hostname of the route matches a listener's hostname")
    return parent


def _allows(li: Listener, route: RawObject) -> bool:
    if route.kind not in li.allowed_kinds or route.kind not in DEFAULT_KINDS.get(li.protocol, ()):
        return False
    if li.namespaces_from == "All":
        return True
    return li.namespaces_from == "Same" and route.namespace == li.gateway.namespace


def _not_allowed_message(candidates: list[Listener], route: RawObject) -> str:
    reasons = []
    for li in candidates:
        if route.kind not in li.allowed_kinds or route.kind not in DEFAULT_KINDS.get(li.protocol, ()):
            reasons.append(f"listener {li.name!r} ({li.protocol}) allows {', '.join(li.allowed_kinds) or 'no'} "
                           f"routes, not {route.kind}")
        elif li.namespaces_from == "Selector":
            reasons.append(f"listener {li.name!r} selects namespaces by label, which is not supported here "
                           "(no Namespace objects): use from: Same or All")
        else:
            reasons.append(f"listener {li.name!r} allows routes from namespace {li.gateway.namespace} only, "
                           f"not {route.namespace}")
    return "; ".join(reasons)


def intersect_hostnames(listener: str | None, route: list[str]) -> list[str]:
    """The hosts a route serves on a listener (Gateway API hostname intersection); [] when none."""
    if not route:
        return [listener or "*"]
    if listener is None:
        return list(route)
    out = []
    for host in route:
        if host == listener or _wildcard_covers(listener, host):
            out.append(host)
        elif _wildcard_covers(host, listener):
            out.append(listener)
    return list(dict.fromkeys(out))


def _wildcard_covers(wildcard: str, host: str) -> bool:
    return wildcard.startswith("*.") and host.endswith(wildcard[1:]) and len(host) > len(wildcard) - 1


def _backend(res: Resolution, grants: list[RawObject], route: RawObject, ref: dict[str, Any]) -> Backend:
    kind = as_str(ref.get("kind"), "Service")
    group = as_str(ref.get("group"), CORE)
    name = as_str(ref.get("name"))
    namespace = as_str(ref.get("namespace"), route.namespace)
    port = as_int(ref.get("port"))
    weight = as_int(ref.get("weight"))
    weight = 1 if weight is None else weight
    if group == ISTIO_GROUP and kind == "Hostname":
        host = name.lower()
        if host not in res.entry_hosts:
            return Backend(host, port, weight, "BackendNotFound", f"hostname {host} not found")
        return Backend(host, port, weight)
    if kind != "Service" or group != CORE:
        return Backend(name, port, weight, "InvalidKind",
                       f"backendRef kind {group or 'core'}/{kind} is not supported (Service, or "
                       f"{ISTIO_GROUP}/Hostname)")
    host = fqdn(name, namespace)
    if namespace != route.namespace and not _granted(grants, route, namespace, name):
        return Backend(host, port, weight, "RefNotPermitted",
                       f"backendRef to Service {namespace}/{name} not permitted by any ReferenceGrant")
    ports = res.service_ports(host)
    if not ports and host not in res.entry_hosts:
        return Backend(host, port, weight, "BackendNotFound", f"backend({host}) not found")
    if port is not None and port not in ports:
        return Backend(host, port, weight, "BackendNotFound", f"backend({host}) has no port {port}")
    return Backend(host, port, weight)


def _granted(grants: list[RawObject], route: RawObject, namespace: str, name: str) -> bool:
    for grant in grants:
        if grant.namespace != namespace:
            continue
        froms = [as_dict(f) for f in as_list(grant.spec.get("from"))]
        tos = [as_dict(t) for t in as_list(grant.spec.get("to"))]
        if not any(f.get("group") == kinds.GROUP and f.get("kind") == route.kind
                   and f.get("namespace") == route.namespace for f in froms):
            continue
        if any(as_str(t.get("group")) == CORE and t.get("kind") == "Service"
               and as_str(t.get("name"), name) == name for t in tos):
            return True
    return False
