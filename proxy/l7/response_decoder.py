"""Responses off the wire: `ResponseDecoder` turns upstream bytes into a `ResponseHead` (header names
keep the upstream's case; hop-by-hop and framing headers taken out into fields) and body bytes. A head of
RAW_MIN fields or more is kept as the bytes received, less its hop-by-hop lines, from a parser with no
per-field callback. The pieces it shares with the request side (heads, limits, errors, framing helpers)
are in codec.py.
"""

from __future__ import annotations

import re

import httptools

from proxy.l7.codec import (
    CONNECTION_OPTIONS,
    COUNT_BOUND,
    F_CL,
    F_CONN,
    F_TE,
    F_UPGRADE,
    HOP_BY_HOP,
    MAX_HEADERS,
    MAX_RESPONSE_HEAD,
    WIRE_SLACK,
    ChunkTracking,
    CodecError,
    ResponseHandler,
    ResponseHead,
    SkipBody,
    drop_named,
    is_chunked,
    list_size,
)

# A method called on an imported name compiles, in CPython 3.11, as if the name were a module: a bound
# method made per call (LOAD_ATTR), not LOAD_METHOD. So the per-field look-up is bound once, here.
_field_kind = HOP_BY_HOP.get


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


class ResponseDecoder(ChunkTracking):
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
            if isinstance(cause, SkipBody):
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
            if self._wire > self._limit + WIRE_SLACK:
                raise CodecError(502, "response head too large")
            if len(self._headers) + self._fields > MAX_HEADERS:
                raise CodecError(502, "too many response headers")
        elif self._chunk_open:  # as for requests: a trailer field growing without end
            self._chunk_wire += len(data)
            if self._chunk_wire > self._limit + WIRE_SLACK:
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
                                                  CONNECTION_OPTIONS):
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
        kind = _field_kind(name.lower())
        if kind is None:
            self._headers.append((name, value))  # as received: names keep the upstream's case
            return
        self._size += len(name) + len(value)
        self._fields += 1
        if kind == F_CL:
            self._cl = value
        elif kind == F_TE:
            self._te = value if self._te is None else self._te + b", " + value
        elif kind == F_CONN:
            self._conn = value if self._conn is None else self._conn + b", " + value
        elif kind == F_UPGRADE:
            self._upgrade = value

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self._bound > COUNT_BOUND:  # else too short to break a limit
            if len(self._headers) + self._fields > MAX_HEADERS:
                raise CodecError(502, "too many response headers")
            if self._bound > self._limit and self._size + list_size(self._headers) > self._limit:
                raise CodecError(502, "response head too large")
        self._size = self._fields = 0  # from here on: the trailers
        parser = self._parser
        status = parser.get_status_code()
        headers = self._headers if self._conn is None else drop_named(self._headers, self._conn)
        try:
            chunked = self._te is not None and is_chunked(self._te)
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
            raise SkipBody

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
            raise SkipBody

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
