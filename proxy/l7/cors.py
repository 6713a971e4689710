"""Envoy's CORS filter for a route's Istio `corsPolicy`, run before fault injection and the router.

A preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) from an allowed origin is
answered by the proxy: 200 with `access-control-allow-origin` (the origin itself), `-allow-methods`,
`-allow-headers`, `-max-age` and `-allow-credentials` as configured; it never reaches the upstream. A
preflight from another origin goes upstream (`unmatchedPreflights: FORWARD`, the default) or gets a
200 without CORS headers (IGNORE). An actual request from an allowed origin is forwarded and its
response (or the proxy's own reply: 503, 504, a redirect...) gets `access-control-allow-origin`,
`-allow-credentials` and `-expose-headers`. An allowed
origin is one an `allowOrigins` matcher accepts, or any origin when a matcher accepts `*` (Envoy).
"""

from __future__ import annotations

from proxy.l7.errors import LocalReply
from proxy.routing.snapshot import CorsPolicy

Header = tuple[bytes, bytes]

PREFLIGHT_OK = LocalReply(200, b"", "-")
_ALLOW_ORIGIN = b"access-control-allow-origin"
_ALLOW_CREDENTIALS = b"access-control-allow-credentials"
_EXPOSE_HEADERS = b"access-control-expose-headers"
RESPONSE_NAMES = frozenset({_ALLOW_ORIGIN, _ALLOW_CREDENTIALS, _EXPOSE_HEADERS})


def _header(headers: list[Header], name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def origin_allowed(cors: CorsPolicy, origin: str) -> bool:
    return any(m.matches("*") or m.matches(origin) for m in cors.allow_origins)


def apply(cors: CorsPolicy, method: bytes, headers: list[Header]
          ) -> tuple[LocalReply | None, tuple[Header, ...]]:
    """(a preflight answer or None, headers for it or for the actual response)."""
    origin = _header(headers, b"origin")
    if not origin:
        return None, ()
    preflight = method == b"OPTIONS" and bool(_header(headers, b"access-control-request-method"))
    if not origin_allowed(cors, origin.decode("latin-1")):
        if preflight and not cors.forward_unmatched_preflights:
            return PREFLIGHT_OK, ()
        return None, ()
    out: list[Header] = [(_ALLOW_ORIGIN, origin)]
    if cors.allow_credentials:
        out.append((_ALLOW_CREDENTIALS, b"true"))
    if preflight:
        for name, value in ((b"access-control-allow-methods", cors.allow_methods),
                            (b"access-control-allow-headers", cors.allow_headers),
                            (b"access-control-max-age", cors.max_age)):
            if value:
                out.append((name, value.encode("latin-1")))
        return PREFLIGHT_OK, tuple(out)
    if cors.expose_headers:
        out.append((_EXPOSE_HEADERS, cors.expose_headers.encode("latin-1")))
    return None, tuple(out)
