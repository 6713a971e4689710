"""The destination a redirected connection was dialled to (netfilter's SO_ORIGINAL_DST).

After `iptables -t nat ... -j REDIRECT` (or nft `redirect`), the accepted socket's local address is the
proxy's own; conntrack remembers the address the application connected to. Linux only.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)


def original_dst(sock: Any) -> tuple[str, int] | None:
    """(address, port) the peer dialled, or None when the connection was not redirected (no NAT
    entry: it came to the listener directly) or the socket is not TCP over IP."""
    try:
        if sock.family == socket.AF_INET:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port, packed = struct.unpack_from("!2xH4s", raw)
            return socket.inet_ntop(socket.AF_INET, packed), port
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28)
            port, packed = struct.unpack_from("!2xH4x16s", raw)
            return socket.inet_ntop(socket.AF_INET6, packed), port
    except OSError:  # ENOENT: no conntrack entry, i.e. not redirected; ENOPROTOOPT: no netfilter
        return None
    return None
