"""HTTP/1.x wire format over httptools (llhttp), for both directions of the proxy.

Owns: turning bytes into request and response heads (`RequestHead`, `ResponseHead`) with request header
names lower-cased (response ones keep the upstream's case) and hop-by-hop, framing and proxy-owned headers
taken out into fields; the framing checks llhttp leaves to its user (Transfer-Encoding other than
`chunked`, several Host headers, HTTP versions, request-target and Host sanity, head and trailer limits);
head serialization (one join); chunked encoding.

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
_WIRE_SLACK = 8 * 1024

CRLF = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

Header = tuple[bytes, bytes]


class CodecError(Exception):
    """Bytes that are not acceptable HTTP/1.x; `status` is the answer a server owes for them."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class _SkipBody(Exception):  # noqa: N818 - a control-flow signal, not an error
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
_DROP, _HOST, _CL, _TE, _CONN, _UPGRADE, _EXPECT, _XFF, _RID, _ENVOY = range(10)
_HOP_BY_HOP = {b"keep-alive": _DROP, b"proxy-connection": _DROP, b"te": _DROP, b"trailer": _DROP,
               b"content-length": _CL, b"transfer-encoding": _TE, b"connection": _CONN, b"upgrade": _UPGRADE}
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
_REQUEST_HEADERS = {**_HOP_BY_HOP, b"host": _HOST, b"expect": _EXPECT, b"x-forwarded-for": _XFF,
                    b"x-forwarded-proto": _DROP, b"x-request-id": _RID, **dict.fromkeys(ENVOY_HEADERS, _ENVOY),
                    b"x-envoy-attempt-count": _DROP}  # the proxy sets it (its own attempt count)
# a Host value outside RFC 3986's authority characters (Envoy's authority check): whitespace, `/`, ...
_INVALID_HOST = re.compile(rb"[^A-Za-z0-9\-._~!$&'()*+,;=:@\[\]%]")
_H2C = b"h2c"
# a head shorter than this cannot hold more than MAX_HEADERS fields (each is 3 bytes or more)
_COUNT_BOUND = 3 * MAX_HEADERS
_CONNECTION_OPTIONS = frozenset((b"close", b"keep-alive", b"upgrade"))
# the Connection values nearly every peer sends: they name no header, so the token split can be skipped
_PLAIN_CONNECTION = frozenset((b"close", b"keep-alive", b"Close", b"Keep-Alive", b"upgrade", b"Upgrade"))


def connection_tokens(value: bytes) -> frozenset[bytes]:
    return frozenset(t.strip().lower() for t in value.split(b","))


def _drop_named(headers: list[Header], connection: bytes) -> list[Header]:
    """Also hop-by-hop: headers the Connection header names (RFC 9110 §7.6.1)."""
    if connection in _PLAIN_CONNECTION:
        return headers
    named = connection_tokens(connection) - _CONNECTION_OPTIONS
    return [h for h in headers if h[0].lower() not in named] if named else headers  # (response names keep case)


def _list_size(headers: list[Header]) -> int:
    return sum(len(name) + len(value) for name, value in headers)


def _is_chunked(value: bytes) -> bool:
    """Only `chunked` alone is accepted: other codings would be silently dropped when re-framing."""
    if value.strip().lower() != b"chunked":
        raise CodecError(501, f"unsupported transfer encoding {value.decode('latin-1')!r}")
    return True


class _ChunkTracking:
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


class RequestDecoder(_ChunkTracking):
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
            if self._chunk_wire > self._limit + _WIRE_SLACK:
                self._check_chunk_progress()
        return None

    def _unfinished_head(self, data: bytes, was_in_head: bool) -> None:
        """A head still incomplete after a read: bound what llhttp accumulates, spot HTTP/0.9."""
        if was_in_head:
            # the whole chunk belonged to an unfinished head
            self._wire += len(data)
            if self._wire > self._limit + _WIRE_SLACK:
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
        if kind == _HOST:
            if self._host is not None:
                raise CodecError(400, "multiple host headers")
            self._host = value
        elif kind == _CL:
            self._cl = value
        elif kind == _TE:
            self._te = value if self._te is None else self._te + b", " + value
        elif kind == _CONN:
            self._conn = value if self._conn is None else self._conn + b", " + value
        elif kind == _UPGRADE:
            self._upgrade = value
        elif kind == _EXPECT:
            if value.strip().lower() == b"100-continue":
                self._expect = True
            else:
                self._size -= len(name) + len(value)  # kept in the list: counted there
                self._fields -= 1
                self._headers.append((name, value))
        elif kind == _XFF:
            self._xff = value if self._xff is None else self._xff + b", " + value
        elif kind == _RID:
            self._rid = value
        elif kind == _ENVOY:
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
        if self._bound > _COUNT_BOUND:  # else too short to break a limit
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
            headers = _drop_named(headers, self._conn)
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
            self._te is not None and _is_chunked(self._te),
            keep_alive, upgrade, self._expect, self._xff, self._rid, self._envoy,
        ))

    def _check_head_size(self) -> None:
        headers = self._headers
        count = len(headers) + self._fields + (len(self._envoy) if self._envoy else 0)
        if count > MAX_HEADERS:
            raise CodecError(431, "too many request headers")
        if self._bound > self._limit and self._size + len(self._url) + _list_size(headers) + (
                _list_size(self._envoy) if self._envoy else 0) > self._limit:
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


def _any_case(name: bytes) -> bytes:
    """A regex for `name` in any case, without re.IGNORECASE (which makes the search try every byte)."""
    return b"".join(b"[%c%c]" % (c, c - 32) if 97 <= c <= 122 else re.escape(bytes((c,))) for c in name)


# A response head forwarded as bytes (see ResponseDecoder): the fields the proxy acts on or drops
# (framing, hop-by-hop), found by one search from each line start, and the hop-by-hop lines cut out
_RAW_DROPPED = (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade")
_RAW_FIELDS = re.compile(b"\\n(" + b"|".join(map(_any_case, (b"content-length", b"transfer-encoding", *_RAW_DROPPED)))
                         + b"):[ \\t]*([^\\r]*)")
_RAW_DROP = re.compile(b"\\n(?:" + b"|".join(map(_any_case, _RAW_DROPPED)) + b"):[^\\r]*\\r")
# below this many fields a head is parsed field by field: the search costs more than llhttp's per-field
# calls up to about nine fields (instructions per proxied request, benchmarks/l7_micro.py `--headers N` with
# an nginx response head: 5 fields +4.8k, 9 fields +0.2k, 15 fields -8.8k, 25 fields -24.9k)
RAW_MIN = 10
_RAW_MIN_BYTES = RAW_MIN * 16  # shorter than this, a head with RAW_MIN fields is too rare to look for


class _RawCallbacks:
    """llhttp's callbacks for a response whose head is forwarded as bytes: without `on_header`, llhttp
    makes no Python call per field."""

    __slots__ = ("on_headers_complete", "on_body", "on_message_complete")

    def __init__(self, decoder: ResponseDecoder) -> None:
        self.on_headers_complete = decoder._raw_headers_complete
        self.on_body = decoder.on_body
        self.on_message_complete = decoder.on_message_complete


class ResponseDecoder(_ChunkTracking):
    """Feeds upstream bytes to llhttp and reports the response to the handler.

    Set `head_request` before each request: a response to HEAD ends at its head whatever its
    Content-Length says. `keep_alive` tells, once a response is complete, whether the connection can
    carry another request.

    Set `raw_ok` when nothing will read the response's fields (no header operations): a final response
    whose whole head came in one read, of RAW_MIN fields or more, without Transfer-Encoding or a Connection
    header naming other fields, and within the limits, is then reported with its header lines as bytes
    (`ResponseHead.raw`) from a parser that makes no call per field. Any other response takes the parsed
    path (`headers`). Either way response header names keep the upstream's case.

    No `on_message_begin` callback (one Python call per response less): the per-response fields are
    reset when the previous response ends (and at creation), and the first bytes `feed` gets after that
    start the next head.
    """

    __slots__ = ("on_body", "head_request", "raw_ok", "keep_alive", "complete", "until_eof", "_handler", "_parser",
                 "_full", "_lean", "_raw", "_raw_cl", "_limit", "_wire", "_span", "_bound", "in_head", "_interim",
                 "_size", "_headers", "_cl", "_te", "_conn", "_upgrade", "_fields", "_chunk_open", "_chunk_wire",
                 "_body_mark", "_fresh")

    def __init__(self, handler: ResponseHandler, max_head: int = MAX_RESPONSE_HEAD) -> None:
        self._handler = handler
        self.on_body = handler.on_response_body
        self._limit = max_head
        self.head_request = False
        self.raw_ok = False
        self.keep_alive = True
        self.complete = False
        self.until_eof = False  # the body ends when the upstream closes the connection
        self.in_head = False
        self._interim = False
        self._span = 0
        self._chunk_open = False
        self._chunk_wire = 0
        self._body_mark = -1
        self._next_message()
        # two parsers, switched only between responses: one calls on_header per field, the other (made when
        # first needed) parses heads forwarded as bytes
        self._full = self._parser = httptools.HttpResponseParser(self)
        self._lean: httptools.HttpResponseParser | None = None
        self._raw: bytes | None = None
        self._raw_cl: int | None = None

    def release(self) -> None:
        """Let go of the llhttp parsers, for good (see RequestDecoder.release): the connection is gone."""
        self._parser = self._full = self._lean = self._handler = self.on_body = None  # type: ignore[assignment]

    def _next_message(self) -> None:
        """The per-response fields, for the response that the next bytes begin."""
        self._fresh = True
        self._wire = 0
        self._size = self._fields = 0
        self._headers = []
        self._cl = self._te = self._conn = self._upgrade = None

    def feed(self, data: bytes) -> int | None:
        """Parse `data`; the offset where tunnel bytes start after a 101 head, else None."""
        was_in_head = self.in_head
        if self._fresh:  # these bytes begin a response
            self._fresh = False
            self.in_head = True
            self.complete = False
            self.until_eof = False
            if self.raw_ok and len(data) >= _RAW_MIN_BYTES and self._raw_head(data):
                parser = self._lean
                if parser is None:
                    parser = self._lean = httptools.HttpResponseParser(_RawCallbacks(self))
                self._parser = parser
            elif self._parser is not self._full:
                self._parser = self._full
        # no head completed in this chunk is longer than the chunks it spans: the exact size of a head
        # is only computed when this bound passes the limit
        self._bound = self._span + len(data) if was_in_head else len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            return int(exc.args[0])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _SkipBody):
                # llhttp stopped in the error state: a fresh parser for the next response. Bytes after
                # the head in the same read would be lost, so such a connection is not reused.
                if self._parser is self._lean:
                    self._lean = None
                else:
                    self._full = self._parser = httptools.HttpResponseParser(self)
                self.keep_alive = self.keep_alive and data.endswith(b"\n")
                self._message_complete()
                return None
            if cause is not None:
                raise cause from None
            raise CodecError(502, str(exc)) from None
        except httptools.HttpParserError as exc:
            raise CodecError(502, str(exc) or "malformed response") from None
        if self.in_head:
            self._span = self._bound
        if was_in_head and self.in_head:
            self._wire += len(data)
            if self._wire > self._limit + _WIRE_SLACK:
                raise CodecError(502, "response head too large")
            if len(self._headers) + self._fields > MAX_HEADERS:
                raise CodecError(502, "too many response headers")
        elif self._chunk_open:  # as for requests: a trailer field growing without end
            self._chunk_wire += len(data)
            if self._chunk_wire > self._limit + _WIRE_SLACK:
                body = self._handler.response_body_bytes()
                if body == self._body_mark:
                    raise CodecError(502, "response trailers too large")
                self._body_mark = body
                self._chunk_wire = 0
        return None

    def _raw_head(self, data: bytes) -> bool:
        """Whether the response `data` begins can be forwarded with its head as bytes; if so, its header
        lines without hop-by-hop ones (Content-Length stays) go in `_raw`, its Content-Length in `_raw_cl`."""
        end = data.find(b"\r\n\r\n")  # llhttp wants CRLFs and no folding: this is where the head ends
        # data[9]: the status code's first digit (llhttp reads `HTTP/x.y ` then 3 digits); 1xx and 101
        # take the parsed path, and so do heads that could break a limit (it has the exact checks)
        if end < _RAW_MIN_BYTES or data[9] < 50 or end > self._limit:
            return False
        fields = data.count(b"\n", 0, end)  # (the status line's LF and all but the last field's)
        if fields < RAW_MIN or fields > MAX_HEADERS:
            return False
        line_end = data.find(b"\n")  # of the status line
        content_length = None
        drop = False
        for name, value in _RAW_FIELDS.findall(data, line_end, end):
            name = name.lower()
            if name == b"content-length":
                if not value.rstrip().isdigit() or data[9:12] == b"204":
                    return False  # llhttp's error, or a length a 204 must not carry: the parsed path
                content_length = int(value)
            elif name == b"transfer-encoding" or (name == b"connection" and value.rstrip().lower() not in
                                                  _CONNECTION_OPTIONS):
                return False  # re-chunked, or a Connection header that may name fields to drop
            else:
                drop = True
        self._raw = _RAW_DROP.sub(b"", data[line_end:end + 2])[1:] if drop else data[line_end + 1:end + 2]
        self._raw_cl = content_length
        return True

    def finish(self) -> bool:
        """The upstream closed: True if that completed a response delimited by the connection close."""
        if self.until_eof and not self.complete:
            self.keep_alive = False
            self._message_complete()
            return True
        return False

    # llhttp callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:  # a trailer: counted against the limits, then dropped
            self._size += len(name) + len(value)
            self._fields += 1
            if self._fields > MAX_HEADERS or self._size > self._limit:
                raise CodecError(502, "response trailers too large")
            return
        kind = _HOP_BY_HOP.get(name.lower())
        if kind is None:
            self._headers.append((name, value))  # as received: names keep the upstream's case
            return
        self._size += len(name) + len(value)
        self._fields += 1
        if kind == _CL:
            self._cl = value
        elif kind == _TE:
            self._te = value if self._te is None else self._te + b", " + value
        elif kind == _CONN:
            self._conn = value if self._conn is None else self._conn + b", " + value
        elif kind == _UPGRADE:
            self._upgrade = value

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self._bound > _COUNT_BOUND:  # else too short to break a limit
            if len(self._headers) + self._fields > MAX_HEADERS:
                raise CodecError(502, "too many response headers")
            if self._bound > self._limit and self._size + _list_size(self._headers) > self._limit:
                raise CodecError(502, "response head too large")
        self._size = self._fields = 0  # from here on: the trailers
        parser = self._parser
        status = parser.get_status_code()
        headers = self._headers if self._conn is None else _drop_named(self._headers, self._conn)
        try:
            chunked = self._te is not None and _is_chunked(self._te)
        except CodecError as exc:
            raise CodecError(502, str(exc)) from None
        content_length = None if self._cl is None else int(self._cl)
        self.keep_alive = parser.should_keep_alive()
        self._interim = status < 200
        no_body = status < 200 or status == 204 or status == 304 or self.head_request
        self.until_eof = not (no_body or chunked or content_length is not None)
        self._handler.on_response_head(ResponseHead(status, headers, content_length, chunked,
                                                    self._upgrade))
        if self.head_request and not self._interim:
            raise _SkipBody

    def _raw_headers_complete(self) -> None:
        """on_headers_complete for a head that `_raw_head` accepted (a final response, not chunked)."""
        self.in_head = False
        parser = self._parser
        status = parser.get_status_code()
        content_length = self._raw_cl
        self.keep_alive = parser.should_keep_alive()
        head_request = self.head_request
        self.until_eof = content_length is None and not (status == 204 or status == 304 or head_request)
        self._handler.on_response_head(ResponseHead(status, [], content_length, False, None, self._raw))
        if head_request:
            raise _SkipBody

    def on_message_complete(self) -> None:
        if self._interim:  # 1xx: the final response follows on the same connection, maybe in this read
            self._interim = False
            self._next_message()
            self._fresh = False
            self.in_head = True
            return
        self.complete = True  # _message_complete(), inlined: this runs once per response
        self.until_eof = False
        # _next_message(), inlined
        self._fresh = True
        self._wire = self._size = self._fields = 0
        self._headers = []
        self._cl = self._te = self._conn = self._upgrade = None
        self._handler.on_response_complete()

    def _message_complete(self) -> None:
        self.complete = True
        self.until_eof = False
        self._next_message()
        self._handler.on_response_complete()


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
