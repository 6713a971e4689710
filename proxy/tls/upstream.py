"""Upstream connections that originate TLS (DestinationRule `tls`): the handshake, then the
subjectAltNames check. A cluster that asks for TLS never gets plaintext: a failed handshake or check is
a failed connect (503 UF)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from proxy.tls.contexts import HANDSHAKE_FAILURES, UpstreamTls


class UpstreamTlsError(ssl.SSLError):
    """The upstream's TLS cannot be trusted (its SAN) or set up (no credentials): a failed connect."""


def _peer_names(cert: dict[str, Any]) -> set[str]:
    names = {v for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "URI", "IP Address")}
    return {n.lower() for n in names}


def san_matches(cert: dict[str, Any] | None, wanted: tuple[str, ...]) -> bool:
    if not cert:
        return False
    names = _peer_names(cert)
    for want in wanted:
        w = want.lower()
        if w in names or any(n.startswith("*.") and w.endswith(n[1:]) and "." not in w[:-len(n) + 1]
                             for n in names):
            return True
    return False


async def connect(loop: asyncio.AbstractEventLoop, factory: Callable[[], Any], address: str, port: int,
                  tls: UpstreamTls | None) -> tuple[asyncio.BaseTransport, Any]:
    """`loop.create_connection`, over TLS when the cluster has it. Raises OSError (ssl.SSLError is one)."""
    if tls is None:
        return await loop.create_connection(factory, address, port)
    try:
        transport, protocol = await loop.create_connection(
            factory, address, port, ssl=tls.context, server_hostname=tls.sni or "",
            ssl_handshake_timeout=tls.handshake_timeout)
    except ssl.SSLError as exc:
        HANDSHAKE_FAILURES["upstream", str(exc.reason or "handshake_failure").lower()] += 1
        raise
    if tls.subject_alt_names and not san_matches(transport.get_extra_info("peercert"), tls.subject_alt_names):
        transport.abort()
        HANDSHAKE_FAILURES["upstream", "subject_alt_name"] += 1
        raise UpstreamTlsError(f"upstream certificate has none of the subjectAltNames {list(tls.subject_alt_names)}")
    return transport, protocol
