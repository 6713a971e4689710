"""Translate resolved Gateway API objects into the Istio objects the compiler already serves.

- a Kubernetes `Service` → a STATIC ServiceEntry for `NAME.NAMESPACE.svc.cluster.local` whose endpoints are
  the WorkloadEntries and ServiceEntry endpoints its `selector` picks (as Istio lets a Service select
  WorkloadEntries); a ServiceEntry that defines the same host wins (the validator warns);
- a `Gateway` → an Istio Gateway named `NAME.gateway.networking.k8s.io`, selected by the instance label
  `gateway.networking.k8s.io/gateway-name: NAME` (Istio's gateway deployments carry it); HTTP and TCP
  listeners become servers, HTTPS and TLS listeners are accepted but not served yet;
- the HTTPRoutes on one gateway host, or on one mesh Service, → one VirtualService whose `http` rules are
  every match in Gateway API precedence order (`precedence`), one rule per match;
- a TCPRoute → a VirtualService `tcp` rule per listener port (or for the mesh Service).

A backendRef that does not resolve keeps its share of the rule's weight and answers it with 500, as the
spec requires: the rule aborts that fraction of requests (fault abort 500) and splits the rest over the
valid backends with their relative weights. No I/O.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from proxy.config.duration import parse_duration
from proxy.config.hosts import fqdn
from proxy.config.load import RawObject
from proxy.config.registry import port_protocol
from proxy.gatewayapi import kinds
from proxy.gatewayapi.filters import http_filters
from proxy.gatewayapi.precedence import match_key, route_matches
from proxy.gatewayapi.resolve import (
    ENFORCED_PROTOCOLS,
    Backend,
    Resolution,
    Route,
    as_dict,
    as_int,
    as_list,
    as_str,
    resolve,
)

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
ISTIO_API = "networking.istio.io/v1"


def translate(objects: list[RawObject], labels: dict[str, str] | None = None) -> tuple[list[RawObject], list[str]]:
    """(the Istio objects with the Gateway API ones replaced by their translation, notices).

    `labels` are this instance's (`--labels`): a port that a selected Istio Gateway and a selected Gateway
    API Gateway both bind is reported, since their routes would share one listener.
    """
    if not any(kinds.is_gateway_api(o.kind) for o in objects):
        return objects, []
    res = resolve(objects)
    istio = [o for o in objects if not kinds.is_gateway_api(o.kind)]
    out = list(istio)
    out += _service_entries(res, istio)
    gateways = _gateways(res)
    if labels is not None:
        res.notices += _shared_ports(istio, gateways, labels)
    out += gateways
    out += _http_virtual_services(res)
    out += _tcp_virtual_services(res)
    for route in res.routes:
        if route.obj.kind == kinds.TLS_ROUTE:
            res.notices.append(f"{route.obj.file}: TLSRoute {route.obj.namespace}/{route.obj.name} is accepted "
                               "but not enforced yet (no TLS support)")
    return out, res.notices


def _generated(source: RawObject, kind: str, name: str, spec: dict[str, Any]) -> RawObject:
    body = {"apiVersion": ISTIO_API, "kind": kind, "metadata": {"name": name, "namespace": source.namespace},
            "spec": spec}
    return replace(source, kind=kind, api_version=ISTIO_API, name=name, body=body, lines={})


# Services ---------------------------------------------------------------------------------------------


def _service_entries(res: Resolution, istio: list[RawObject]) -> list[RawObject]:
    all_workloads = workloads(istio)
    out = []
    for (ns, name), svc in sorted(res.services.items()):
        host = fqdn(name, ns)
        if host in res.entry_hosts:
            continue  # the ServiceEntry defines this host (the validator warns)
        selector = {str(k): str(v) for k, v in as_dict(svc.spec.get("selector")).items()}
        ports, endpoints = [], []
        for i, p in enumerate(as_list(svc.spec.get("ports"))):
            p = as_dict(p)
            number = as_int(p.get("port")) or 0
            port_name = as_str(p.get("name")) or f"port-{i}"
            app = as_str(p.get("appProtocol")).split("/")[-1]
            protocol = port_protocol({"name": app or port_name})
            ports.append({"number": number, "name": port_name, "protocol": protocol})
        for address, named, numbered, labels, ns_of in all_workloads:
            if not selects(selector, labels, ns, ns_of):
                continue
            targets = {}
            for p, spec_port in zip(ports, as_list(svc.spec.get("ports")), strict=True):
                target = as_dict(spec_port).get("targetPort")
                if isinstance(target, int):
                    targets[p["name"]] = target
                elif isinstance(target, str) and target in named:
                    targets[p["name"]] = named[target]
                elif p["name"] in named:
                    targets[p["name"]] = named[p["name"]]
                else:
                    targets[p["name"]] = numbered.get(p["number"], p["number"])
            endpoints.append({"address": address, "ports": targets, "labels": labels})
        out.append(_generated(svc, "ServiceEntry", f"{name}.service", {
            "hosts": [host], "ports": ports, "resolution": "STATIC", "endpoints": endpoints}))
    return out


def selects(selector: dict[str, str], labels: dict[str, str], namespace: str, workload_namespace: str) -> bool:
    """A Service's selector picks workloads of its namespace whose labels contain it (none when empty)."""
    return bool(selector) and namespace == workload_namespace and all(labels.get(k) == v
                                                                      for k, v in selector.items())


def workloads(istio: list[RawObject]) -> list[tuple[str, dict[str, int], dict[int, int], dict[str, str], str]]:
    """(address, target port by port name, target port by service port, labels, namespace) of every
    WorkloadEntry and ServiceEntry endpoint."""
    out = []
    for o in istio:
        if o.kind == "WorkloadEntry":
            eps, se_ports = [o.spec], []
        elif o.kind == "ServiceEntry":
            eps, se_ports = as_list(o.spec.get("endpoints")), as_list(o.spec.get("ports"))
        else:
            continue
        for ep in eps:
            ep = as_dict(ep)
            named = {str(k): v for k, v in as_dict(ep.get("ports")).items() if isinstance(v, int)}
            numbered = {}
            for sp in se_ports:
                sp = as_dict(sp)
                number = as_int(sp.get("number"))
                if number is not None:
                    numbered[number] = named.get(as_str(sp.get("name"))) or as_int(sp.get("targetPort")) or number
            labels = {str(k): str(v) for k, v in as_dict(ep.get("labels")).items()}
            out.append((as_str(ep.get("address")), named, numbered, labels, o.namespace))
    return out


# Gateways ---------------------------------------------------------------------------------------------


def gateway_ref(namespace: str, name: str) -> str:
    return f"{namespace}/{name}.{kinds.GROUP}"


def _gateways(res: Resolution) -> list[RawObject]:
    out = []
    for (ns, name), gw in sorted(res.gateways.items()):
        servers = []
        for li in res.listeners[(ns, name)]:
            if li.protocol not in ENFORCED_PROTOCOLS:
                res.notices.append(f"{gw.file}: Gateway {ns}/{name} listener {li.name!r} ({li.protocol}) is "
                                   "accepted but not served yet (no TLS support)")
                continue
            servers.append({"port": {"number": li.port, "name": li.name, "protocol": li.protocol},
                            "hosts": [f"*/{li.hostname or '*'}"]})
        spec = {"selector": {GATEWAY_NAME_LABEL: name}, "servers": servers}
        out.append(_generated(gw, "Gateway", f"{name}.{kinds.GROUP}", spec))
    return out


def _selected(gw: RawObject, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == str(v) for k, v in as_dict(gw.spec.get("selector")).items())


def _ports(gw: RawObject) -> set[int]:
    return {as_int(as_dict(as_dict(s).get("port")).get("number")) or 0 for s in as_list(gw.spec.get("servers"))}


def _shared_ports(istio: list[RawObject], translated: list[RawObject], labels: dict[str, str]) -> list[str]:
    notices = []
    for gw in (g for g in translated if _selected(g, labels)):
        for other in (o for o in istio if o.kind == "Gateway" and _selected(o, labels)):
            for port in sorted(_ports(gw) & _ports(other)):
                notices.append(f"{gw.file}: port {port} is bound by Gateway API Gateway {gw.namespace}/"
                               f"{gw.name.removesuffix('.' + kinds.GROUP)} and by Istio Gateway {other.namespace}/"
                               f"{other.name} ({other.file}): both APIs' routes share that listener")
    return notices


# HTTPRoutes -------------------------------------------------------------------------------------------


def _http_virtual_services(res: Resolution) -> list[RawObject]:
    # (gateway ref or "mesh", host) → [(sort key, route, rule, match, listener port)]
    groups: dict[tuple[str, str], list[tuple[Any, Route, int, int, dict[str, Any], int | None]]] = {}
    for route in res.routes:
        if route.obj.kind != kinds.HTTP_ROUTE:
            continue
        matches = route_matches(route.obj.spec)
        for parent in route.parents:
            if not parent.accepted.status:
                continue
            targets: list[tuple[str, str, int | None]] = []
            if parent.service:
                targets.append(("mesh", parent.service, parent.service_port))
            for li, hosts in parent.listeners:
                if li.protocol in ENFORCED_PROTOCOLS:
                    targets += [(gateway_ref(li.gateway.namespace, li.gateway.name), h, li.port) for h in hosts]
            for where, host, port in targets:
                entries = groups.setdefault((where, host), [])
                for r, m, match in matches:
                    entries.append(((match_key(match), route.age_key(), r, m), route, r, m, match, port))
    out = []
    for (where, host), entries in sorted(groups.items()):
        entries.sort(key=lambda e: e[0])
        rules = [rule for _, route, r, m, match, port in entries for rule in _http_rules(route, r, m, match, port)]
        if where == "mesh" and all(port is not None for *_, port in entries):
            # routes for some ports only (a parent's port or sectionName): the service's other ports keep
            # their default route, as each port has its own route table in a sidecar
            covered = {port for *_, port in entries}
            rules += [{"name": f"default/{host}:{p}", "match": [{"port": p}],
                       "route": [{"destination": {"host": host, "port": {"number": p}}}]}
                      for p in res.service_ports(host) if p not in covered]
        first = entries[0][1].obj
        gateway = where.split("/", 1)[-1].removesuffix(f".{kinds.GROUP}")
        name = f"httproute.{host}" if where == "mesh" else f"httproute.{gateway}.{host}"
        spec = {"hosts": [host], "gateways": [where], "http": rules}
        out.append(_generated(first, "VirtualService", name, spec))
    return out


def _http_rules(route: Route, r: int, m: int, match: dict[str, Any], port: int | None) -> list[dict[str, Any]]:
    """The VirtualService rule(s) for one match: two when a path prefix is rewritten, since the exact
    path and the paths below it keep different remainders."""
    rule = _http_rule(route, r, m, match, port)
    if not rule.pop("prefixRewrite", False):
        return [rule]
    new = rule["rewrite"].pop("uri")
    blocks = rule["match"]
    if len(blocks) == 1 and "uri" not in blocks[0]:  # the prefix "/": every path keeps its remainder
        rule["rewrite"]["uriRegexRewrite"] = {"match": "^/", "rewrite": new.rstrip("/") + "/"}
        return [rule]
    exact = {**rule, "match": [blocks[0]], "rewrite": {**rule["rewrite"], "uri": new}}
    below = {**rule, "match": [blocks[1]], "rewrite": {**rule["rewrite"], "uri": new.rstrip("/") + "/"}}
    return [exact, below]


def _http_rule(route: Route, r: int, m: int, match: dict[str, Any], port: int | None) -> dict[str, Any]:
    obj = route.obj
    rule = as_dict(as_list(obj.spec.get("rules"))[r])
    out: dict[str, Any] = {"name": f"{obj.namespace}/{obj.name}#rules[{r}].matches[{m}]",
                           "match": _match_blocks(match, port)}
    out.update(http_filters(as_list(rule.get("filters"))))
    timeout = _timeout(as_dict(rule.get("timeouts")))
    if timeout is not None:
        out["timeout"] = timeout
    if "redirect" in out:
        return out
    refs = as_list(rule.get("backendRefs"))
    backends = [(route.backends[(r, b)], as_dict(ref)) for b, ref in enumerate(refs) if (r, b) in route.backends]
    total = sum(max(b.weight, 0) for b, _ in backends)
    valid = [(b, ref) for b, ref in backends if not b.reason and b.weight > 0]
    if not valid or total == 0:
        out["directResponse"] = {"status": 500}
        return out
    out["route"] = [_destination(b, ref) for b, ref in valid]
    lost = total - sum(b.weight for b, _ in valid)
    if lost:
        out["fault"] = {"abort": {"httpStatus": 500, "percentage": {"value": 100.0 * lost / total}}}
    return out


def _timeout(timeouts: dict[str, Any]) -> str | None:
    """The route timeout: the shorter of `request` and `backendRequest` (one upstream attempt here, since
    only failed connects are retried); a zero duration disables one, as the spec says."""
    values = []
    for key in ("request", "backendRequest"):
        text = timeouts.get(key)
        if isinstance(text, str) and parse_duration(text):
            values.append((parse_duration(text), text))
    return min(values)[1] if values else None


def _destination(backend: Backend, ref: dict[str, Any]) -> dict[str, Any]:
    dest: dict[str, Any] = {"host": backend.host}
    if backend.port is not None:
        dest["port"] = {"number": backend.port}
    out: dict[str, Any] = {"destination": dest, "weight": backend.weight}
    headers = http_filters(as_list(ref.get("filters"))).get("headers")
    if headers:
        out["headers"] = headers
    return out


def _match_blocks(match: dict[str, Any], port: int | None) -> list[dict[str, Any]]:
    """VirtualService match blocks (OR'd) for one HTTPRouteMatch."""
    base: dict[str, Any] = {}
    if port is not None:
        base["port"] = port
    if isinstance(match.get("method"), str):
        base["method"] = {"exact": match["method"]}
    headers: dict[str, Any] = {}
    for h in as_list(match.get("headers")):
        h = as_dict(h)
        kind = "regex" if h.get("type") == "RegularExpression" else "exact"
        headers.setdefault(as_str(h.get("name")).lower(), {kind: as_str(h.get("value"))})  # first one wins
    if headers:
        base["headers"] = headers
    params: dict[str, Any] = {}
    for q in as_list(match.get("queryParams")):
        q = as_dict(q)
        kind = "regex" if q.get("type") == "RegularExpression" else "exact"
        params.setdefault(as_str(q.get("name")), {kind: as_str(q.get("value"))})
    if params:
        base["queryParams"] = params
    path = as_dict(match.get("path")) if "path" in match else {}
    kind, value = as_str(path.get("type"), "PathPrefix"), as_str(path.get("value"), "/")
    if kind == "Exact":
        return [{**base, "uri": {"exact": value}}]
    if kind == "RegularExpression":
        return [{**base, "uri": {"regex": value}}]
    value = value.rstrip("/")
    if not value:
        return [base]
    # a path prefix matches whole path segments: /foo matches /foo and /foo/bar, not /foobar
    return [{**base, "uri": {"exact": value}}, {**base, "uri": {"prefix": value + "/"}}]


# TCPRoutes --------------------------------------------------------------------------------------------


def _tcp_virtual_services(res: Resolution) -> list[RawObject]:
    out = []
    for route in res.routes:
        if route.obj.kind != kinds.TCP_ROUTE:
            continue
        obj = route.obj
        rules = [as_dict(rule) for rule in as_list(obj.spec.get("rules"))]
        for parent in route.parents:
            if not parent.accepted.status:
                continue
            if parent.service:
                where, hosts, ports = "mesh", [parent.service], [parent.service_port]
            else:
                gws = {gateway_ref(li.gateway.namespace, li.gateway.name) for li, _ in parent.listeners}
                if len(gws) != 1:
                    continue
                where, hosts, ports = gws.pop(), ["*"], [li.port for li, _ in parent.listeners]
            tcp = []
            for r, rule in enumerate(rules[:1]):  # TCPRoute: one rule (more is undefined without SNI)
                backends = [route.backends[(r, b)] for b in range(len(as_list(rule.get("backendRefs"))))]
                routes = [{"destination": {"host": b.host, **({"port": {"number": b.port}} if b.port else {})},
                           "weight": max(b.weight, 0)} for b in backends]
                if len(routes) > 1:
                    routes = [x for x in routes if x["weight"] > 0] or [
                        {"destination": {"host": "no-backend.invalid"}}]  # all weights 0: refused (NC)
                match = [{"port": p} for p in ports if p is not None]
                tcp.append({"match": match, "route": routes} if match else {"route": routes})
            if tcp:
                name = f"tcproute.{obj.name}.{parent.index}"
                out.append(_generated(obj, "VirtualService", name, {"hosts": hosts, "gateways": [where],
                                                                     "tcp": tcp}))
    return out
