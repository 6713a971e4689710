"""Local replies: the responses the proxy writes itself, with Envoy's status, body text and response flag.

Bodies are Envoy's texts (`no healthy upstream`, `upstream request timeout`, ...), so scripts and
dashboards written against Envoy see the same thing. A local reply carries `content-type: text/plain` when
it has a body (an empty body has no content type, as in Envoy) and a `date`; nothing else is invented.

Upstream failure codes (Envoy's router):
- connect refused / failed / timed out → 503 `UF` (`UF,URX` once the route's retries are spent);
- a circuit breaker of the cluster is full → 503 `UO`, `x-envoy-overloaded: true`;
- the upstream closed or reset the connection before a response head → 503 `UC`;
- the upstream sent something that is not HTTP/1.x → 502 `UPE` (Envoy's current default, runtime guard
  `return_502_for_upstream_protocol_errors`);
- the route timeout fired before the response head → 504 `UT`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from http import HTTPStatus

_RESET = b"upstream connect error or disconnect/reset before headers. reset reason: "


@dataclass(frozen=True, slots=True)
class LocalReply:
    status: int
    body: bytes
    flags: str  # Envoy response flag for metrics and the access log; "-" when none


NO_ROUTE = LocalReply(404, b"", "NR")
NO_CLUSTER = LocalReply(503, b"", "NC")
NO_HEALTHY_UPSTREAM = LocalReply(503, b"no healthy upstream", "UH")
CONNECT_FAILURE = LocalReply(503, _RESET + b"connection failure", "UF")
CONNECT_TIMEOUT = LocalReply(503, _RESET + b"connection timeout", "UF")
UPSTREAM_RESET = LocalReply(503, _RESET + b"connection termination", "UC")
UPSTREAM_PROTOCOL_ERROR = LocalReply(502, _RESET + b"protocol error", "UPE")
UPSTREAM_TIMEOUT = LocalReply(504, b"upstream request timeout", "UT")
REQUEST_HEADER_TIMEOUT = LocalReply(408, b"request header timeout", "-")
# a circuit breaker of the cluster is full (Envoy adds `x-envoy-overloaded: true`)
OVERFLOW = LocalReply(503, _RESET + b"overflow", "UO")
OVERLOADED_HEADERS = ((b"x-envoy-overloaded", b"true"),)
CONNECT_NOT_SUPPORTED = LocalReply(405, b"CONNECT is not supported", "-")
INTERNAL_ERROR = LocalReply(500, b"internal error", "-")


def fault_abort(status: int) -> LocalReply:
    """An abort injected by the route's `fault` (Envoy's fault filter): flag FI, Envoy's body."""
    return LocalReply(status, b"fault filter abort", "FI")


# Envoy writes response flags in this order, whatever order they were set in
_FLAG_ORDER = {flag: i for i, flag in enumerate((
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI",
    "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM"))}


def with_delay(flags: str) -> str:
    """`flags` of a request the route's `fault` delayed: DI added in Envoy's place."""
    return add_flag(flags, "DI")


def add_flag(flags: str, flag: str) -> str:
    """`flags` with `flag` added in Envoy's place."""
    if flags == "-":
        return flag
    parts = flags.split(",")
    if flag in parts:
        return flags
    return ",".join(sorted([*parts, flag], key=lambda f: _FLAG_ORDER.get(f, len(_FLAG_ORDER))))


def protocol_error(status: int) -> LocalReply:
    """A malformed request (400, 431, 501, 505): Envoy answers with the reason phrase and flag DPE."""
    return _PROTOCOL_ERRORS.get(status) or LocalReply(status, reason(status).encode(), "DPE")


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


# status lines for every code, so the hot path never formats one
STATUS_LINES: dict[int, bytes] = {
    code: f"HTTP/1.1 {code} {reason(code)}\r\n".encode() for code in range(100, 600)
}
_PROTOCOL_ERRORS = {code: LocalReply(code, reason(code).encode(), "DPE") for code in (400, 431, 501, 505)}

_date_second = -1
_date_line = b""


def date_line() -> bytes:
    """`date: <IMF-fixdate>\\r\\n`, formatted at most once a second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_line = b"date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode() + b"\r\n"
    return _date_line


def render(status: int, body: bytes, *, close: bool, http10_keep_alive: bool = False, head_only: bool = False,
           headers: tuple[tuple[bytes, bytes], ...] = (), content_type: bytes = b"text/plain") -> bytes:
    """The bytes of a complete response written by the proxy itself.

    `close` adds `connection: close`; `http10_keep_alive` adds `connection: keep-alive` (an HTTP/1.0
    client asked for it). For HEAD (`head_only`) the body is left out but its length still announced.
    """
    parts = [STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n".encode()]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if status < 200 or status == 204 or status == 304:
        body = b""  # these statuses never have a body nor a content-length (RFC 9110 §8.6)
        parts.append(date_line())
    else:
        if body:
            parts += (b"content-type: ", content_type, b"\r\n")
        parts += (b"content-length: ", str(len(body)).encode(), b"\r\n", date_line())
    if close:
        parts.append(b"connection: close\r\n")
    elif http10_keep_alive:
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if body and not head_only:
        parts.append(body)
    return b"".join(parts)
