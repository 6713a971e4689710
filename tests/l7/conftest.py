"""HTTP data-plane fixtures: labelled upstream servers, snapshots built by hand, a proxy listener on
127.0.0.1 and a raw HTTP/1.1 client.

The upstream servers and the client parse HTTP themselves (no httptools), so they check the proxy
rather than share its parser. Every test runs on uvloop (the production loop) and on the default
asyncio loop; heavy tests pick uvloop only with `@pytest.mark.asyncio(loop_factories=["uvloop"])`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from proxy.accesslog import AccessLog
from proxy.admin.metrics import Metrics
from proxy.l7.downstream import HttpDownstream
from proxy.routing.match import HttpMatch
from proxy.routing.snapshot import (
    Cluster,
    Destination,
    DirectResponse,
    Endpoint,
    Fault,
    HeaderOps,
    HttpListener,
    HttpRoute,
    Redirect,
    Rewrite,
    RouteTable,
    ServiceInfo,
    Snapshot,
    VirtualHost,
    WeightedDestinations,
    cluster_name,
)
from proxy.routing.weighted import cumulative
from proxy.state import ServerState
from proxy.upstream.cluster import ClusterManager

LISTENER = "0.0.0.0_8080"
SERVICE = ServiceInfo("reviews.default.svc.cluster.local", "reviews", "default")
SERVICE_PORT = 9080
TIMEOUT = 5.0  # seconds any single client read may take before the test fails


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


# HTTP parsing shared by the test upstreams and the test client ----------------------------------


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """(start line, [(lower-case name, value)])."""
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    return lines[0], headers


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [v for n, v in headers if n == name]
    return ", ".join(values) if values else None


async def read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]],
                    on_chunk: Callable[[bytes], Awaitable[None]] | None = None) -> bytes:
    """A request or response body framed by Content-Length or chunked (not read-until-EOF)."""
    parts: list[bytes] = []

    async def got(data: bytes) -> None:
        if on_chunk is not None:
            await on_chunk(data)
        else:
            parts.append(data)

    length = header(headers, "content-length")
    if (header(headers, "transfer-encoding") or "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            await got(await reader.readexactly(size))
            await reader.readexactly(2)
    elif length is not None:
        remaining = int(length)
        while remaining:
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(data)
            await got(data)
    return b"".join(parts)


# upstream servers -----------------------------------------------------------------------------


@dataclass
class ReceivedRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    connection: int  # which accepted connection (1-based) carried it
    sequence: int = 1  # its place among the requests of that connection
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return header(self.headers, name)


class UpstreamServer:
    """A small HTTP/1.1 server labelled with a version; what it does depends on the request path.

    /anything        200 JSON {version, method, path, headers, body_length, connection}
    /sleep/<ms>      the same after a delay
    /chunked/<n>/<size>  200 chunked: n chunks of size bytes
    /echo            200 chunked: the request body streamed back
    /sink/<ms>       reads the body 64 KiB at a time, sleeping between reads; 200 with the byte count
    /big/<bytes>     200 with that many bytes (Content-Length)
    /close           200 then closes the connection
    /eof             200 without Content-Length, body until the connection closes
    /status/<code>   that status, no body
    /interim         a 103 then 200
    /garbage         bytes that are not HTTP, then close
    /drop            closes without answering
    /stale           closes without answering unless it is the first request on its connection (an
                     upstream that closed a keep-alive connection just as a request arrived)
    /truncate        a head announcing 1000 bytes, 10 bytes, then close
    /ws              101 (if asked to upgrade), then echoes raw bytes until EOF
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.accepted = 0
        self.closed = 0
        self.requests: list[ReceivedRequest] = []
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> UpstreamServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await asyncio.sleep(0)

    def close_idle_connections(self) -> None:
        """Close every open connection (as an upstream's own keep-alive timeout would)."""
        for writer in list(self.writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        number = self.accepted
        self.writers.add(writer)
        sequence = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                start, headers = parse_head(head)
                method, target, version = start.split(" ")
                sequence += 1
                request = ReceivedRequest(method, target, version, headers, number, sequence)
                self.requests.append(request)
                if not await self._respond(request, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.writers.discard(writer)
            self.closed += 1
            writer.close()

    async def _respond(self, req: ReceivedRequest, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        parts = req.target.split("?")[0].strip("/").split("/")
        kind = parts[0]
        if kind == "ws":
            if (req.header("upgrade") or "").lower() != "websocket":
                writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                return True
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await asyncio.sleep(0.05)
            return False
        if kind == "echo":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")

            async def echo(data: bytes) -> None:
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()

            await read_body(reader, req.headers, echo)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if kind == "sink":
            delay = int(parts[1]) / 1000 if len(parts) > 1 else 0.0
            total = 0

            async def sink(data: bytes) -> None:
                nonlocal total
                total += len(data)
                if delay:
                    await asyncio.sleep(delay)

            await read_body(reader, req.headers, sink)
            body = str(total).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            return True
        req.body = await read_body(reader, req.headers)
        if kind == "sleep":
            await asyncio.sleep(int(parts[1]) / 1000)
        if kind == "garbage":
            writer.write(b"THIS IS NOT HTTP\r\n\r\n")
            await writer.drain()
            return False
        if kind == "drop" or (kind == "stale" and req.sequence > 1):
            return False
        if kind == "truncate":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
            await writer.drain()
            await asyncio.sleep(0.05)
            return False
        if kind == "status":
            code = int(parts[1])
            extra = b"" if code in (204, 304) else b"content-length: 0\r\n"
            writer.write(b"HTTP/1.1 %d Whatever\r\netag: \"x\"\r\n%s\r\n" % (code, extra))
            return True
        if kind == "chunked":
            count, size = int(parts[1]), int(parts[2])
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-version: %s\r\n\r\n"
                         % self.label.encode())
            for _ in range(count):
                writer.write(b"%x\r\n%s\r\n" % (size, b"x" * size))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            return True
        if kind == "big":
            size = int(parts[1])
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
            block = b"y" * 65536
            while size:
                n = min(size, len(block))
                writer.write(block[:n])
                size -= n
                await writer.drain()
            return True
        if kind == "eof":
            writer.write(b"HTTP/1.1 200 OK\r\nx-version: %s\r\n\r\nbody until eof" % self.label.encode())
            await writer.drain()
            return False
        if kind == "interim":
            writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n")
        body = json.dumps({
            "version": self.label, "method": req.method, "path": req.target, "headers": req.headers,
            "body_length": len(req.body), "connection": req.connection,
        }).encode()
        close = kind == "close"
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-version: %s\r\n" % self.label.encode()
        if close:
            head += b"connection: close\r\n"
        head += b"content-length: %d\r\n\r\n" % len(body)
        writer.write(head if req.method == "HEAD" else head + body)
        await writer.drain()
        return not close


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[[str], Awaitable[UpstreamServer]]]:
    started: list[UpstreamServer] = []

    async def start(label: str) -> UpstreamServer:
        server = await UpstreamServer(label).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


async def free_port() -> int:
    """A port with nothing listening (bound, then released)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port


# snapshots built by hand ----------------------------------------------------------------------


def cluster(subset: str, *servers: UpstreamServer | int, **options: Any) -> Cluster:
    endpoints = tuple(
        Endpoint("127.0.0.1", s if isinstance(s, int) else s.port, version=subset or "unknown")
        for s in servers)
    return Cluster(cluster_name(SERVICE_PORT, subset, SERVICE.fqdn), SERVICE, SERVICE_PORT, subset, endpoints,
                   **options)


def weighted(*entries: tuple[Cluster | None, int], request_headers: HeaderOps | None = None,
             response_headers: HeaderOps | None = None) -> WeightedDestinations:
    destinations = tuple(
        Destination(c.name if c is not None else cluster_name(SERVICE_PORT, "missing", SERVICE.fqdn), c, w,
                    request_headers, response_headers)
        for c, w in entries)
    return WeightedDestinations(destinations, cumulative([d.weight for d in destinations]))


def route(action: WeightedDestinations | Redirect | DirectResponse, *matches: HttpMatch, name: str = "route",
          timeout: float | None = None, rewrite: Rewrite | None = None, request_headers: HeaderOps | None = None,
          response_headers: HeaderOps | None = None, connect_retries: int = 2, fault: Fault | None = None
          ) -> HttpRoute:
    return HttpRoute(name, "default/reviews", 0, matches, action, timeout, rewrite, request_headers,
                     response_headers, connect_retries, fault)


def vhost(domains: tuple[str, ...], *routes: HttpRoute) -> VirtualHost:
    return VirtualHost(domains[0], domains, routes, needs_request_view=any(r.matches for r in routes))


def snapshot(*vhosts: VirtualHost, version: int = 1, role: str = "gateway") -> Snapshot:
    exact = {d: vh for vh in vhosts for d in vh.domains if d != "*"}
    catch_all = next((vh for vh in vhosts if "*" in vh.domains), None)
    listener = HttpListener(LISTENER, "127.0.0.1", 8080, role, RouteTable(exact, (), catch_all))  # type: ignore[arg-type]
    clusters = {d.cluster.name: d.cluster for vh in vhosts for r in vh.routes
                if isinstance(r.action, WeightedDestinations) for d in r.action.destinations
                if d.cluster is not None}
    return Snapshot(version, f"hash-{version}", {LISTENER: listener}, {}, clusters, {SERVICE.fqdn: SERVICE})


def simple_snapshot(*entries: tuple[Cluster | None, int], version: int = 1, **route_options: Any) -> Snapshot:
    """One virtual host for `reviews` (and its aliases) with one route to weighted clusters."""
    return snapshot(vhost(("reviews", "reviews:9080", SERVICE.fqdn), route(weighted(*entries), **route_options)),
                    version=version)


# the proxy and a raw client -------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before it

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, method: str = "GET", path: str = "/", host: str | None = "reviews",
                      headers: tuple[tuple[str, str], ...] = (), body: bytes | None = None,
                      version: str = "HTTP/1.1") -> Response:
        await self.send(build_request(method, path, host, headers, body, version))
        return await self.response(method)

    async def response(self, method: str = "GET") -> Response:
        async with asyncio.timeout(TIMEOUT):
            interim = []
            while True:
                start, headers = parse_head(await self.reader.readuntil(b"\r\n\r\n"))
                status = int(start.split(" ")[1])
                if status >= 200 or status == 101:
                    break
                interim.append(status)
            if method == "HEAD" or status in (101, 204, 304):
                body = b""
            elif header(headers, "content-length") is None and header(headers, "transfer-encoding") is None:
                body = await self.reader.read()  # until the proxy closes the connection
            else:
                body = await read_body(self.reader, headers)
            return Response(status, headers, body, interim)

    async def at_eof(self) -> bool:
        """True when the proxy closed the connection (all sent bytes read first)."""
        async with asyncio.timeout(TIMEOUT):
            rest = await self.reader.read()
        return rest == b""

    def close(self) -> None:
        self.writer.close()


def build_request(method: str = "GET", path: str = "/", host: str | None = "reviews",
                  headers: tuple[tuple[str, str], ...] = (), body: bytes | None = None,
                  version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{n}: {v}" for n, v in headers]
    if body is not None and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


@dataclass
class Proxy:
    state: ServerState
    server: asyncio.Server
    port: int
    clients: list[Client] = field(default_factory=list)

    async def connect(self) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        client = Client(reader, writer)
        self.clients.append(client)
        return client

    async def request(self, *args: Any, **kwargs: Any) -> Response:
        """One request on a new connection."""
        client = await self.connect()
        try:
            return await client.request(*args, **kwargs)
        finally:
            client.close()

    def count(self, code: int, flags: str = "-") -> int:
        """Requests recorded in the metrics with this response code and flags."""
        # the metrics key ends with (response code, response flags)
        return sum(s.count for key, s in self.state.metrics.http.items() if key[-2:] == (code, flags))

    def downstreams(self) -> list[HttpDownstream]:
        return [c for c in self.state.connections if isinstance(c, HttpDownstream)]


@pytest.fixture
async def start_proxy() -> AsyncIterator[Callable[..., Awaitable[Proxy]]]:
    proxies: list[Proxy] = []

    async def start(snap: Snapshot, **options: Any) -> Proxy:
        state = ServerState(snap, Metrics(), ClusterManager(), AccessLog("off"))
        server = await asyncio.get_running_loop().create_server(
            lambda: HttpDownstream(LISTENER, state, **options), "127.0.0.1", 0)
        proxy = Proxy(state, server, server.sockets[0].getsockname()[1])
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        for client in proxy.clients:
            client.writer.transport.abort()
        proxy.server.close()
        for conn in list(proxy.state.connections):
            conn.transport.abort()
        proxy.state.cluster_manager.close_idle()
    await asyncio.sleep(0.01)


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until `predicate()` holds (state that settles on later loop iterations)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
