"""HTTP/1.x wire format over httptools (llhttp), for both directions of the proxy.

Owns: turning bytes into request and response heads (`RequestHead`, `ResponseHead`) with request header
names lower-cased (response ones keep the upstream's case) and hop-by-hop, framing and proxy-owned headers
taken out into fields; the framing checks llhttp leaves to its user (Transfer-Encoding other than
`chunked`, several Host headers, HTTP versions, request-target and Host sanity, head and trailer limits);
head serialization (one join); chunked encoding. The request decoder is here; the response decoder, which
shares these pieces, is in response_decoder.py.

Limits, as Envoy's defaults: a head, and separately the trailers of a chunked message, may hold at most
60 KiB of names and values and 100 fields; a request over either gets 431, a response 502 (the upstream
broke the protocol). Trailers are read and counted, then dropped (Envoy's HTTP/1 default). An `h2c`
upgrade is stripped here (Upgrade and HTTP2-Settings removed, the request goes on as plain HTTP/1.1), as
Envoy's codec does; any other upgrade is reported in `RequestHead.upgrade` for the caller to allow or refuse.

Rule: nothing here buffers a body. Body bytes go to the handler's `on_*_body` as llhttp yields them, so
the caller decides where they go and when to stop reading. llhttp already rejects a message with both
Content-Length and Transfer-Encoding, and duplicate Content-Length headers (identical or not).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import httptools

MAX_REQUEST_HEAD = 60 * 1024  # Envoy's default max_request_headers_kb
MAX_RESPONSE_HEAD = 60 * 1024  # Envoy's default max_response_headers_kb
MAX_HEADERS = 100  # Envoy's default max_headers_count, for heads and for trailers
# The incremental guard counts wire bytes (CRLFs, ": "), the exact check only names and values.
WIRE_SLACK = 8 * 1024

CRLF = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

Header = tuple[bytes, bytes]


class CodecError(Exception):
    """Bytes that are not acceptable HTTP/1.x; `status` is the answer a server owes for them."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class SkipBody(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised from on_headers_complete to end a response to HEAD at its head (llhttp cannot be told)."""


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes  # as sent: origin-form, absolute-form, authority-form or "*"
    http10: bool
    # lower-case names; without hop-by-hop, framing, host, expect: 100-continue, x-forwarded-*, x-request-id
    headers: list[Header]
    host: bytes | None
    content_length: int | None
    chunked: bool
    keep_alive: bool
    upgrade: bytes | None  # the Upgrade header when `Connection: upgrade` asks to switch protocols
    expect_continue: bool
    forwarded_for: bytes | None
    request_id: bytes | None
    # Envoy's internal x-envoy-* request headers, kept apart: the gateway role drops them, the sidecar
    # role forwards them (as Envoy does with and without use_remote_address)
    envoy_headers: list[Header] | None = None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(slots=True)
class ResponseHead:
    # the reason phrase is not kept: the client gets the standard one for the status, as from Envoy
    status: int
    headers: list[Header]  # names as the upstream wrote them; without hop-by-hop and framing headers
    content_length: int | None
    chunked: bool
    upgrade: bytes | None
    # the header lines as received (names as the upstream wrote them, each line with its CRLF), without
    # hop-by-hop and framing ones, when the decoder was told nothing reads the fields (`raw_ok`): then
    # `headers` is empty
    raw: bytes | None = None


class RequestHandler(Protocol):
    def on_request_head(self, head: RequestHead) -> None: ...
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_complete(self) -> None: ...
    def request_body_bytes(self) -> int: ...  # body bytes of the request being read, so far


class ResponseHandler(Protocol):
    def on_response_head(self, head: ResponseHead) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_complete(self) -> None: ...
    def response_body_bytes(self) -> int: ...  # body bytes of the response being read, so far


# how the request decoder treats a header (anything not listed is forwarded as is)
F_DROP, F_HOST, F_CL, F_TE, F_CONN, F_UPGRADE, F_EXPECT, F_XFF, F_RID, F_ENVOY = range(10)
HOP_BY_HOP = {b"keep-alive": F_DROP, b"proxy-connection": F_DROP, b"te": F_DROP, b"trailer": F_DROP,
               b"content-length": F_CL, b"transfer-encoding": F_TE, b"connection": F_CONN, b"upgrade": F_UPGRADE}
# every x-envoy-* header Envoy defines (source/common/http/headers.h): all of them are Envoy-internal
ENVOY_HEADERS = frozenset(b"x-envoy-" + n for n in (
    b"attempt-count", b"cluster", b"degraded", b"downstream-service-cluster", b"downstream-service-node",
    b"external-address", b"force-trace", b"hedge-on-per-try-timeout", b"immediate-health-check-fail",
    b"is-timeout-retry", b"original-url", b"internal", b"ip-tags", b"local-overloaded", b"max-retries",
    b"not-forwarded", b"original-dst-host", b"original-method", b"original-path", b"overloaded",
    b"drop-overload", b"ratelimited", b"retry-on", b"retry-grpc-on", b"retriable-status-codes",
    b"retriable-header-names", b"upstream-alt-stat-name", b"upstream-canary", b"upstream-host-address",
    b"upstream-hostname", b"upstream-rq-timeout-alt-response", b"upstream-rq-timeout-ms",
    b"upstream-rq-per-try-timeout-ms", b"expected-rq-timeout-ms", b"upstream-service-time",
    b"upstream-healthchecked-cluster", b"upstream-stream-duration-ms", b"decorator-operation"))
_REQUEST_HEADERS = {**HOP_BY_HOP, b"host": F_HOST, b"expect": F_EXPECT, b"x-forwarded-for": F_XFF,
                    b"x-forwarded-proto": F_DROP, b"x-request-id": F_RID, **dict.fromkeys(ENVOY_HEADERS, F_ENVOY),
                    b"x-envoy-attempt-count": F_DROP}  # the proxy sets it (its own attempt count)
# a Host value outside RFC 3986's authority characters (Envoy's authority check): whitespace, `/`, ...
_INVALID_HOST = re.compile(rb"[^A-Za-z0-9\-._~!$&'()*+,;=:@\[\]%]")
_H2C = b"h2c"
# a head shorter than this cannot hold more than MAX_HEADERS fields (each is 3 bytes or more)
COUNT_BOUND = 3 * MAX_HEADERS
CONNECTION_OPTIONS = frozenset((b"close", b"keep-alive", b"upgrade"))
# the Connection values nearly every peer sends: they name no header, so the token split can be skipped
_PLAIN_CONNECTION = frozenset((b"close", b"keep-alive", b"Close", b"Keep-Alive", b"upgrade", b"Upgrade"))


def connection_tokens(value: bytes) -> frozenset[bytes]:
    return frozenset(t.strip().lower() for t in value.split(b","))


def drop_named(headers: list[Header], connection: bytes) -> list[Header]:
    """Also hop-by-hop: headers the Connection header names (RFC 9110 §7.6.1)."""
    if connection in _PLAIN_CONNECTION:
        return headers
    named = connection_tokens(connection) - CONNECTION_OPTIONS
    return [h for h in headers if h[0].lower() not in named] if named else headers  # (response names keep case)


def list_size(headers: list[Header]) -> int:
    return sum(len(name) + len(value) for name, value in headers)


def is_chunked(value: bytes) -> bool:
    """Only `chunked` alone is accepted: other codings would be silently dropped when re-framing."""
    if value.strip().lower() != b"chunked":
        raise CodecError(501, f"unsupported transfer encoding {value.decode('latin-1')!r}")
    return True


class ChunkTracking:
    """Chunk callbacks both decoders share: an open chunk's wire bytes are watched so that a trailer
    section that never ends is caught (the limits count fields only once each is complete)."""

    __slots__ = ()  # the decoders declare `_chunk_open`, `_chunk_wire` and `_body_mark`
    _chunk_open: bool
    _chunk_wire: int
    _body_mark: int

    def on_chunk_header(self) -> None:
        self._chunk_open = True
        self._chunk_wire = 0
        self._body_mark = -1

    def on_chunk_complete(self) -> None:
        self._chunk_open = False


class RequestDecoder(ChunkTracking):
    """Feeds downstream bytes to llhttp and reports each request to the handler, in order."""

    __slots__ = ("on_body", "on_message_complete", "in_head", "started", "_handler", "_clock", "_parser", "_limit",
                 "_wire", "_span", "_bound", "_size", "_url", "_headers", "_host", "_cl", "_te", "_conn", "_upgrade",
                 "_expect", "_xff", "_rid", "_envoy", "_fields", "_stripped", "_valid_host", "_chunk_open",
                 "_chunk_wire", "_body_mark")

    def __init__(self, handler: RequestHandler, max_head: int = MAX_REQUEST_HEAD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._handler = handler
        self._clock = clock
        self.started = 0.0  # clock() at the first byte of the latest request
        # llhttp calls these directly: no hop through the decoder for body bytes
        self.on_body = handler.on_request_body
        self.on_message_complete = handler.on_request_complete
        self._limit = max_head
        self.in_head = False
        self._wire = 0
        self._span = 0
        self._stripped = False
        self._valid_host = b""  # the last Host value found valid: a keep-alive client repeats it
        self._chunk_open = False
        self._chunk_wire = 0
        self._body_mark = -1
        self._parser = self._new_parser()

    def _new_parser(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self)
        # bytes after a `Connection: close` request are ignored (the connection closes after its
        # response) rather than answered with a 400 behind it
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
        return parser

    def release(self) -> None:
        """Let go of the llhttp parser, for good. The parser calls this decoder's methods and the decoder
        calls the handler's: without this, a dropped decoder, its parser and their handler form a cycle
        that only the cyclic garbage collector frees (a connection's worth of objects per connection)."""
        self._parser = self._handler = self.on_body = self.on_message_complete = None  # type: ignore[assignment]

    def restart(self) -> None:
        """Parse what follows an upgrade request's head as HTTP again (llhttp stops for good there)."""
        self._parser = self._new_parser()
        self.in_head = False
        self._chunk_open = False

    def feed(self, data: bytes) -> int | None:
        """Parse `data`; the offset where raw tunnel bytes start after an Upgrade/CONNECT head, else None.

        Raises CodecError for malformed input; an exception raised by the handler propagates as is.
        """
        was_in_head = self.in_head
        # no head completed in this chunk is longer than the chunks it spans: the exact size of a head
        # is only computed when this bound passes the limit
        self._bound = self._span + len(data) if was_in_head else len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = int(exc.args[0])
            if not self._stripped:
                return offset
            # an h2c upgrade, stripped: what follows is the next request
            self._stripped = False
            self.restart()
            return self.feed(data[offset:]) if offset < len(data) else None
        except httptools.HttpParserCallbackError as exc:
            if exc.__context__ is not None:
                raise exc.__context__ from None
            raise CodecError(400, str(exc)) from None
        except httptools.HttpParserError as exc:
            raise CodecError(400, str(exc) or "malformed request") from None
        if self.in_head:
            self._span = self._bound
            self._unfinished_head(data, was_in_head)
        elif self._chunk_open:
            self._chunk_wire += len(data)
            if self._chunk_wire > self._limit + WIRE_SLACK:
                self._check_chunk_progress()
        return None

    def _unfinished_head(self, data: bytes, was_in_head: bool) -> None:
        """A head still incomplete after a read: bound what llhttp accumulates, spot HTTP/0.9."""
        if was_in_head:
            # the whole chunk belonged to an unfinished head
            self._wire += len(data)
            if self._wire > self._limit + WIRE_SLACK:
                raise CodecError(431, "request head too large")
            if len(self._headers) + self._fields + (len(self._envoy) if self._envoy else 0) > MAX_HEADERS:
                raise CodecError(431, "too many request headers")
        if self._url and self._parser.get_http_version() == "0.0":
            # llhttp sets the version once it has read it: a request line that ended without one is
            # HTTP/0.9, whose client waits for an answer without sending a blank line
            line_ended = b"\n" in data if was_in_head else data.rstrip(b"\r\n").endswith(self._url) and (
                data.endswith(b"\n"))
            if line_ended:
                raise CodecError(426, "HTTP/0.9 is not supported")

    def _check_chunk_progress(self) -> None:
        """Over 60 KiB read while one chunk is open: fine if body bytes came, else it is the trailer
        section (after the last chunk) growing inside llhttp's field buffer."""
        body = self._handler.request_body_bytes()
        if body == self._body_mark:
            raise CodecError(431, "request trailers too large")
        self._body_mark = body
        self._chunk_wire = 0

    # llhttp callbacks

    def on_message_begin(self) -> None:
        self.in_head = True
        self._wire = 0
        # the per-request fields, set here only (llhttp calls nothing else before this)
        self._size = self._fields = 0
        self._url = b""
        self._headers = []
        self._host = self._cl = self._te = self._conn = self._upgrade = self._xff = self._rid = self._envoy = None
        self._expect = False
        self.started = self._clock()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            self._trailer(name, value)
            return
        name = name.lower()
        kind = _REQUEST_HEADERS.get(name)
        if kind is None:
            self._headers.append((name, value))  # counted at the end, and only if the head may be too big
            return
        # headers not kept in the list are counted as they come
        self._size += len(name) + len(value)
        self._fields += 1
        if kind == F_HOST:
            if self._host is not None:
                raise CodecError(400, "multiple host headers")
            self._host = value
        elif kind == F_CL:
            self._cl = value
        elif kind == F_TE:
            self._te = value if self._te is None else self._te + b", " + value
        elif kind == F_CONN:
            self._conn = value if self._conn is None else self._conn + b", " + value
        elif kind == F_UPGRADE:
            self._upgrade = value
        elif kind == F_EXPECT:
            if value.strip().lower() == b"100-continue":
                self._expect = True
            else:
                self._size -= len(name) + len(value)  # kept in the list: counted there
                self._fields -= 1
                self._headers.append((name, value))
        elif kind == F_XFF:
            self._xff = value if self._xff is None else self._xff + b", " + value
        elif kind == F_RID:
            self._rid = value
        elif kind == F_ENVOY:
            self._size -= len(name) + len(value)  # counted with the list
            self._fields -= 1
            if self._envoy is None:
                self._envoy = []
            self._envoy.append((name, value))

    def _trailer(self, name: bytes, value: bytes) -> None:
        """A trailer field: counted against the limits, then dropped."""
        self._size += len(name) + len(value)
        self._fields += 1
        if self._fields > MAX_HEADERS or self._size > self._limit:
            raise CodecError(431, "request trailers too large")

    def on_headers_complete(self) -> None:
        headers = self._headers
        if self._bound > COUNT_BOUND:  # else too short to break a limit
            self._check_head_size()
        parser = self._parser
        keep_alive = parser.should_keep_alive()
        if keep_alive and self._conn is None:
            http10 = False  # only HTTP/1.1 keeps alive without a Connection header (llhttp)
        else:
            version = parser.get_http_version()
            if version == "1.1":
                http10 = False
            elif version == "1.0":
                http10 = True
                if self._te is not None:  # RFC 9112 §6.1: a 1.0 message is not framed by it
                    raise CodecError(400, "transfer-encoding in an HTTP/1.0 request")
            elif version == "0.9":
                raise CodecError(426, "HTTP/0.9 is not supported")
            else:
                raise CodecError(505, f"HTTP/{version} is not supported")
        url = self._url
        host = self._host
        if host is None:
            if not http10 and url[:1] == b"/":
                raise CodecError(400, "missing host header")
        elif host != self._valid_host:
            if _INVALID_HOST.search(host) is not None:
                raise CodecError(400, "invalid host header")
            self._valid_host = host
        upgrade = None
        if self._conn is not None:
            headers = drop_named(headers, self._conn)
            if self._upgrade is not None and b"upgrade" in connection_tokens(self._conn):
                upgrade = self._upgrade
                if upgrade.strip().lower() == _H2C:
                    upgrade = None  # Envoy's codec: h2c is not supported, the request goes on as HTTP/1.1
                    self._stripped = True
                    headers = [h for h in headers if h[0] != b"http2-settings"]
        self.in_head = False  # only now: a head rejected above still counts from `started`
        self._size = self._fields = 0  # from here on: the trailers
        self._handler.on_request_head(RequestHead(
            parser.get_method(), url, http10, headers, host,
            None if self._cl is None else int(self._cl),  # llhttp has checked it is digits only
            self._te is not None and is_chunked(self._te),
            keep_alive, upgrade, self._expect, self._xff, self._rid, self._envoy,
        ))

    def _check_head_size(self) -> None:
        headers = self._headers
        count = len(headers) + self._fields + (len(self._envoy) if self._envoy else 0)
        if count > MAX_HEADERS:
            raise CodecError(431, "too many request headers")
        if self._bound > self._limit and self._size + len(self._url) + list_size(headers) + (
                list_size(self._envoy) if self._envoy else 0) > self._limit:
            raise CodecError(431, "request head too large")


def check_target(method: bytes, url: bytes) -> None:
    """A request-target that is not origin-form (RFC 9112 §3.2), checked as Envoy does; raises CodecError.
    Called by the router for the rare targets that do not start with `/`, so origin-form pays nothing."""
    if url == b"*":
        if method != b"OPTIONS":
            raise CodecError(400, "'*' target with a method other than OPTIONS")
        return
    scheme_end = url.find(b"://")
    if scheme_end > 0:  # absolute-form
        rest = url[scheme_end + 3:]
        authority = rest[:authority_end(rest)]
        if not authority:
            raise CodecError(400, "absolute-form target with an empty authority")
        if b"@" in authority:
            raise CodecError(400, "absolute-form target with userinfo")
        if _INVALID_HOST.search(authority) is not None:
            raise CodecError(400, "invalid authority in the target")


def authority_end(rest: bytes) -> int:
    """Where the authority ends in `rest`, an absolute-form target after its `scheme://`: at the first
    `/`, `?` or `#`, else at the end."""
    end = len(rest)
    for sep in (b"/", b"?", b"#"):
        i = rest.find(sep)
        if 0 <= i < end:
            end = i
    return end


# serialization


def request_head(method: bytes, target: bytes, host: bytes | None, headers: Iterable[Header],
                 tail: Iterable[bytes]) -> bytes:
    """An HTTP/1.1 request head. `tail` holds further complete header lines; the blank line is added."""
    # HTTP/1.1 needs a Host; an HTTP/1.0 request may have none: then it is empty (RFC 9112 §3.2)
    parts = [method, b" ", target, b" HTTP/1.1\r\nhost: ", host or b"", CRLF]
    for name, value in headers:
        parts += (name, b": ", value, CRLF)
    parts += tail
    parts.append(CRLF)
    return b"".join(parts)


def response_head(status_line: bytes, headers: Iterable[Header], tail: Iterable[bytes]) -> bytes:
    parts = [status_line]
    for name, value in headers:
        parts += (name, b": ", value, CRLF)
    parts += tail
    parts.append(CRLF)
    return b"".join(parts)


def chunk_size_line(size: int) -> bytes:
    return b"%x\r\n" % size
