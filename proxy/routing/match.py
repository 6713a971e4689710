"""Compiled request predicates: Istio StringMatch, HTTPMatchRequest and L4MatchAttributes.

Every predicate is built once at compile time (regexes compiled, case folded) so the request path only
calls `matches`. No I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from proxy.routing.regex import FullMatch

MatchKind = Literal["exact", "prefix", "regex", "present"]


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """Istio StringMatch. `present` is the empty StringMatch `{}` (the value only has to exist)."""

    kind: MatchKind
    value: str = ""
    ignore_case: bool = False
    regex: FullMatch | None = field(default=None, compare=False)  # RE2, as Envoy

    @staticmethod
    def build(kind: MatchKind, value: str = "", ignore_case: bool = False) -> StringMatcher:
        if kind == "regex":  # RE2 syntax; case options do not apply (use (?i))
            return StringMatcher(kind, value, False, FullMatch(value))
        return StringMatcher(kind, value.lower() if ignore_case else value, ignore_case)

    def matches(self, candidate: str | None) -> bool:
        if candidate is None:
            return False
        kind = self.kind
        if kind == "present":
            return True
        if self.ignore_case:
            candidate = candidate.lower()
        if kind == "exact":
            return candidate == self.value
        if kind == "prefix":
            return candidate.startswith(self.value)
        assert self.regex is not None
        return self.regex(candidate)  # RE2 semantics in Istio: whole value

    def describe(self) -> str:
        return "present" if self.kind == "present" else f"{self.kind} {self.value!r}"


def split_authority(authority: str) -> tuple[str, int | None]:
    """`host:port` → (host, port); an IPv6 literal keeps its brackets; no port → None."""
    if authority.endswith("]") or ":" not in authority:
        return authority, None
    host, _, port = authority.rpartition(":")
    return (host, int(port)) if port.isdigit() else (authority, None)


@dataclass(slots=True)
class RequestView:
    """What HTTP matching looks at. Header names are lower case; `path` has no query string."""

    method: str
    path: str
    query: dict[str, str]
    authority: str  # lower case, with its port when the request has one (Istio matches :authority as sent)
    scheme: str
    headers: dict[str, str]  # lower-case name → value (repeated headers joined with ",")
    port: int  # listener port


@dataclass(frozen=True, slots=True)
class HttpMatch:
    """One HTTPMatchRequest block: every present condition must hold (AND)."""

    name: str = ""
    uri: StringMatcher | None = None
    scheme: StringMatcher | None = None
    method: StringMatcher | None = None
    authority: StringMatcher | None = None
    headers: tuple[tuple[str, StringMatcher], ...] = ()
    without_headers: tuple[tuple[str, StringMatcher], ...] = ()
    query_params: tuple[tuple[str, StringMatcher], ...] = ()
    port: int = 0  # 0 = any

    def mismatch(self, req: RequestView) -> str | None:
        """None when the block matches, else the first reason it does not (for `explain`)."""
        if self.port and self.port != req.port:
            return f"port {req.port} != {self.port}"
        if self.uri is not None and not self.uri.matches(req.path):
            return f"uri {req.path!r} is not {self.uri.describe()}"
        if self.method is not None and not self.method.matches(req.method):
            return f"method {req.method} is not {self.method.describe()}"
        if self.authority is not None and not self.authority.matches(req.authority):
            return f"authority {req.authority!r} is not {self.authority.describe()}"
        if self.scheme is not None and not self.scheme.matches(req.scheme):
            return f"scheme {req.scheme!r} is not {self.scheme.describe()}"
        for name, m in self.headers:
            if not m.matches(req.headers.get(name)):
                return f"header {name} ({req.headers.get(name)!r}) is not {m.describe()}"
        for name, m in self.without_headers:
            # a missing header counts as empty for value matches, so `withoutHeaders` still excludes it
            value = req.headers.get(name)
            if m.matches(value if value is not None or m.kind == "present" else ""):
                return f"header {name} ({value!r}) is {m.describe()} (withoutHeaders)"
        for name, m in self.query_params:
            if not m.matches(req.query.get(name)):
                return f"query parameter {name} ({req.query.get(name)!r}) is not {m.describe()}"
        return None

    def matches(self, req: RequestView) -> bool:
        return self.mismatch(req) is None


@dataclass(frozen=True, slots=True)
class TcpMatch:
    """One L4MatchAttributes block: listener port and destination subnets."""

    port: int = 0
    destination_subnets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def matches(self, port: int, destination_ip: str) -> bool:
        if self.port and self.port != port:
            return False
        if self.destination_subnets:
            try:
                ip = ipaddress.ip_address(destination_ip)
            except ValueError:
                return False
            return any(ip in net for net in self.destination_subnets)
        return True
