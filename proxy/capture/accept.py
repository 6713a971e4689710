"""The sidecar's outbound listener with capture on: decide at accept time what each connection is.

A connection whose original destination is the listener's own address came to it directly
(`HTTP_PROXY` clients) and is an ordinary `HttpDownstream`. Any other was redirected by the capture
rules: its original destination is looked up in the snapshot's capture table and the connection is
handed to an HTTP downstream routed per request (`CapturedHttpDownstream`) or a TCP relay routed once
(`CapturedTcpDownstream`). A port without a declared protocol is sniffed first: the connection is
HTTP when its first bytes start an HTTP/1 request line, TCP otherwise (or when the client says
nothing for SNIFF_TIMEOUT: a server-first protocol). A destination in no service is HTTP-routed when
its port has HTTP services and its first request names a mesh host; otherwise it goes to
PassthroughCluster (the original destination itself, ALLOW_ANY) or BlackHoleCluster (refused,
REGISTRY_ONLY). The choice costs one getsockopt per connection, a dict lookup per request, nothing
per byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from proxy.capture.inbound import INBOUND_LISTENER, InboundTcpDownstream
from proxy.capture.original_dst import original_dst
from proxy.capture.table import PASSTHROUGH
from proxy.l4.relay import TcpDownstream
from proxy.l7.codec import MAX_REQUEST_HEAD
from proxy.l7.downstream import HttpDownstream
from proxy.l7.router import split_target
from proxy.routing.snapshot import Cluster, Endpoint, RouteTable, Snapshot, TcpRoute

if TYPE_CHECKING:
    from proxy.l7.exchange import Answer, Exchange
    from proxy.state import ServerState

MESH_LISTENER = "mesh_http"
# the listener name of captured HTTP connections: in no snapshot's http_listeners, so HttpDownstream
# routes each request on the `listener` CapturedHttpDownstream sets from the capture table
CAPTURED_HTTP = "capture_http"
SNIFF_TIMEOUT = 0.5  # seconds to wait for a client's first bytes on a port of unknown protocol
_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"TRACE ", b"CONNECT ")
_SNIFF_BYTES = max(map(len, _METHODS))


def sniff(data: bytes) -> str | None:
    """"http" or "tcp" for a connection's first bytes; None while they could still start either."""
    for method in _METHODS:
        if data.startswith(method):
            return "http"
    if len(data) < _SNIFF_BYTES and any(m.startswith(data) for m in _METHODS):
        return None
    return "tcp"


class CapturedHttpDownstream(HttpDownstream):
    """HTTP on a redirected connection: each request takes the capture table of the snapshot it reads."""

    __slots__ = ("original",)

    def __init__(self, listener_name: str, state: ServerState, original: tuple[str, int]) -> None:
        super().__init__(CAPTURED_HTTP, state)
        self.original = original

    def _start(self, ex: Exchange) -> None:
        table = self.state.snapshot.capture
        if table is not None:
            target = table.lookup(*self.original)
            listener = target.http if target is not None else table.http_ports.get(self.original[1])
            if listener is not None:
                self.listener = listener
        super()._start(ex)

    def _dispatch(self, ex: Exchange, answer: Answer | None) -> None:
        cluster = ex.cluster
        if answer is None and cluster is not None and cluster.lb_policy == "PASSTHROUGH":
            ex.endpoint = original_endpoint(cluster, self.original)  # routed; the balancer's pick is replaced
        super()._dispatch(ex, answer)


def original_endpoint(cluster: Cluster, original: tuple[str, int]) -> Endpoint:
    """The endpoint of a PASSTHROUGH cluster: the original destination itself, with the labels of the
    cluster's endpoint at that address when there is one (for metrics)."""
    address, port = original
    known = next((e for e in cluster.endpoints if e.address == address), None)
    return replace(known, port=port) if known is not None else Endpoint(address, port)


class CapturedTcpDownstream(TcpDownstream):
    """TCP on a redirected connection, routed by its original destination."""

    __slots__ = ("original",)

    def __init__(self, listener_name: str, state: ServerState, original: tuple[str, int]) -> None:
        super().__init__(listener_name, state)
        self.original = original

    def find_route(self, snapshot: Snapshot) -> TcpRoute | None:
        table = snapshot.capture
        if table is None:
            return None
        address, port = self.original
        target = table.lookup(address, port)
        if target is None or target.tcp is None:
            return table.unknown_route
        return target.tcp.route(address)

    def choose_endpoint(self, cluster: Cluster) -> Endpoint | None:
        if cluster.lb_policy == "PASSTHROUGH" or (not cluster.endpoints and cluster.name == PASSTHROUGH):
            return original_endpoint(cluster, self.original)
        return super().choose_endpoint(cluster)


class CaptureAccept(asyncio.Protocol):
    """Chooses a connection's protocol object, then steps aside (`transport.set_protocol`)."""

    __slots__ = ("listener_name", "state", "transport", "original", "buffer", "timer", "by_host")

    def __init__(self, listener_name: str, state: ServerState) -> None:
        self.listener_name = listener_name
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.original: tuple[str, int] = ("", 0)
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None
        # set for a destination in no service: HTTP only if the first request's Host is in these routes
        self.by_host: RouteTable | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        state = self.state
        sock = transport.get_extra_info("socket")
        original = original_dst(sock) if sock is not None else None
        table = state.snapshot.capture
        if original is None or table is None or original == _address(transport.get_extra_info("sockname")):
            self._hand_over(transport, HttpDownstream(self.listener_name, state))  # came here directly
            return
        target = table.lookup(*original)
        if target is None:
            by_port = table.http_ports.get(original[1])
            if by_port is None:
                self._hand_over(transport, CapturedTcpDownstream(self.listener_name, state, original))
                return
            self.by_host = by_port.route_table
        elif target.protocol == "tcp":
            self._hand_over(transport, CapturedTcpDownstream(self.listener_name, state, original))
            return
        elif target.protocol == "http":
            self._hand_over(transport, CapturedHttpDownstream(self.listener_name, state, original))
            return
        # sniff, or look for the Host: wait for the first bytes
        self.transport = transport  # type: ignore[assignment]
        self.original = original
        loop = state.loop or asyncio.get_running_loop()
        self.timer = loop.call_later(SNIFF_TIMEOUT, self._decide, "tcp")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        kind = self._classify(final=False)
        if kind is not None:
            self._decide(kind)

    def eof_received(self) -> bool | None:
        protocol = self._decide(self._classify(final=True) or "tcp")
        return protocol.eof_received() if protocol is not None else None

    def _classify(self, final: bool) -> str | None:
        """"http", "tcp", or None while more bytes are needed (never None when `final`)."""
        buffer = self.buffer
        kind = sniff(buffer) or ("tcp" if final else None)
        if kind == "http" and self.by_host is not None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0 and not final and len(buffer) <= MAX_REQUEST_HEAD:
                return None  # the head is not complete yet
            authority = first_authority(buffer[:end]) if end >= 0 else None
            if authority is None or self.by_host.find_host(authority) is None:
                kind = "tcp"  # a host the mesh does not know: the original destination's business
        return kind

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:  # the client left before saying anything we could route
            self.timer.cancel()
            self.timer = None

    def _decide(self, kind: str) -> asyncio.Protocol | None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None
        cls = CapturedHttpDownstream if kind == "http" else CapturedTcpDownstream
        protocol = cls(self.listener_name, self.state, self.original)
        self._hand_over(transport, protocol, self.buffer)
        self.buffer = b""
        return protocol

    @staticmethod
    def _hand_over(transport: asyncio.BaseTransport, protocol: asyncio.Protocol, data: bytes = b"") -> None:
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if data:
            protocol.data_received(data)


def first_authority(head: bytes) -> bytes | None:
    """The authority of a request head: an absolute-form target's, else the Host header's."""
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) == 3:
        authority, _ = split_target(parts[1])
        if authority is not None:
            return authority
    for header in rest.split(b"\r\n"):
        name, sep, value = header.partition(b":")
        if sep and name.strip().lower() == b"host":
            return value.strip()
    return None


def _address(sockname: Any) -> tuple[str, int] | None:
    return (sockname[0], sockname[1]) if sockname else None


def ipv6_loopback() -> bool:
    """Whether ::1 exists here (IPv6 capture redirects to it)."""
    try:
        with open("/proc/net/if_inet6") as f:
            return any(line.startswith("00000000000000000000000000000001") for line in f)
    except OSError:
        return False


def add_listeners(wanted: dict[tuple[str, str, int], Callable[[], asyncio.Protocol]], snapshot: Snapshot,
                  state: ServerState) -> None:
    """With capture on: the outbound listener accepts through `CaptureAccept`, on ::1 as well when the
    listener is on IPv4 loopback (redirected IPv6 connections arrive there); and the inbound capture
    listener, when asked for."""
    listener = snapshot.http_listeners.get(MESH_LISTENER)
    if listener is None or snapshot.capture is None:
        return

    def factory(name: str = listener.name) -> asyncio.Protocol:
        return CaptureAccept(name, state)

    wanted[("http", listener.address, listener.port)] = factory
    if listener.address == "127.0.0.1" and ipv6_loopback():
        wanted[("http", "::1", listener.port)] = factory
    address, port = snapshot.capture.inbound
    if port:
        wanted[("tcp", address, port)] = lambda: InboundTcpDownstream(INBOUND_LISTENER, state)
