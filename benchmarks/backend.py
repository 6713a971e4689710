"""Benchmark backends: small, fast upstream servers on 127.0.0.1 (uvloop + asyncio Protocols).

    python -m benchmarks.backend http 19001=v1 19002=v2   # fixed "v1\\n" / "v2\\n" responses (keep-alive)
    python -m benchmarks.backend echo 19003=v1 19004=v2   # TCP echo; "?version\\n" as first bytes → "v1\\n"
    python -m benchmarks.backend sink 19005               # counts bytes; on EOF replies the count (8 bytes)

The HTTP backend is the fallback when nginx is not installed. The echo backend serves the TCP
request/response load, the idle connections and the TCP weight check (the version probe tells which
subset a connection reached). The sink replaces iperf3 for the bulk load when iperf3 is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import httptools
import uvloop

VERSION_PROBE = b"?version\n"


class HttpBackend(asyncio.Protocol):
    """Answers every request with a fixed small body naming the version; honours Connection: close."""

    __slots__ = ("transport", "parser", "response", "keep_alive")

    def __init__(self, version: str) -> None:
        body = f"{version}\n".encode()
        self.response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.close()

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.parser.should_keep_alive():
            self.transport.write(self.response)
        else:
            self.transport.write(self.response.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
            self.transport.close()


class EchoBackend(asyncio.Protocol):
    __slots__ = ("transport", "version", "first")

    def __init__(self, version: str) -> None:
        self.version = version
        self.first = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.first:
            self.first = False
            if data.startswith(VERSION_PROBE):
                self.transport.write(f"{self.version}\n".encode())
                data = data[len(VERSION_PROBE):]
                if not data:
                    return
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close our side too: the echo is complete


class SinkBackend(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += len(data)

    def eof_received(self) -> bool:
        self.transport.write(self.received.to_bytes(8, "big"))
        return False


async def serve(kind: str, bindings: list[tuple[int, str]]) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for port, version in bindings:
        if kind == "http":
            factory = _factory(HttpBackend, version)
        elif kind == "echo":
            factory = _factory(EchoBackend, version)
        else:
            factory = SinkBackend
        servers.append(await loop.create_server(factory, "127.0.0.1", port, backlog=4096, reuse_address=True))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def _factory(cls: type, version: str):  # noqa: ANN202 - a protocol factory
    return lambda: cls(version)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backend")
    parser.add_argument("kind", choices=["http", "echo", "sink"])
    parser.add_argument("bindings", nargs="+", help="PORT=VERSION (or PORT for sink)")
    args = parser.parse_args(argv)
    bindings = []
    for item in args.bindings:
        port, _, version = item.partition("=")
        bindings.append((int(port), version or "v1"))
    uvloop.run(serve(args.kind, bindings))


if __name__ == "__main__":
    main()
