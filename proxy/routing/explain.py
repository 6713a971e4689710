"""Explain routing: which listener, virtual host, rule and destinations a request or connection would get.

Answers "which version would *this* request reach, and why" against a compiled Snapshot, with the same
lookups the data plane makes (route table `find`, first matching rule, weighted destinations), plus the
reason every earlier rule did not match. Pure functions returning plain dicts (the admin API's JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from proxy.routing.match import RequestView, split_authority
from proxy.routing.snapshot import (
    Cluster,
    Destination,
    DirectResponse,
    HttpListener,
    HttpRoute,
    Redirect,
    Snapshot,
    TcpListener,
    TcpRoute,
    WeightedDestinations,
)

MESH_HTTP = "mesh_http"


class ExplainError(ValueError):
    """The question cannot be answered as asked (unknown listener, bad parameter)."""


def find_listener(snapshot: Snapshot, name: str | None = None,
                  port: int | None = None) -> HttpListener | TcpListener:
    """By name, else by port, else the sidecar HTTP listener (or the only HTTP listener)."""
    listeners: list[HttpListener | TcpListener] = [*snapshot.http_listeners.values(),
                                                   *snapshot.tcp_listeners.values()]
    if name:
        found = snapshot.http_listeners.get(name) or snapshot.tcp_listeners.get(name)
        if found is None:
            raise ExplainError(f"no listener named {name!r}; listeners: {_names(listeners)}")
        return found
    if port is not None:
        by_port = [li for li in listeners if li.port == port]
        if not by_port:
            raise ExplainError(f"no listener on port {port}; listeners: {_names(listeners)}")
        return by_port[0]
    if MESH_HTTP in snapshot.http_listeners:
        return snapshot.http_listeners[MESH_HTTP]
    if len(snapshot.http_listeners) == 1:
        return next(iter(snapshot.http_listeners.values()))
    raise ExplainError(f"say which listener (--listener NAME or --port N); listeners: {_names(listeners)}")


def _names(listeners: list[HttpListener | TcpListener]) -> str:
    return ", ".join(f"{li.name} ({li.address}:{li.port})" for li in listeners) or "none"


def request_view(listener: HttpListener, authority: str, path: str, method: str,
                 headers: Mapping[str, str], scheme: str = "http") -> RequestView:
    """The RequestView the listener would build: path without query, authority as sent (port included,
    as Istio matches it), lower-case names.

    On a gateway the port is the listener's; on the sidecar it is the one the client addressed (the
    service port in the authority, 80 when absent), since a sidecar listener serves every service port.
    """
    raw_path, _, query_string = path.partition("?")
    query: dict[str, str] = {}
    for key, value in parse_qsl(query_string.partition("#")[0], keep_blank_values=True):
        query.setdefault(key, value)  # the first occurrence wins, as in Envoy
    port = split_authority(authority)[1]
    return RequestView(method.upper(), raw_path.partition("#")[0] or "/", query, authority.lower(), scheme,
                       {k.lower(): v for k, v in headers.items()}, listener.match_port(port))


# HTTP -----------------------------------------------------------------------------------------------


def explain_http(snapshot: Snapshot, listener: HttpListener, authority: str, path: str = "/",
                 method: str = "GET", headers: Mapping[str, str] | None = None,
                 scheme: str = "http") -> dict[str, Any]:
    req = request_view(listener, authority, path, method, headers or {}, scheme)
    out: dict[str, Any] = {
        "config_version": snapshot.version,
        "listener": _listener(listener),
        "request": {"method": req.method, "authority": authority, "path": path, "headers": dict(req.headers),
                    "port": req.port},
    }
    vh = listener.route_table.find(authority)
    if vh is None:
        out["virtual_host"] = None
        out["result"] = {"status": 404, "flags": "NR",
                         "reason": f"no VirtualService or service on listener {listener.name} serves "
                                   f"{authority!r}",
                         "known_hosts": _known_hosts(listener)}
        return out
    virtual_service = next((r.virtual_service for r in vh.routes if r.virtual_service), "")
    out["virtual_host"] = {"name": vh.name, "domains": sorted(d for d in vh.domains if ":" not in d),
                           "virtual_service": virtual_service or None}
    rules: list[dict[str, Any]] = []
    out["rules"] = rules
    for route in vh.routes:
        entry, matched = _evaluate(route, req)
        rules.append(entry)
        if matched:
            out["route"] = _action(route)
            out["result"] = _result(route)
            return out
    out["route"] = None
    out["result"] = {"status": 404, "flags": "NR",
                     "reason": f"no rule of {virtual_service or vh.name} matches this request"}
    return out


def explain_http_everywhere(snapshot: Snapshot, listener: HttpListener | None, authority: str, path: str = "/",
                            method: str = "GET", headers: Mapping[str, str] | None = None,
                            scheme: str = "http") -> dict[str, Any]:
    """Explain on `listener`, or (None) on the HTTP listener that routes the request, and say in
    `other_listeners` what every other HTTP listener of this proxy would do with it.

    Without a listener the first that routes it wins, the sidecar's before a gateway's; when none does, the
    sidecar's answer (or the first gateway's) says why."""
    candidates = sorted(snapshot.http_listeners.values(), key=lambda li: (li.role != "mesh", li.port, li.name))
    if not candidates:
        raise ExplainError(f"this proxy has no HTTP listener; listeners: "
                           f"{_names([*snapshot.tcp_listeners.values()])}")
    answers = {li.name: explain_http(snapshot, li, authority, path, method, headers, scheme) for li in candidates}
    if listener is not None:
        primary = answers[listener.name]
    else:
        primary = min(answers.values(), key=lambda a: not routes(a))  # the first that routes, else the first
    primary["other_listeners"] = [verdict(a) for a in answers.values() if a is not primary]
    return primary


def routes(answer: Mapping[str, Any]) -> bool:
    """Whether the request (or connection) of this answer gets a route: destinations, redirect or direct
    response, not a 404 NR or a closed connection."""
    return answer.get("route") is not None


def verdict(answer: Mapping[str, Any]) -> dict[str, Any]:
    """One line of an answer for the listing of other listeners: which listener, does it route, how."""
    if routes(answer):
        rule = next((r for r in answer.get("rules") or [] if r.get("matched")), {})
        by = f"rule {rule.get('name')}" if rule.get("virtual_service") else "the default route"
        summary = f"routes it ({by})"
    else:
        result = answer.get("result") or {}
        status = f"{result['status']} {result.get('flags', '')}: " if result.get("status") else ""
        summary = f"{status}{result.get('reason', '')}"
    return {"listener": answer["listener"], "routes": routes(answer), "summary": summary}


def _evaluate(route: HttpRoute, req: RequestView) -> tuple[dict[str, Any], bool]:
    entry: dict[str, Any] = {"name": route.name, "virtual_service": route.virtual_service or None,
                             "index": route.rule_index}
    if not route.matches:
        entry.update(matched=True, why="the rule has no match conditions")
        return entry, True
    reasons = []
    for i, block in enumerate(route.matches):
        reason = block.mismatch(req)
        label = f"match[{i}]" + (f" ({block.name})" if block.name else "")
        if reason is None:
            entry.update(matched=True, why=f"{label} matches")
            return entry, True
        reasons.append(f"{label}: {reason}")
    entry.update(matched=False, reasons=reasons)
    return entry, False


def _action(route: HttpRoute) -> dict[str, Any]:
    action = route.action
    out: dict[str, Any] = {"name": route.name, "timeout": route.timeout}
    if route.rewrite is not None:
        rw = route.rewrite
        fields = (("uri", rw.uri), ("authority", rw.authority), ("regex_match", rw.regex_match),
                  ("regex_rewrite", rw.regex_rewrite))
        out["rewrite"] = {k: v for k, v in fields if v is not None}
    if route.mirrors:
        out["mirrors"] = [{"cluster": m.cluster_name, "percent": m.percent} for m in route.mirrors]
    if route.cors is not None:
        out["cors"] = {"allow_origins": [m.describe() for m in route.cors.allow_origins],
                       "unmatched_preflights": "FORWARD" if route.cors.forward_unmatched_preflights else "IGNORE"}
    if route.fault is not None:  # applied before the destination is picked
        f = route.fault
        out["fault"] = {"delay_seconds": f.delay_seconds, "delay_percent": f.delay_percent,
                        "abort_status": f.abort_status, "abort_percent": f.abort_percent}
    if isinstance(action, Redirect):
        out["redirect"] = {"code": action.code, "uri": action.uri, "authority": action.authority,
                           "scheme": action.scheme, "port": action.port, "prefix_rewrite": action.prefix_rewrite,
                           "derive_port": action.derive_port}
    elif isinstance(action, DirectResponse):
        out["direct_response"] = {"status": action.status, "body_bytes": len(action.body)}
    else:
        out["destinations"] = destinations(action)
    return out


def _result(route: HttpRoute) -> dict[str, Any]:
    action = route.action
    if isinstance(action, Redirect):
        return {"status": action.code, "reason": "redirect"}
    if isinstance(action, DirectResponse):
        return {"status": action.status, "reason": "direct response"}
    return {"status": None, "reason": "routed: each request picks one destination with the probability shown"}


def destinations(action: WeightedDestinations) -> list[dict[str, Any]]:
    """Each destination with its probability, cluster and endpoints, and what goes wrong there if anything.
    A destination with no endpoints gives its share to the others unless the route keeps Istio's 503 UH
    (proxy.upstream.shift): then `effective_probability` says what each really gets."""
    out = []
    moves = len(action.destinations) > 1 and not action.empty_fail
    live = sum(d.weight for d in action.destinations if d.cluster is not None and d.cluster.endpoints)
    for dest, probability in action.shares():
        entry = {"cluster": dest.cluster_name, "weight": dest.weight, "probability": probability, **_cluster(dest)}
        if moves and "problem" in entry:
            entry["problem"] = entry["problem"].rsplit(": requests get", 1)[0] + \
                ": its share goes to the other destinations (flag ED)"
        if moves and live and live != sum(d.weight for d in action.destinations):
            empty = dest.cluster is None or not dest.cluster.endpoints
            entry["effective_probability"] = 0.0 if empty else dest.weight / live
        if action.sticky is not None:
            entry["sticky"] = action.sticky.describe
        out.append(entry)
    return out


def _cluster(dest: Destination) -> dict[str, Any]:
    _, port, subset, host = (dest.cluster_name.split("|", 3) + ["", "", "", ""])[:4]
    cluster: Cluster | None = dest.cluster
    info: dict[str, Any] = {"host": host, "port": int(port) if port.isdigit() else None,
                            "subset": subset or None}
    if cluster is None:
        if subset:
            info["problem"] = (f"subset {subset!r} of {host} is not defined by a DestinationRule (or the "
                               "service has no such port): requests get 503 NC")
        else:
            info["problem"] = f"{host} is not a known service (no ServiceEntry): requests get 503 NC"
        info["endpoints"] = []
        return info
    info["endpoints"] = [{"address": e.address, "port": e.port, "version": e.version, "workload": e.workload,
                          "labels": dict(e.labels)} for e in cluster.endpoints]
    info["lb_policy"] = cluster.lb_policy
    hashing = cluster.hash_policy
    if hashing is not None:
        key = (f"header {hashing.header}" if hashing.header else f"cookie {hashing.cookie}" if hashing.cookie
               else "source IP" if hashing.source_ip else f"query parameter {hashing.query_parameter}")
        info["lb_policy"] = "MAGLEV" if hashing.table == "maglev" else "RING_HASH"
        info["hash_key"] = key
    if not cluster.endpoints:
        info["problem"] = "no endpoint has the subset's labels: requests get 503 UH"
    return info


def _listener(listener: HttpListener | TcpListener) -> dict[str, Any]:
    protocol = "http" if isinstance(listener, HttpListener) else "tcp"
    return {"name": listener.name, "protocol": protocol, "role": listener.role, "address": listener.address,
            "port": listener.port}


def _known_hosts(listener: HttpListener, limit: int = 20) -> list[str]:
    """The shortest name of each virtual host (`reviews`, not its every alias), and wildcard hosts."""
    table = listener.route_table
    names: dict[int, str] = {}
    for domain, vh in table.exact.items():
        if ":" not in domain and (id(vh) not in names or len(domain) < len(names[id(vh)])):
            names[id(vh)] = domain
    hosts = sorted(set(names.values())) + [f"*{suffix}" for suffix, _ in table.suffixes]
    return hosts[:limit]


# TCP ------------------------------------------------------------------------------------------------


def explain_tcp(snapshot: Snapshot, listener: TcpListener,
                destination_ip: str | None = None, sni: str | None = None) -> dict[str, Any]:
    """Which route a new connection to `listener` takes; `destination_ip` defaults to the listener's.
    On a listener with tls routes, `sni` is the server name of the connection's ClientHello."""
    ip = destination_ip or ("127.0.0.1" if listener.address in ("0.0.0.0", "") else listener.address)
    out: dict[str, Any] = {"config_version": snapshot.version, "listener": _listener(listener),
                           "connection": {"port": listener.port, "destination_ip": ip}}
    if sni:
        out["connection"]["sni"] = sni.lower()
    rules: list[dict[str, Any]] = []
    out["rules"] = rules
    for index, sni_route in enumerate(listener.sni_routes):  # tls rules, by the ClientHello's SNI, first
        route = sni_route.route
        by_name = bool(sni) and sni_route.matches_sni(sni or "")
        matched = by_name and route.matches_connection(listener.port, ip)
        entry = {"name": route.name, "virtual_service": route.virtual_service or None, "index": index,
                 "matched": matched, "kind": "tls"}
        if matched:
            entry["why"] = f"SNI {sni} is in sniHosts {', '.join(sni_route.sni_hosts)}"
            rules.append(entry)
            out["route"] = _tcp_action(route)
            out["result"] = {"reason": "routed by SNI, not terminated: each new connection picks one destination "
                                       "with the probability shown, and keeps it"}
            return out
        entry["reasons"] = [("no SNI given (--sni NAME)" if not sni else
                             f"SNI {sni} is not in sniHosts {', '.join(sni_route.sni_hosts)}") if not by_name
                            else _tcp_reason(route, ip)]
        rules.append(entry)
    for index, route in enumerate(listener.routes, len(listener.sni_routes)):
        matched = route.matches_connection(listener.port, ip)
        entry: dict[str, Any] = {"name": route.name, "virtual_service": route.virtual_service or None,
                                 "index": index, "matched": matched}
        if matched:
            entry["why"] = ("the rule has no match conditions" if not route.matches
                            else "destinationSubnets match")
            rules.append(entry)
            out["route"] = _tcp_action(route)
            out["result"] = {"reason": "routed: each new connection picks one destination with the "
                                       "probability shown, and keeps it"}
            return out
        entry["reasons"] = [_tcp_reason(route, ip)]
        rules.append(entry)
    out["route"] = None
    out["result"] = {"reason": f"no rule on listener {listener.name} matches: the connection is closed"}
    return out


def _tcp_action(route: TcpRoute) -> dict[str, Any]:
    out: dict[str, Any] = {"name": route.name, "destinations": destinations(route.destinations)}
    if route.drain_on_shift is not None:
        out["drain_on_shift_seconds"] = route.drain_on_shift
    return out


def _tcp_reason(route: TcpRoute, ip: str) -> str:
    subnets = sorted({str(n) for m in route.matches for n in m.destination_subnets})
    return f"destination {ip} is not in destinationSubnets {', '.join(subnets)}"
