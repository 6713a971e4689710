"""Certificates for the TLS tests (made by trustme), laid out as the proxy reads them, and TLS peers:
a client connection through the proxy and small TLS backends."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from tests.e2e.harness import Client


def write_credential(directory: Path, name: str, ca: trustme.CA, *hosts: str,
                     client_ca: trustme.CA | None = None) -> trustme.LeafCert:
    """DIR/NAME/{tls.crt,tls.key[,ca.crt]}, as a mounted Kubernetes TLS secret (written to a temporary
    name and renamed, so a watcher never reads half a file)."""
    cert = ca.issue_cert(*hosts)
    folder = directory / name
    folder.mkdir(parents=True, exist_ok=True)
    files = {"tls.crt": b"".join(b.bytes() for b in cert.cert_chain_pems), "tls.key": cert.private_key_pem.bytes()}
    if client_ca is not None:
        files["ca.crt"] = client_ca.cert_pem.bytes()
    for file, data in files.items():
        tmp = folder / f".{file}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / file)
    return cert


def client_context(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.set_alpn_protocols(["h2", "http/1.1"])  # as curl offers: the proxy must pick http/1.1
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


async def tls_client(port: int, context: ssl.SSLContext, server_name: str) -> Client:
    """A keep-alive HTTP client over TLS to 127.0.0.1:port, sending `server_name` as SNI."""
    client = Client(port)
    client.reader, client.writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                                 server_hostname=server_name)
    return client


def peer_der(writer: asyncio.StreamWriter) -> bytes:
    ssl_object = writer.get_extra_info("ssl_object")
    return ssl_object.getpeercert(binary_form=True)


@dataclass
class TlsEcho:
    """A TLS backend that answers each connection with its `name` and closes (tcp-echo-like); counts them."""

    name: str
    context: ssl.SSLContext
    port: int = 0
    connections: int = 0
    server: asyncio.AbstractServer | None = field(default=None, repr=False)

    async def start(self) -> TlsEcho:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            writer.write(self.name.encode() + b"\n")
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


def server_context(cert: trustme.LeafCert, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    if client_ca is not None:
        client_ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
