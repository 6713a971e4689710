"""The capture table: original destination (address, port) → what the connection is. Part of the snapshot.

Compiled once per config (`proxy.capture.compile`); looked up once per redirected connection. No I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from proxy.routing.snapshot import (
    Cluster,
    Destination,
    HttpListener,
    ServiceInfo,
    TcpListener,
    TcpRoute,
    WeightedDestinations,
)

PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
Protocol = Literal["http", "tcp", "sniff"]  # sniff: the port declares no protocol (Istio's detection)
OutboundPolicy = Literal["ALLOW_ANY", "REGISTRY_ONLY"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class CaptureHttpListener(HttpListener):
    """The HTTP routes for connections redirected to one service port. `match.port` is that port, as on
    Istio's per-port outbound listener, whatever the Host header says."""

    def match_port(self, authority_port: int | None) -> int:
        return self.port


@dataclass(frozen=True, slots=True)
class CaptureTarget:
    """One service port reached at one of its addresses."""

    service: str  # FQDN
    port: int
    protocol: Protocol
    http: CaptureHttpListener | None  # for "http" and "sniff"
    tcp: TcpListener | None  # for "tcp" and "sniff"


def special_cluster(name: str) -> Cluster:
    """PassthroughCluster (relays to the original destination) or BlackHoleCluster (no endpoint: UH)."""
    return Cluster(name, ServiceInfo(name, name, "unknown"), 0, "", ())


@dataclass(frozen=True, slots=True)
class CaptureTable:
    targets: Mapping[tuple[str, int], CaptureTarget]  # (address as ipaddress prints it, port)
    networks: tuple[tuple[Network, int, CaptureTarget], ...] = ()  # ServiceEntry addresses given as CIDRs
    policy: OutboundPolicy = "ALLOW_ANY"
    passthrough: Cluster = special_cluster(PASSTHROUGH)
    blackhole: Cluster = special_cluster(BLACKHOLE)
    # per port of some HTTP service: the mesh routes, for a destination in no service whose first request
    # names a mesh host (a Kubernetes ClusterIP no ServiceEntry lists, reached as `reviews:9080`)
    http_ports: Mapping[int, CaptureHttpListener] = field(default_factory=dict)
    inbound: tuple[str, int] = ("0.0.0.0", 0)  # address of the inbound capture listener; port 0: none
    # the one route of connections to no service: to `passthrough` or `blackhole` as the policy says
    unknown_route: TcpRoute = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        cluster = self.passthrough if self.policy == "ALLOW_ANY" else self.blackhole
        route = TcpRoute(cluster.name, "", (), WeightedDestinations((Destination(cluster.name, cluster, 100),),
                                                                      (100,)))
        object.__setattr__(self, "unknown_route", route)

    def lookup(self, address: str, port: int) -> CaptureTarget | None:
        target = self.targets.get((address, port))
        if target is None and self.networks:
            ip = ipaddress.ip_address(address)
            for network, number, candidate in self.networks:
                if number == port and ip in network:
                    return candidate
        return target
