"""TLS passed through, routed by SNI (VirtualService `tls[]` routes): the connection is accepted, its
ClientHello read (never terminated), and one weighted pick made per connection from the first tls route
whose sniHosts match; then the bytes (ClientHello included) are relayed as by `TcpDownstream`. A
connection no tls route matches falls back to the listener's tcp routes, as in Envoy's filter chains.
"""

from __future__ import annotations

import asyncio

from proxy.l4.relay import TcpDownstream
from proxy.routing.snapshot import Snapshot, TcpRoute
from proxy.tls.sni import parse

HELLO_TIMEOUT = 10.0  # seconds to wait for a ClientHello (Envoy's tls_inspector waits 15 s)


class SniDownstream(TcpDownstream):
    __slots__ = ("server_name", "_hello", "_hello_timer", "_routed")

    def __init__(self, listener_name: str, state: object) -> None:
        super().__init__(listener_name, state)  # type: ignore[arg-type]
        self.server_name: str | None = None
        self._hello = b""
        self._hello_timer: asyncio.TimerHandle | None = None
        self._routed = False

    def route_connection(self, snapshot: Snapshot) -> None:
        if self._routed:
            super().route_connection(snapshot)
            return
        self._hello_timer = self.loop.call_later(HELLO_TIMEOUT, self._no_hello)  # routed once it arrives

    def data_received(self, data: bytes) -> None:
        if self._routed:
            super().data_received(data)
            return
        self.received += len(data)
        self._hello += data
        hello = parse(self._hello)
        if not hello.complete:
            return
        self.server_name = hello.server_name
        self._routed = True
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        early, self._hello = self._hello, b""
        super().route_connection(self.state.snapshot)
        if self._connecting:
            # written once the upstream is connected
            self._early = early if self._early is None else self._early + early

    @property
    def requested_server_name(self) -> str:
        return self.server_name or ""

    def find_route(self, snapshot: Snapshot) -> TcpRoute | None:
        listener = snapshot.tcp_listeners.get(self.listener_name)
        if listener is None:
            return None
        if self.server_name is not None:
            for sni_route in listener.sni_routes:
                if sni_route.matches_sni(self.server_name) and \
                        sni_route.route.matches_connection(listener.port, self.destination_ip):
                    return sni_route.route
        return listener.route(self.destination_ip)

    def eof_received(self) -> bool:
        if not self._routed:  # closed before a whole ClientHello
            self._routed = True
            self._fail("NR", None, None)
            return False
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        super().connection_lost(exc)

    def _no_hello(self) -> None:
        self._hello_timer = None
        if not self._routed:
            self._fail("NR", None, None)
