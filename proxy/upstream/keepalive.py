"""TCP keepalive on upstream sockets (DestinationRule `connectionPool.tcp.tcpKeepalive`, Envoy's
`upstream_connection_options.tcp_keepalive`): unset fields keep the system's values."""

from __future__ import annotations

import socket
from typing import Any

from proxy.routing.resilience import TcpKeepalive


def apply(transport: Any, keepalive: TcpKeepalive) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if keepalive.probes is not None and hasattr(socket, "TCP_KEEPCNT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, keepalive.probes)
        if keepalive.time is not None and hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(keepalive.time)))
        if keepalive.interval is not None and hasattr(socket, "TCP_KEEPINTVL"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(keepalive.interval)))
    except OSError:
        pass  # the connection is already gone; it fails on its own
