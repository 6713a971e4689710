"""Compile the capture table from the service registry and the sidecar's routes (no I/O).

Each service port is reachable at the service's ServiceEntry `addresses` (its VIPs; a CIDR matches
every address in it) and at each endpoint's IP address. VIPs are claimed before endpoint addresses and
the first service to claim an (address, port) keeps it. The protocol of a port is its declared one (the
`protocol` field or an Istio port-name prefix such as `http-` or `tcp-`); a port that declares none is
sniffed, as Istio's protocol detection does.

HTTP routing of a redirected connection uses the sidecar's mesh route table (so a Host header naming
any mesh service is routed to it, as on Istio's per-port listener), falling back to the routes of the
service whose address was dialled when the Host names nothing known (e.g. `Host: 10.0.0.7:9080`).
TCP routing uses the service's mesh `tcp` routes for that port, then its default route.

A destination in no service, on a port where some service speaks HTTP, is routed by the Host of its
first request when that names a mesh host (Istio's per-port route table matches by Host whatever the
address), else it is unknown (PassthroughCluster or BlackHoleCluster).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping

from proxy.capture.table import CaptureHttpListener, CaptureTable, CaptureTarget, Network, OutboundPolicy, Protocol
from proxy.config.registry import HTTP_PROTOCOLS, Service, ServicePort
from proxy.routing.snapshot import (
    Cluster,
    Destination,
    HttpListener,
    HttpRoute,
    RouteTable,
    TcpListener,
    TcpRoute,
    VirtualHost,
    WeightedDestinations,
    cluster_name,
)

KNOWN_PREFIXES = HTTP_PROTOCOLS | {"TCP", "TLS", "HTTPS", "MONGO", "REDIS", "MYSQL"}
TcpRoutes = Callable[[Service, ServicePort], list[TcpRoute]]


def declared(service: Service, port: ServicePort) -> bool:
    """Whether the ServiceEntry states the port's protocol (field or name prefix)."""
    source = service.source
    spec_ports = (source.spec.get("ports") or []) if source is not None else []
    raw = next((p for p in spec_ports if int(p.get("number") or 0) == port.number), None)
    if raw is None or raw.get("protocol"):
        return True
    return str(raw.get("name", "")).split("-", 1)[0].upper() in KNOWN_PREFIXES


def protocol_of(service: Service, port: ServicePort) -> Protocol:
    if port.is_http:
        return "http"
    return "tcp" if declared(service, port) else "sniff"


def _addresses(service: Service) -> tuple[list[str], list[Network]]:
    """The service's VIPs: single addresses, and networks for CIDRs."""
    source = service.source
    single: list[str] = []
    networks: list[Network] = []
    for text in (source.spec.get("addresses") or []) if source is not None else []:
        try:
            network = ipaddress.ip_network(str(text), strict=False)
        except ValueError:
            continue  # validation reports it
        if network.num_addresses == 1:
            single.append(str(network.network_address))
        else:
            networks.append(network)
    return single, networks


def _endpoint_addresses(service: Service) -> list[str]:
    out = []
    for address, *_ in service.workloads:
        try:
            out.append(str(ipaddress.ip_address(address)))
        except ValueError:
            continue  # a DNS name or a unix socket: not something a connection is redirected from
    return out


def build_capture_table(registry: Mapping[str, Service], mesh: HttpListener | None,
                        clusters: Mapping[str, Cluster], tcp_routes: TcpRoutes,
                        policy: OutboundPolicy, inbound: tuple[str, int] = ("0.0.0.0", 0)
                        ) -> tuple[CaptureTable, list[str]]:
    """The table and notices (addresses claimed by two services)."""
    notices: list[str] = []
    targets: dict[tuple[str, int], CaptureTarget] = {}
    owners: dict[tuple[str, int], Service] = {}
    networks: list[tuple[Network, int, CaptureTarget]] = []
    by_service: dict[str, list[CaptureTarget]] = {}
    for service in registry.values():
        vips, nets = _addresses(service)
        first = vips[0] if vips else ""
        built = by_service[service.fqdn] = [_target(service, port, first, mesh, clusters, tcp_routes)
                                           for port in service.ports]
        for target in built:
            for vip in vips:
                _claim(targets, owners, (vip, target.port), target, service, notices)
            networks += [(net, target.port, target) for net in nets]
    for service in registry.values():  # endpoint addresses after every VIP
        for address in _endpoint_addresses(service):
            for target in by_service[service.fqdn]:
                _claim(targets, owners, (address, target.port), target, service, notices)
    table = mesh.route_table if mesh is not None else RouteTable({})
    by_host = RouteTable(table.exact, table.suffixes, None)
    http_ports = {port.number: CaptureHttpListener(f"capture_http|{port.number}", "", port.number, "mesh", by_host)
                  for service in registry.values() for port in service.ports if port.is_http}
    return CaptureTable(targets, tuple(networks), policy, http_ports=http_ports, inbound=inbound), notices


def _claim(targets: dict[tuple[str, int], CaptureTarget], owners: dict[tuple[str, int], Service],
           key: tuple[str, int], target: CaptureTarget, service: Service, notices: list[str]) -> None:
    owner = owners.get(key)
    if owner is None:
        targets[key] = target
        owners[key] = service
    elif owner is not service and owner.source is not service.source:
        notices.append(f"capture: {key[0]}:{key[1]} belongs to {owner.fqdn}; {service.fqdn} does not get "
                       "connections redirected from it")


def _target(service: Service, port: ServicePort, address: str, mesh: HttpListener | None,
            clusters: Mapping[str, Cluster], tcp_routes: TcpRoutes) -> CaptureTarget:
    protocol = protocol_of(service, port)
    http = tcp = None
    if protocol != "tcp":
        http = CaptureHttpListener(f"capture_http|{port.number}|{service.fqdn}", address, port.number, "mesh",
                                   _route_table(service, port, mesh, clusters))
    if protocol != "http":
        tcp = TcpListener(f"capture_tcp|{port.number}|{service.fqdn}", address, port.number, "mesh",
                          tuple(tcp_routes(service, port)))
    return CaptureTarget(service.fqdn, port.number, protocol, http, tcp)


def _route_table(service: Service, port: ServicePort, mesh: HttpListener | None,
                 clusters: Mapping[str, Cluster]) -> RouteTable:
    table = mesh.route_table if mesh is not None else RouteTable({})
    own = table.exact.get(f"{service.fqdn}:{port.number}")
    if own is None:  # no VirtualService and no default HTTP route (the port is sniffed): all endpoints
        name = cluster_name(port.number, "", service.fqdn)
        route = HttpRoute(f"default/{service.fqdn}:{port.number}", "", 0, (),
                          WeightedDestinations((Destination(name, clusters.get(name), 100),), (100,)))
        own = VirtualHost(f"default:{service.fqdn}:{port.number}", (service.fqdn,), (route,), False)
    return RouteTable(table.exact, table.suffixes, own)
