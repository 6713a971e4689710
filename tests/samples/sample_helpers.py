"""Shared helpers for the sample-app tests: a raw HTTP/1.1 client and a recording forward proxy, both on real
loopback sockets and deliberately independent of `proxy.samples.http`, so they check its bytes."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names, last value wins
    header_list: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def parse_response(data: bytes) -> RawResponse:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no end of head in {data[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, _reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    header_list = []
    for line in lines:
        name, _, value = line.partition(":")
        header_list.append((name.strip().lower(), value.strip()))
    headers = dict(header_list)
    if "content-length" in headers:
        assert len(body) == int(headers["content-length"]), "body length differs from content-length"
    return RawResponse(int(status), headers, header_list, body)


def split_responses(data: bytes) -> list[RawResponse]:
    """Several content-length framed responses read from one connection."""
    out = []
    while data:
        head_end = data.index(b"\r\n\r\n") + 4
        length = int(next(line.split(b":", 1)[1] for line in data[:head_end].split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        out.append(parse_response(data[: head_end + length]))
        data = data[head_end + length:]
    return out


async def exchange(port: int, raw: bytes, host: str = "127.0.0.1") -> bytes:
    """Send raw bytes, half-close, read to EOF."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(-1)
    finally:
        writer.close()
        await writer.wait_closed()


async def http(port: int, path: str, *, method: str = "GET", headers: dict[str, str] | None = None,
               body: bytes = b"") -> RawResponse:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return parse_response(await exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body))


@dataclass
class Recorded:
    connection: int  # index of the downstream connection it came on
    request_line: str
    headers: dict[str, str]  # lower-case names

    @property
    def authority(self) -> str:
        return self.headers.get("host", "")


@dataclass
class RecordingProxy:
    """A forward HTTP proxy that records every request head it gets and forwards by authority.

    `routes` maps an authority (`reviews:9080`) to a loopback port; `fail` maps an authority to a list of
    statuses answered instead of forwarding (consumed one per request). Unknown authorities get 502.
    """

    routes: dict[str, int] = field(default_factory=dict)
    fail: dict[str, list[int]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    connections: int = 0
    server: asyncio.AbstractServer | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def url(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def to(self, authority: str) -> list[Recorded]:
        return [r for r in self.requests if r.authority == authority]

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        index = self.connections
        self.connections += 1
        try:
            await self._serve(index, reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.tasks.discard(task)

    async def _serve(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.requests.append(Recorded(index, request_line, headers))
        authority = headers.get("host", "")
        scripted = self.fail.get(authority)
        if scripted:
            status = scripted.pop(0)
            writer.write(f"HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
            return
        if authority not in self.routes:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            return
        method, target, version = request_line.split(" ")
        path = "/" + target.split("://", 1)[1].split("/", 1)[1] if "://" in target else target
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.routes[authority])
        except OSError:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            return
        try:
            out = [f"{method} {path} {version}"]
            out += [f"{k}: {v}" for k, v in headers.items() if k != "connection"]
            out.append("connection: close")
            up_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
            writer.write(await up_reader.read(-1))
        finally:
            up_writer.close()
            with contextlib.suppress(OSError):
                await up_writer.wait_closed()


async def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port
