"""VirtualService rules: hosts, gateways, delegation, and the TCP and TLS routes. HTTP routes are
checked in `http_route.py`, rules that can never match in `unreachable.py`."""

from __future__ import annotations

from proxy.config.hosts import check_wildcard_domain, host_matches, host_subset_of, is_ip
from proxy.config.load import RawObject
from proxy.config.schema import Msg, Report
from proxy.config.validate.common import (
    _JWT_CLAIM_PREFIX,
    MESH,
    _export_to,
    _gateway_names,
    _ip_subnet_problem,
    _labels,
    _msgs,
    _port,
    _route_destinations,
)
from proxy.config.validate.http_route import _http_route
from proxy.config.validate.unreachable import _analyze_unreachable


def _virtual_service(r: Report, vs: Msg, obj: RawObject) -> None:
    hosts = vs.get("hosts") or []
    gateways = [g for g in vs.get("gateways") or [] if isinstance(g, str)]
    is_delegate = not hosts and "hosts" not in vs.bad
    if is_delegate:
        for name in ("gateways", "tls", "tcp"):
            if vs.get(name):
                what = "gateways specified" if name == "gateways" else f"{name} route specified"
                r.error(vs.at(name), f"delegate virtual service must have no {what}")
    applies_to_gateway = bool(gateways) and MESH not in gateways
    applies_to_mesh = not applies_to_gateway
    _gateway_names(r, vs)
    if applies_to_mesh:
        for rule in _msgs(vs.get("http")):
            for match in _msgs(rule.get("match")):
                for name in ("headers", "withoutHeaders"):
                    for key in match.get(name) or {}:
                        if key.startswith(_JWT_CLAIM_PREFIX):
                            r.error(match.at(name, key), f"JWT claim based routing (key: {key}) is only "
                                                         f"supported for gateway, found no gateways: {gateways}")
    all_valid = True
    for k, host in enumerate(hosts):
        if not isinstance(host, str):
            all_valid = False
            continue
        problem = check_wildcard_domain(host)
        if problem and not is_ip(host):
            r.error(vs.at("hosts", k), problem)
            all_valid = False
        elif applies_to_mesh and host == "*":
            r.error(vs.at("hosts", k), "wildcard host * is not allowed for virtual services bound to the mesh "
                                       "gateway")
            all_valid = False
    if all_valid:
        for i in range(len(hosts)):
            for j in range(i + 1, len(hosts)):
                if host_matches(hosts[i], hosts[j]):
                    r.error(vs.at("hosts", j), f"duplicate hosts in virtual service: {hosts[i]} & {hosts[j]}")
    if not any(vs.get(name) or name in vs.bad for name in ("http", "tcp", "tls")):
        r.error(vs.path, "http, tcp or tls must be provided in virtual service")
    for rule in _msgs(vs.get("http")):
        _http_route(r, rule, is_delegate)
    for route in _msgs(vs.get("tls")):
        _tls_route(r, route, [h for h in hosts if isinstance(h, str)])
    for route in _msgs(vs.get("tcp")):
        _tcp_route(r, route)
    _export_to(r, vs, obj.namespace)
    _analyze_unreachable(r, vs, "http")
    _analyze_unreachable(r, vs, "tcp")
    _analyze_unreachable(r, vs, "tls")


def _l4_match(r: Report, match: Msg) -> None:
    for k, subnet in enumerate(match.get("destinationSubnets") or []):
        if isinstance(subnet, str) and (problem := _ip_subnet_problem(subnet)):
            r.error(match.at("destinationSubnets", k), problem)
    if match.get("port"):
        _port(r, match.at("port"), match["port"])
    _labels(r, match, "sourceLabels")
    _gateway_names(r, match)


def _tcp_route(r: Report, route: Msg) -> None:
    for match in _msgs(route.get("match")):
        _l4_match(r, match)
    if not route.get("route") and "route" not in route.bad:
        r.error(route.at("route"), "TCP route is required")
    _route_destinations(r, route, http=False)


def _tls_route(r: Report, route: Msg, vs_hosts: list[str]) -> None:
    if not route.get("match") and "match" not in route.bad:
        r.error(route.at("match"), "TLS route must have at least one match condition")
    for match in _msgs(route.get("match")):
        sni_hosts = match.get("sniHosts") or []
        if not sni_hosts and "sniHosts" not in match.bad:
            r.error(match.at("sniHosts"), "TLS match must have at least one SNI host")
        for k, sni in enumerate(sni_hosts):
            if not isinstance(sni, str):
                continue
            if problem := check_wildcard_domain(sni):
                if is_ip(sni):
                    r.warn(match.at("sniHosts", k), f"using an IP address ({sni!r}) goes against SNI spec and "
                                                    "most clients do not support this")
                else:
                    r.error(match.at("sniHosts", k), problem)
            elif not any(host_subset_of(sni, h) for h in vs_hosts):
                r.error(match.at("sniHosts", k), f"SNI host {sni!r} is not a compatible subset of any of the "
                                                 f"virtual service hosts: [{', '.join(vs_hosts)}]")
        _l4_match(r, match)
    if not route.get("route") and "route" not in route.bad:
        r.error(route.at("route"), "TLS route is required")
    _route_destinations(r, route, http=False)
