"""Just enough HTTP/1.1 for the sample apps: a server Protocol over httptools and a one-shot client.

Server: each complete request goes to a handler that returns a `Response`, or an awaitable of one;
requests on a connection are answered in order (pipelined ones wait their turn). Client: a **new
connection for every call**, as Bookinfo's `requests.get` does, so a proxy in front sees one
connection per call; with a proxy configured the request goes to it in absolute form
(`GET http://reviews:9080/reviews/0 HTTP/1.1`, `Host: reviews:9080`), which is how a sidecar on
`HTTP_PROXY` learns the destination. Messages here are small (JSON, one page), so both sides buffer
whole bodies, within a cap.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from proxy.samples.server import SampleServer

MAX_BODY = 1 << 20  # request bodies (the login form) and upstream response bodies
MAX_PIPELINE = 16  # queued requests per connection before reading pauses

# Headers Bookinfo copies from the incoming request to its outbound calls (tracing, identity, session).
FORWARD_HEADERS = (
    "x-request-id", "x-ot-span-context", "x-datadog-trace-id", "x-datadog-parent-id",
    "x-datadog-sampling-priority", "traceparent", "tracestate", "x-cloud-trace-context", "grpc-trace-bin",
    "sw8", "user-agent", "cookie", "authorization", "jwt",
    "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3",
)

JSON = "application/json"
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


@dataclass(slots=True)
class Request:
    method: str
    target: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeats joined with ", " ("; " for cookie)
    body: bytes = b""


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str | None = TEXT
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), JSON)


Handler = Callable[[Request], "Response | Awaitable[Response]"]


def forward_headers(request: Request, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """The incoming headers Bookinfo propagates to the next hop."""
    return {name: request.headers[name] for name in (*FORWARD_HEADERS, *extra) if name in request.headers}


# ---------------------------------------------------------------------------------------------- server


async def serve_http(server: SampleServer, handler: Handler, host: str, port: int) -> SampleServer:
    await server.listen(lambda: HttpServerProtocol(handler, server), host, port)
    return server


class HttpServerProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, server: SampleServer) -> None:
        self.handler = handler
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        # per-connection state
        self.pending: deque[tuple[Request, bool]] = deque()  # (request, keep_alive)
        self.task: asyncio.Task[Response] | None = None
        self.closing = False
        self.reading_paused = False
        # per-request state, filled by the parser callbacks
        self.url = b""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.keep_alive = True

    # asyncio.Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.server.track(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.server.untrack(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(400, "upgrade not supported")
        except httptools.HttpParserError as exc:
            self.fail(400, f"bad request: {exc}")

    # parser callbacks

    def on_message_begin(self) -> None:
        self.url, self.raw_headers, self.body, self.body_size = b"", [], [], 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > MAX_BODY:
            raise httptools.HttpParserError("request body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.raw_headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            if name in headers:
                value = headers[name] + ("; " if name == "cookie" else ", ") + value
            headers[name] = value
        target = self.url.decode("latin-1")
        parts = urlsplit(target)
        request = Request(self.parser.get_method().decode("latin-1"), target, parts.path or "/", parts.query,
                          headers, b"".join(self.body))
        self.pending.append((request, self.keep_alive))
        if len(self.pending) > MAX_PIPELINE and self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        self.run_pending()

    # request dispatch

    def run_pending(self) -> None:
        while self.pending and self.task is None and not self.closing:
            request, keep_alive = self.pending.popleft()
            try:
                result = self.handler(request)
            except Exception as exc:  # a sample bug must not take the connection's other requests down
                result = Response(500, f"internal error: {exc!r}\n".encode())
            if isinstance(result, Response):
                self.send(request, result, keep_alive)
                continue
            self.task = asyncio.ensure_future(result)
            self.task.add_done_callback(lambda task, r=request, k=keep_alive: self.on_task_done(task, r, k))
        if self.reading_paused and not self.closing and len(self.pending) <= MAX_PIPELINE // 2:
            self.reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    def on_task_done(self, task: asyncio.Task[Response], request: Request, keep_alive: bool) -> None:
        self.task = None
        if task.cancelled():
            return
        exc = task.exception()  # retrieved even when closing, so asyncio does not log it as lost
        if self.closing:
            return
        response = task.result() if exc is None else Response(500, f"internal error: {exc!r}\n".encode())
        self.send(request, response, keep_alive)
        self.run_pending()

    def send(self, request: Request, response: Response, keep_alive: bool) -> None:
        assert self.transport is not None
        reason = _reason(response.status)
        head = [f"HTTP/1.1 {response.status} {reason}\r\n"]
        if response.content_type:
            head.append(f"content-type: {response.content_type}\r\n")
        head.append(f"content-length: {len(response.body)}\r\n")
        head.extend(f"{name}: {value}\r\n" for name, value in response.headers)
        if not keep_alive:
            head.append("connection: close\r\n")
        head.append("\r\n")
        body = b"" if request.method == "HEAD" else response.body
        self.transport.write("".join(head).encode("latin-1") + body)
        if not keep_alive:
            self.closing = True
            self.transport.close()

    def fail(self, status: int, message: str) -> None:
        self.closing = True
        self.pending.clear()
        if self.transport is not None and self.task is None:
            body = message.encode() + b"\n"
            self.transport.write(f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-type: {TEXT}\r\n"
                                 f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        if self.transport is not None:
            self.transport.close()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


# ---------------------------------------------------------------------------------------------- client


class UpstreamError(Exception):
    """A call that got no HTTP response: connect failure, timeout, reset or garbage."""


@dataclass(frozen=True, slots=True)
class ClientResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def split_authority(authority: str, default_port: int = 80) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`, or a bare host) → (host, port)."""
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit():
        return authority, default_port
    return host, int(port)


def parse_proxy_url(url: str | None) -> tuple[str, int] | None:
    """`http://127.0.0.1:15001` (or `127.0.0.1:15001`) → ("127.0.0.1", 15001); empty → no proxy."""
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported proxy URL {url!r} (expected http://HOST:PORT)")
    return parts.hostname, parts.port or 80


@dataclass(frozen=True, slots=True)
class HttpClient:
    """GETs over a fresh connection per call, through `proxy` unless the host is in `no_proxy`."""

    proxy: tuple[str, int] | None = None
    no_proxy: tuple[str, ...] = ()
    user_agent: str = "bookinfo-sample"

    def uses_proxy(self, host: str) -> bool:
        if self.proxy is None:
            return False
        host = host.lower()
        for entry in self.no_proxy:
            entry = entry.strip().lower().lstrip(".")
            if entry == "*" or host == entry or host.endswith("." + entry):
                return False
        return True

    async def get(self, authority: str, path: str, headers: Mapping[str, str], timeout: float) -> ClientResponse:
        """GET `http://{authority}{path}`; `timeout` bounds the connect and each read (like `requests`)."""
        host, port = split_authority(authority)
        if self.uses_proxy(host):
            assert self.proxy is not None
            connect_to, target = self.proxy, f"http://{authority}{path}"
        else:
            connect_to, target = (host, port), path
        lines = [f"GET {target} HTTP/1.1", f"host: {authority}"]
        sent = {"host", "connection", "content-length", "transfer-encoding"}
        for name, value in headers.items():
            if name.lower() not in sent:
                lines.append(f"{name}: {value}")
        lower = {name.lower() for name in headers}
        if "user-agent" not in lower:
            lines.append(f"user-agent: {self.user_agent}")
        if "accept" not in lower:
            lines.append("accept: */*")
        lines.append("connection: keep-alive")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(*connect_to)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"connect to {connect_to[0]}:{connect_to[1]} failed: {exc!r}") from exc
        try:
            writer.write(request)
            return await _read_response(reader, timeout)
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            raise UpstreamError(f"GET {target} failed: {exc!r}") from exc
        finally:
            writer.close()


class _ResponseCollector:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.headers_done = False
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY:
            raise httptools.HttpParserError("response body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


async def _read_response(reader: asyncio.StreamReader, timeout: float) -> ClientResponse:
    collector = _ResponseCollector()
    parser = httptools.HttpResponseParser(collector)
    while not collector.done:
        async with asyncio.timeout(timeout):
            data = await reader.read(65536)
        if not data:
            # a body delimited by the end of the connection is complete at EOF; anything else is cut short
            delimited = "content-length" in collector.headers or "transfer-encoding" in collector.headers
            if collector.headers_done and not delimited:
                break
            raise ConnectionResetError("connection closed before the response was complete")
        parser.feed_data(data)
    return ClientResponse(parser.get_status_code(), collector.headers, b"".join(collector.body))
