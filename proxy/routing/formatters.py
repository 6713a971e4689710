"""Envoy's `%VAR%` operators in header values (Istio `headers.request/response.set/add`).

A value is parsed once, at compile time: a value without `%` stays a plain string (no cost per request),
one with operators becomes a `Format`, rendered per request against a `FormatContext` that looks up
only what its operators ask for. Syntax as Envoy's substitution formatter: `%NAME%`, `%NAME(arg)%`,
`%NAME(arg):maxlen%`; `%%` is a literal `%`. An unknown operator is a config problem (Envoy rejects
the route); the compiler reports it and keeps the value literal. No I/O, no asyncio.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Header = tuple[bytes, bytes]

_OPERATOR = re.compile(r"%([A-Z0-9_]+)(?:\(([^)]*)\))?(?::([0-9]+))?%")


class FormatContext:
    """What one request's operators may read; addresses are looked up on first use only."""

    __slots__ = ("transport", "headers", "upstream_host", "cluster_name", "start_wall", "protocol",
                 "route_name", "response_headers", "response_code", "_peer", "_local")

    def __init__(self, transport: Any, headers: Sequence[Header], upstream_host: str, cluster_name: str,
                 start_wall: float, protocol: str, route_name: str) -> None:
        self.transport = transport  # the downstream transport (get_extra_info), or None
        self.headers = headers
        self.upstream_host = upstream_host
        self.cluster_name = cluster_name
        self.start_wall = start_wall
        self.protocol = protocol
        self.route_name = route_name
        self.response_headers: Sequence[Header] = ()
        self.response_code = 0
        self._peer: tuple[str, int] | None = None
        self._local: tuple[str, int] | None = None

    def _address(self, which: str) -> tuple[str, int]:
        info = self.transport.get_extra_info(which) if self.transport is not None else None
        return (str(info[0]), int(info[1])) if info else ("", 0)

    @property
    def peer(self) -> tuple[str, int]:
        if self._peer is None:
            self._peer = self._address("peername")
        return self._peer

    @property
    def local(self) -> tuple[str, int]:
        if self._local is None:
            self._local = self._address("sockname")
        return self._local


def _with_port(address: tuple[str, int]) -> str:
    host, port = address
    if not host:
        return ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _header(headers: Sequence[Header], arg: str) -> str:
    """REQ(name) / REQ(name?alternative): the first header present, values of repeats joined by `,`."""
    for name in arg.split("?"):
        wanted = name.strip().lower().encode("latin-1")
        if wanted in (b":authority", b"host"):
            wanted = b"host"
        values = [v for n, v in headers if n.lower() == wanted]  # response names keep the upstream's case
        if values:
            return b",".join(values).decode("latin-1")
    return ""


_SUBSECONDS = re.compile(r"%E?([369])[Sf]|%f")


def _start_time(ctx: FormatContext, arg: str) -> str:
    """START_TIME, by default as Envoy: 2024-05-01T12:00:00.123Z; else a strftime format (UTC) that may
    hold %3f/%6f/%9f (or %E3S...) for fractions of seconds."""
    wall = ctx.start_wall
    tm = time.gmtime(wall)
    if not arg:
        return time.strftime("%Y-%m-%dT%H:%M:%S", tm) + f".{int(wall % 1 * 1000):03d}Z"

    def fraction(m: re.Match[str]) -> str:
        digits = int(m.group(1) or 6)
        text = f"{wall % 1:.9f}"[2:2 + digits]
        return text if "E" not in m.group(0) else time.strftime("%S", tm) + "." + text

    return time.strftime(_SUBSECONDS.sub(fraction, arg), tm)


_HOSTNAME: list[str] = []


def _hostname() -> str:
    if not _HOSTNAME:
        _HOSTNAME.append(socket.gethostname())
    return _HOSTNAME[0]


OPERATORS: dict[str, Callable[[FormatContext, str], str]] = {
    "DOWNSTREAM_REMOTE_ADDRESS": lambda c, a: _with_port(c.peer),
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": lambda c, a: c.peer[0],
    "DOWNSTREAM_REMOTE_PORT": lambda c, a: str(c.peer[1]) if c.peer[0] else "",
    # no PROXY protocol or trusted hops here: the direct peer is the remote address
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": lambda c, a: _with_port(c.peer),
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": lambda c, a: c.peer[0],
    "DOWNSTREAM_LOCAL_ADDRESS": lambda c, a: _with_port(c.local),
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": lambda c, a: c.local[0],
    "DOWNSTREAM_LOCAL_PORT": lambda c, a: str(c.local[1]) if c.local[0] else "",
    "UPSTREAM_HOST": lambda c, a: c.upstream_host,
    "UPSTREAM_REMOTE_ADDRESS": lambda c, a: c.upstream_host,
    "UPSTREAM_CLUSTER": lambda c, a: c.cluster_name,
    "REQ": lambda c, a: _header(c.headers, a),
    "RESP": lambda c, a: _header(c.response_headers, a),
    "RESPONSE_CODE": lambda c, a: str(c.response_code) if c.response_code else "",
    "START_TIME": _start_time,
    "HOSTNAME": lambda c, a: _hostname(),
    "PROTOCOL": lambda c, a: c.protocol,
    "ROUTE_NAME": lambda c, a: c.route_name,
}
_NEEDS_ARG = {"REQ", "RESP"}

Part = str | tuple[Callable[[FormatContext, str], str], str, int]


@dataclass(frozen=True, slots=True)
class Format:
    """A parsed header value: literal strings and operators (function, argument, max length or 0)."""

    text: str
    parts: tuple[Part, ...]

    def render(self, ctx: FormatContext) -> bytes:
        out = []
        for part in self.parts:
            if type(part) is str:
                out.append(part)
                continue
            fn, arg, limit = part  # type: ignore[misc]
            value = fn(ctx, arg)
            out.append(value[:limit] if limit else value)
        return "".join(out).encode("latin-1", "replace")


def parse(value: str) -> tuple[str | Format, list[str]]:
    """A header value as a constant string (no operators) or a Format, and the problems found (unknown
    operators, a stray `%`); a value with problems is returned as the constant it reads as."""
    if "%" not in value:
        return value, []
    parts: list[Part] = []
    problems: list[str] = []
    literal: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch != "%":
            literal.append(ch)
            i += 1
            continue
        if value.startswith("%%", i):
            literal.append("%")
            i += 2
            continue
        m = _OPERATOR.match(value, i)
        if m is None:
            problems.append(f"'%' at position {i} does not start an operator (write %% for a literal %)")
            literal.append(ch)
            i += 1
            continue
        name, arg, limit = m.group(1), m.group(2) or "", m.group(3)
        fn = OPERATORS.get(name)
        if fn is None:
            problems.append(f"unknown operator %{name}%")
        elif name in _NEEDS_ARG and not arg:
            problems.append(f"%{name}% needs a header name: %{name}(name)%")
        else:
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append((fn, arg, int(limit) if limit else 0))
            i = m.end()
            continue
        literal.append(m.group(0))
        i = m.end()
    if literal:
        parts.append("".join(literal))
    if problems:
        return value, problems
    if all(type(p) is str for p in parts):
        return "".join(parts), []  # only `%%` escapes: a constant
    return Format(value, tuple(parts)), []
