"""Inbound capture: connections redirected to the sidecar's inbound port are relayed to the address the
client dialled (the local application), as Istio's inbound passthrough does.

The proxy's connection to the application is made as the proxy's uid, which the capture rules skip,
so it is not redirected again. Metrics use cluster `inbound|PORT||` and reporter="destination", with the
local service's labels when a ServiceEntry lists the address and port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.capture.original_dst import original_dst
from proxy.l4.relay import TcpDownstream
from proxy.routing.snapshot import (
    Cluster,
    Destination,
    Endpoint,
    ServiceInfo,
    Snapshot,
    TcpRoute,
    WeightedDestinations,
)

if TYPE_CHECKING:
    from proxy.state import ServerState

INBOUND_LISTENER = "inbound_capture"
PASSTHROUGH_SERVICE = ServiceInfo("InboundPassthroughCluster", "InboundPassthroughCluster", "unknown")


class InboundTcpDownstream(TcpDownstream):
    __slots__ = ("original",)

    def __init__(self, listener_name: str, state: ServerState) -> None:
        super().__init__(listener_name, state)
        self.original: tuple[str, int] | None = None

    def find_route(self, snapshot: Snapshot) -> TcpRoute | None:
        """The local application at the original destination; None (NR) for a connection that was not
        redirected here (it has no destination to relay to)."""
        if self.original is None:
            transport = self.transport
            sock = transport.get_extra_info("socket") if transport is not None else None
            original = original_dst(sock) if sock is not None else None
            local = transport.get_extra_info("sockname") if transport is not None else None
            if original is None or (local and original == (local[0], local[1])):
                return None
            self.original = original
        address, port = self.original
        service = PASSTHROUGH_SERVICE
        table = snapshot.capture
        target = table.lookup(address, port) if table is not None else None
        if target is not None:
            service = snapshot.services.get(target.service, service)
        name = f"inbound|{port}||"
        cluster = Cluster(name, service, port, "", ())
        return TcpRoute(name, "", (), WeightedDestinations((Destination(name, cluster, 100),), (100,)))

    def choose_endpoint(self, cluster: Cluster) -> Endpoint | None:
        return Endpoint(*self.original) if self.original is not None else None
