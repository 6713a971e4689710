"""Requests off the wire: `RequestDecoder` turns downstream bytes into `RequestHead`s (header names
lower-cased; hop-by-hop, framing and proxy-owned headers taken out into fields) and body bytes, and
checks what llhttp leaves to its user (Transfer-Encoding other than `chunked`, several Host headers,
HTTP versions, Host sanity, head and trailer limits). An `h2c` upgrade is stripped here, as Envoy's
codec does. The shared pieces (heads, limits, errors, framing helpers) are in codec.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httptools

from proxy.l7.codec import (
    COUNT_BOUND,
    ENVOY_HEADERS,
    F_CL,
    F_CONN,
    F_DROP,
    F_ENVOY,
    F_EXPECT,
    F_HOST,
    F_RID,
    F_TE,
    F_UPGRADE,
    F_XFF,
    HOP_BY_HOP,
    INVALID_HOST,
    MAX_HEADERS,
    MAX_REQUEST_HEAD,
    WIRE_SLACK,
    ChunkTracking,
    CodecError,
    RequestHandler,
    RequestHead,
    connection_tokens,
    drop_named,
    is_chunked,
    list_size,
)

_REQUEST_HEADERS = {**HOP_BY_HOP, b"host": F_HOST, b"expect": F_EXPECT, b"x-forwarded-for": F_XFF,
                    b"x-forwarded-proto": F_DROP, b"x-request-id": F_RID, **dict.fromkeys(ENVOY_HEADERS, F_ENVOY),
                    b"x-envoy-attempt-count": F_DROP}  # the proxy sets it (its own attempt count)
_H2C = b"h2c"


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
            if INVALID_HOST.search(host) is not None:
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
