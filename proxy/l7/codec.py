"""HTTP/1.x wire format over httptools (llhttp), for both directions of the proxy.

Owns: turning bytes into request and response heads (`RequestHead`, `ResponseHead`) with request header
names lower-cased (response ones keep the upstream's case) and hop-by-hop, framing and proxy-owned headers
taken out into fields; the framing checks llhttp leaves to its user (Transfer-Encoding other than
`chunked`, several Host headers, HTTP versions, request-target and Host sanity, head and trailer limits);
head serialization (one join); chunked encoding. The decoders are `RequestDecoder` (request_decoder.py)
and `ResponseDecoder` (response_decoder.py); this module holds what they share (heads, limits, errors,
the header table, framing helpers) and what the rest of the proxy needs without a decoder.

Limits, as Envoy's defaults: a head, and separately the trailers of a chunked message, may hold at most
60 KiB of names and values and 100 fields; a request over either gets 431, a response 502 (the upstream
broke the protocol). Trailers are read and counted, then dropped (Envoy's HTTP/1 default). An `h2c`
upgrade is stripped by the request decoder (Upgrade and HTTP2-Settings removed, the request goes on as
plain HTTP/1.1), as Envoy's codec does; any other upgrade is reported in `RequestHead.upgrade` for the
caller to allow or refuse.

Rule: nothing here buffers a body. Body bytes go to the handler's `on_*_body` as llhttp yields them, so
the caller decides where they go and when to stop reading. llhttp already rejects a message with both
Content-Length and Transfer-Encoding, and duplicate Content-Length headers (identical or not).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

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
# a Host value outside RFC 3986's authority characters (Envoy's authority check): whitespace, `/`, ...
INVALID_HOST = re.compile(rb"[^A-Za-z0-9\-._~!$&'()*+,;=:@\[\]%]")
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
        if INVALID_HOST.search(authority) is not None:
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
