"""HTTP/1.x wire format over httptools (llhttp), for both directions of the proxy.

Owns: turning bytes into request and response heads (`RequestHead`, `ResponseHead`) with header names
lower-cased and hop-by-hop, framing and proxy-owned headers taken out into fields; the framing checks
llhttp leaves to its user (Transfer-Encoding other than `chunked`, several Host headers, HTTP versions,
head size limits); head serialization (one join); chunked encoding.

Rule: nothing here buffers a body. Body bytes go to the handler's `on_*_body` as llhttp yields them, so
the caller decides where they go and when to stop reading. llhttp already rejects a message with both
Content-Length and Transfer-Encoding, and duplicate Content-Length headers (identical or not).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import httptools

MAX_REQUEST_HEAD = 60 * 1024  # Envoy's default max_request_headers_kb
MAX_RESPONSE_HEAD = 60 * 1024  # Envoy's default max_response_headers_kb
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

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(slots=True)
class ResponseHead:
    # the reason phrase is not kept: the client gets the standard one for the status, as from Envoy
    status: int
    headers: list[Header]  # lower-case names; without hop-by-hop and framing headers
    content_length: int | None
    chunked: bool
    upgrade: bytes | None


class RequestHandler(Protocol):
    def on_request_head(self, head: RequestHead) -> None: ...
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_complete(self) -> None: ...


class ResponseHandler(Protocol):
    def on_response_head(self, head: ResponseHead) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_complete(self) -> None: ...


# how the request decoder treats a header (anything not listed is forwarded as is)
_DROP, _HOST, _CL, _TE, _CONN, _UPGRADE, _EXPECT, _XFF, _RID = range(9)
_HOP_BY_HOP = {b"keep-alive": _DROP, b"proxy-connection": _DROP, b"te": _DROP, b"trailer": _DROP,
               b"content-length": _CL, b"transfer-encoding": _TE, b"connection": _CONN, b"upgrade": _UPGRADE}
_REQUEST_HEADERS = {**_HOP_BY_HOP, b"host": _HOST, b"expect": _EXPECT, b"x-forwarded-for": _XFF,
                    b"x-forwarded-proto": _DROP, b"x-request-id": _RID,
                    b"x-envoy-attempt-count": _DROP}  # the proxy sets it (its own attempt count)
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
    return [h for h in headers if h[0] not in named] if named else headers


def _list_size(headers: list[Header]) -> int:
    return sum(len(name) + len(value) for name, value in headers)


def _is_chunked(value: bytes) -> bool:
    """Only `chunked` alone is accepted: other codings would be silently dropped when re-framing."""
    if value.strip().lower() != b"chunked":
        raise CodecError(501, f"unsupported transfer encoding {value.decode('latin-1')!r}")
    return True


class RequestDecoder:
    """Feeds downstream bytes to llhttp and reports each request to the handler, in order."""

    __slots__ = ("on_body", "on_message_complete", "in_head", "started", "_handler", "_clock", "_parser", "_limit",
                 "_wire", "_span", "_bound", "_size", "_url", "_headers", "_host", "_cl", "_te", "_conn", "_upgrade",
                 "_expect", "_xff", "_rid")

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
        self._parser = httptools.HttpRequestParser(self)
        # bytes after a `Connection: close` request are ignored (the connection closes after its
        # response) rather than answered with a 400 behind it
        self._parser.set_dangerous_leniencies(lenient_data_after_close=True)

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
            return int(exc.args[0])
        except httptools.HttpParserCallbackError as exc:
            if exc.__context__ is not None:
                raise exc.__context__ from None
            raise CodecError(400, str(exc)) from None
        except httptools.HttpParserError as exc:
            raise CodecError(400, str(exc) or "malformed request") from None
        if self.in_head:
            self._span = self._bound
        if was_in_head and self.in_head:
            # the whole chunk belonged to an unfinished head: bound what llhttp accumulates for us
            self._wire += len(data)
            if self._wire > self._limit + _WIRE_SLACK:
                raise CodecError(431, "request head too large")
        return None

    # llhttp callbacks

    def on_message_begin(self) -> None:
        self.in_head = True
        self._wire = 0
        # the per-request fields, set here only (llhttp calls nothing else before this)
        self._size = 0
        self._url = b""
        self._headers = []
        self._host = self._cl = self._te = self._conn = self._upgrade = self._xff = self._rid = None
        self._expect = False
        self.started = self._clock()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        kind = _REQUEST_HEADERS.get(name)
        if kind is None:
            self._headers.append((name, value))  # counted at the end, and only if the head may be too big
            return
        self._size += len(name) + len(value)  # headers not kept in the list are counted as they come
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
                self._headers.append((name, value))
        elif kind == _XFF:
            self._xff = value if self._xff is None else self._xff + b", " + value
        elif kind == _RID:
            self._rid = value

    def on_headers_complete(self) -> None:
        if self._bound > self._limit and self._size + len(self._url) + _list_size(self._headers) > self._limit:
            raise CodecError(431, "request head too large")
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
            else:
                raise CodecError(505, f"HTTP/{version} is not supported")
        url = self._url
        if self._host is None and not http10 and url[:1] == b"/":
            raise CodecError(400, "missing host header")
        headers = self._headers
        upgrade = None
        if self._conn is not None:
            headers = _drop_named(headers, self._conn)
            if self._upgrade is not None and b"upgrade" in connection_tokens(self._conn):
                upgrade = self._upgrade
        self.in_head = False  # only now: a head rejected above still counts from `started`
        self._handler.on_request_head(RequestHead(
            parser.get_method(), url, http10, headers, self._host,
            None if self._cl is None else int(self._cl),  # llhttp has checked it is digits only
            self._te is not None and _is_chunked(self._te),
            keep_alive, upgrade, self._expect, self._xff, self._rid,
        ))


class ResponseDecoder:
    """Feeds upstream bytes to llhttp and reports the response to the handler.

    Set `head_request` before each request: a response to HEAD ends at its head whatever its
    Content-Length says. `keep_alive` tells, once a response is complete, whether the connection can
    carry another request.
    """

    __slots__ = ("on_body", "head_request", "keep_alive", "complete", "until_eof", "_handler", "_parser",
                 "_limit", "_wire", "_span", "_bound", "in_head", "_interim", "_size", "_headers", "_cl", "_te",
                 "_conn", "_upgrade")

    def __init__(self, handler: ResponseHandler, max_head: int = MAX_RESPONSE_HEAD) -> None:
        self._handler = handler
        self.on_body = handler.on_response_body
        self._limit = max_head
        self.head_request = False
        self.keep_alive = True
        self.complete = False
        self.until_eof = False  # the body ends when the upstream closes the connection
        self.in_head = False
        self._interim = False
        self._wire = 0
        self._span = 0
        self._parser = httptools.HttpResponseParser(self)

    def feed(self, data: bytes) -> int | None:
        """Parse `data`; the offset where tunnel bytes start after a 101 head, else None."""
        was_in_head = self.in_head
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
                self._parser = httptools.HttpResponseParser(self)
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
        return None

    def finish(self) -> bool:
        """The upstream closed: True if that completed a response delimited by the connection close."""
        if self.until_eof and not self.complete:
            self.keep_alive = False
            self._message_complete()
            return True
        return False

    # llhttp callbacks

    def on_message_begin(self) -> None:
        self.in_head = True
        self.complete = False
        self.until_eof = False
        self._wire = 0
        # the per-response fields, set here only (llhttp calls nothing else before this)
        self._size = 0
        self._headers = []
        self._cl = self._te = self._conn = self._upgrade = None

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        kind = _HOP_BY_HOP.get(name)
        if kind is None:
            self._headers.append((name, value))  # counted at the end, and only if the head may be too big
            return
        self._size += len(name) + len(value)
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
        if self._bound > self._limit and self._size + _list_size(self._headers) > self._limit:
            raise CodecError(502, "response head too large")
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

    def on_message_complete(self) -> None:
        if self._interim:  # 1xx: the final response follows on the same connection
            self._interim = False
            return
        self.complete = True  # _message_complete(), inlined: this runs once per response
        self.until_eof = False
        self._handler.on_response_complete()

    def _message_complete(self) -> None:
        self.complete = True
        self.until_eof = False
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
