"""Response heads with enough fields to be forwarded as bytes (response_decoder.RAW_MIN): the upstream's
header lines reach the client as written, without the hop-by-hop ones, with the same framing as a head
parsed field by field; and a route's response header operations still apply (those heads take the parsed
path)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from proxy.l7.codec import ResponseHead
from proxy.l7.response_decoder import RAW_MIN, ResponseDecoder
from proxy.routing.snapshot import HeaderOps
from tests.l7.conftest import Client, Proxy, build_request, cluster, parse_head, simple_snapshot

StartProxy = Callable[..., Awaitable[Proxy]]
# fields of a typical size that give any of the heads below RAW_MIN fields or more
PADDING = b"".join(b"X-Padding-%d: %s\r\n" % (i, b"p" * 20) for i in range(RAW_MIN))


def response(status: bytes, *fields: bytes, body: bytes = b"") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\nServer: Scripted/1.0\r\n" + PADDING + b"".join(
        f + b"\r\n" for f in fields) + b"X-Last: Mixed-Case Value\r\n\r\n" + body


class ScriptedUpstream:
    """Answers each request with the bytes scripted for its path; `/close/...` answers then closes."""

    def __init__(self, script: dict[str, bytes]) -> None:
        self.script = script
        self.accepted = 0
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                writer.write(self.script[path])
                await writer.drain()
                if path.startswith("/close/"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[dict[str, bytes]], Awaitable[ScriptedUpstream]]]:
    servers: list[asyncio.Server] = []

    async def start(script: dict[str, bytes]) -> ScriptedUpstream:
        upstream = ScriptedUpstream(script)
        server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
        upstream.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return upstream

    yield start
    for server in servers:
        server.close()


async def exchange(client: Client, path: str, method: str = "GET", version: str = "HTTP/1.1",
                   body_length: int | None = None) -> tuple[bytes, bytes]:
    """(raw response head, body) for one request; the body is read by Content-Length, else to the close."""
    await client.send(build_request(method, path, version=version))
    async with asyncio.timeout(5):
        head = await client.reader.readuntil(b"\r\n\r\n")
        if body_length is None:
            return head, b""
        return head, await client.reader.readexactly(body_length)


async def test_fields_keep_their_case_and_order_and_hop_by_hop_ones_are_dropped(
        start_proxy: StartProxy, scripted: Callable[[dict[str, bytes]], Awaitable[ScriptedUpstream]]) -> None:
    upstream = await scripted({"/a": response(
        b"200 OK", b"Content-Type: text/plain", b"Content-Length: 5", b"Connection: keep-alive",
        b"Keep-Alive: timeout=5", b"Proxy-Connection: keep-alive", b"Upgrade: h2c", b"Trailer: X-T",
        b"TE: trailers", body=b"hello")})
    proxy = await start_proxy(simple_snapshot((cluster("v1", upstream.port), 100)))
    client = await proxy.connect()
    for _ in range(2):  # the second on the pooled upstream connection
        head, body = await exchange(client, "/a", body_length=5)
        assert body == b"hello"
        assert head.startswith(b"HTTP/1.1 200 OK\r\nServer: Scripted/1.0\r\nX-Padding-0: ")
        assert b"\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Last: Mixed-Case Value\r\n" in head
        names = {name for name, _ in parse_head(head)[1]}
        assert names.isdisjoint({"connection", "keep-alive", "proxy-connection", "upgrade", "trailer", "te",
                                 "transfer-encoding"})
    assert upstream.accepted == 1


async def test_framing_as_for_a_parsed_head(
        start_proxy: StartProxy, scripted: Callable[[dict[str, bytes]], Awaitable[ScriptedUpstream]]) -> None:
    upstream = await scripted({
        "/head": response(b"200 OK", b"Content-Length: 1234"),
        "/204": response(b"204 No Content", b"Content-Length: 3"),
        "/304": response(b"304 Not Modified", b"Content-Length: 7"),
        "/close/eof": response(b"200 OK", body=b"until the end"),
        "/close/eof10": response(b"200 OK", body=b"until the end"),
        "/named": response(b"200 OK", b"Connection: close, X-Private", b"X-Private: secret", b"Content-Length: 2",
                           body=b"ok"),
    })
    proxy = await start_proxy(simple_snapshot((cluster("v1", upstream.port), 100)))
    client = await proxy.connect()
    head, _ = await exchange(client, "/head", method="HEAD")  # the length is the GET's, no body follows
    assert b"\r\nContent-Length: 1234\r\n" in head
    head, _ = await exchange(client, "/204")
    assert parse_head(head)[0] == "HTTP/1.1 204 No Content" and b"content-length" not in head.lower()
    head, _ = await exchange(client, "/304")
    assert b"\r\nContent-Length: 7\r\n" in head
    # no length: re-chunked for an HTTP/1.1 client, the connection kept
    head, _ = await exchange(client, "/close/eof")
    assert b"\r\ntransfer-encoding: chunked\r\n" in head and b"X-Last: Mixed-Case Value" in head
    async with asyncio.timeout(5):
        assert await client.reader.readuntil(b"0\r\n\r\n") == b"d\r\nuntil the end\r\n0\r\n\r\n"
    # a Connection header naming a field: that field is dropped too
    head, body = await exchange(client, "/named", body_length=2)
    assert body == b"ok" and b"X-Private" not in head and b"X-Last: Mixed-Case Value" in head
    # an HTTP/1.0 client gets a body delimited by the connection's close
    client10 = await proxy.connect()
    head, _ = await exchange(client10, "/close/eof10", version="HTTP/1.0")
    assert b"\r\nconnection: close\r\n" in head and b"chunked" not in head
    async with asyncio.timeout(5):
        assert await client10.reader.read() == b"until the end"


async def test_response_header_operations_still_apply(
        start_proxy: StartProxy, scripted: Callable[[dict[str, bytes]], Awaitable[ScriptedUpstream]]) -> None:
    upstream = await scripted({"/a": response(b"200 OK", b"X-Remove-Me: 1", b"X-Set: old", b"Content-Length: 0")})
    ops = HeaderOps(set=(("x-set", "new"),), add=(("x-added", "yes"),), remove=("x-remove-me",))
    proxy = await start_proxy(simple_snapshot((cluster("v1", upstream.port), 100), response_headers=ops))
    client = await proxy.connect()
    head, _ = await exchange(client, "/a")
    fields = parse_head(head)[1]
    assert ("x-set", "new") in fields and ("x-added", "yes") in fields
    assert not any(name in ("x-remove-me",) or value == "old" for name, value in fields)
    assert b"\r\nX-Last: Mixed-Case Value\r\n" in head  # the other fields keep their case there too


class _Heads:
    def __init__(self) -> None:
        self.heads: list[ResponseHead] = []
        self.body = b""

    def on_response_head(self, head: ResponseHead) -> None:
        self.heads.append(head)

    def on_response_body(self, data: bytes) -> None:
        self.body += data

    def on_response_complete(self) -> None:
        pass

    def response_body_bytes(self) -> int:
        return len(self.body)


def decoded(*chunks: bytes, raw_ok: bool = True) -> tuple[ResponseHead, bytes]:
    handler = _Heads()
    decoder = ResponseDecoder(handler)
    decoder.raw_ok = raw_ok
    for chunk in chunks:
        decoder.feed(chunk)
    return handler.heads[-1], handler.body


@pytest.mark.parametrize("message, raw", [
    (response(b"200 OK", b"Content-Length: 2", b"Connection: Keep-Alive", body=b"ok"), True),
    (response(b"404 Not Found", b"content-length: 2", body=b"ok"), True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),  # few fields: field by field is cheaper
    (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 15:04:18 GMT\r\nContent-Type: text/plain"
     b"\r\nContent-Length: 2\r\nConnection: keep-alive\r\nX-Last: Mixed-Case Value" + b"x" * 200 + b"\r\n\r\nok",
     False),  # long, but few fields
    (response(b"200 OK", b"Transfer-Encoding: chunked", body=b"2\r\nok\r\n0\r\n\r\n"), False),  # re-chunked
    (response(b"200 OK", b"Connection: X-Padding-1", b"Content-Length: 2", body=b"ok"), False),  # names a field
    (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + response(b"200 OK", b"Content-Length: 2", body=b"ok"),
     False),  # the final head follows an interim one in the same read
])
def test_which_heads_are_forwarded_as_bytes(message: bytes, raw: bool) -> None:
    head, body = decoded(message)
    assert body == b"ok"
    assert (head.raw is not None) == raw
    if raw:
        assert head.headers == [] and head.content_length == 2
        assert head.raw.startswith(b"Server: Scripted/1.0\r\n") and head.raw.endswith(b"X-Last: Mixed-Case Value\r\n")
        assert b"onnection" not in head.raw
    else:  # the same fields, parsed
        assert any(n == b"X-Last" and v.startswith(b"Mixed-Case Value") for n, v in head.headers) or (
        b"Server" not in message)
    assert decoded(message, raw_ok=False)[0].raw is None  # only when the caller allows it


def test_a_head_split_over_reads_is_parsed() -> None:
    message = response(b"200 OK", b"Content-Length: 2", body=b"ok")
    head, body = decoded(message[:40], message[40:])
    assert head.raw is None and (b"Server", b"Scripted/1.0") in head.headers and body == b"ok"
