"""The parts of routing one HTTP request that need no I/O: where the authority and path come from, the
`RequestView` matching looks at, Istio rewrites, header operations and redirect Locations.

Header operations follow Envoy's default order: the chosen destination's operations first, then the
route's, so a route-level `set` wins over a destination-level one. `set`/`add` of `host` or
`:authority` on a request rewrites the authority. Values with Envoy `%VAR%` operators were parsed at
compile time (routing/formatters.py) and are rendered here; constant values cost nothing more.
"""

from __future__ import annotations

import random
from functools import lru_cache
from urllib.parse import parse_qsl

from proxy.l7.codec import authority_end
from proxy.routing.formatters import FormatContext
from proxy.routing.match import HttpMatch, RequestView, split_authority
from proxy.routing.snapshot import HeaderOps, Redirect, Rewrite

Header = tuple[bytes, bytes]
EncodedOps = tuple[tuple[Header, ...], tuple[Header, ...], frozenset[bytes]]

_AUTHORITY_NAMES = (b"host", b":authority")


def split_target(target: bytes) -> tuple[bytes | None, bytes]:
    """(authority, origin-form path) for an absolute-form target; (None, target) otherwise.

    `GET http://reviews:9080/reviews/0 HTTP/1.1` (a client using HTTP_PROXY) gives
    (b"reviews:9080", b"/reviews/0"); RFC 9112 §3.2.2: the URI's authority replaces the Host header.
    """
    if target[:1] == b"/":
        return None, target
    scheme_end = target.find(b"://")
    if scheme_end <= 0 or target[:scheme_end].lower() not in (b"http", b"https"):
        return None, target
    rest = target[scheme_end + 3:]
    end = authority_end(rest)
    authority = rest[:end].rpartition(b"@")[2]  # drop any userinfo
    path = rest[end:]
    if not path.startswith(b"/"):
        path = b"/" + path
    return authority, path


def request_view(method: bytes, path: bytes, authority: str, headers: list[Header], port: int,
                 forwarded_for: bytes | None = None, request_id: bytes | None = None,
                 scheme: str = "http") -> RequestView:
    raw = path.decode("latin-1")
    bare_path, _, query_string = raw.partition("?")
    query: dict[str, str] = {}
    if query_string:
        for key, value in parse_qsl(query_string, keep_blank_values=True):
            query.setdefault(key, value)  # first occurrence wins, as in Envoy
    view_headers: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        view_headers[key] = view_headers[key] + "," + text if key in view_headers else text
    if forwarded_for is not None:
        view_headers["x-forwarded-for"] = forwarded_for.decode("latin-1")
    if request_id is not None:
        view_headers["x-request-id"] = request_id.decode("latin-1")
    # Istio matches `authority` against the :authority header as sent, port included
    return RequestView(method.decode("latin-1"), bare_path.partition("#")[0], query,
                       authority.lower(), scheme, view_headers, port)


def _matched_prefix(block: HttpMatch | bool | None) -> str | None:
    """The prefix a rewrite replaces; None when the whole path is replaced (exact or regex match).

    A match block without a uri condition is a `prefix: /` route in Envoy, so `/` is replaced.
    """
    if not isinstance(block, HttpMatch) or block.uri is None or block.uri.kind == "present":
        return "/"
    if block.uri.kind == "prefix":
        return block.uri.value
    return None


def _replace_path(path: bytes, uri: str, block: HttpMatch | bool | None) -> bytes:
    raw = path.decode("latin-1")
    bare, sep, query = raw.partition("?")
    prefix = _matched_prefix(block)
    new = uri + bare[len(prefix):] if prefix is not None else uri
    return (new + sep + query).encode("latin-1")


def rewrite_path(rewrite: Rewrite, block: HttpMatch | bool | None, path: bytes) -> bytes:
    """Istio `rewrite.uri` (matched prefix, or the whole path) or `uriRegexRewrite` (every match)."""
    if rewrite.uri is not None:
        return _replace_path(path, rewrite.uri, block)
    if rewrite.regex is not None:
        raw = path.decode("latin-1")
        bare, sep, query = raw.partition("?")
        return (rewrite.regex.apply(bare) + sep + query).encode("latin-1")
    return path


@lru_cache(maxsize=4096)
def encoded_ops(ops: HeaderOps) -> EncodedOps:
    """(set, add, names to drop first) as bytes, computed once per HeaderOps object."""
    set_ = tuple((n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in ops.set)
    add = tuple((n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in ops.add)
    drop = frozenset(n.lower().encode("latin-1") for n in ops.remove) | {n for n, _ in set_}
    return set_, add, drop


def apply_ops(headers: list[Header], ops: HeaderOps, ctx: FormatContext | None = None) -> list[Header]:
    set_, add, drop = encoded_ops(ops)
    out = [h for h in headers if h[0].lower() not in drop] if drop else list(headers)  # (response names keep case)
    out += set_
    out += add
    if (ops.set_formats or ops.add_formats) and ctx is not None:
        out = _apply_formats(out, ops, ctx)
    return out


def _apply_formats(headers: list[Header], ops: HeaderOps, ctx: FormatContext) -> list[Header]:
    """The operations whose values have `%VAR%` operators; as Envoy, an empty result adds nothing."""
    names = {n.encode("latin-1") for n, _ in ops.set_formats}
    if names:
        headers = [h for h in headers if h[0].lower() not in names]
    for op in (ops.set_formats, ops.add_formats):
        for name, fmt in op:
            value = fmt.render(ctx)
            if value:
                headers.append((name.encode("latin-1"), value))
    return headers


def apply_request_ops(headers: list[Header], host: bytes | None, ops: HeaderOps, ctx: FormatContext | None = None
                      ) -> tuple[list[Header], bytes | None]:
    """Request header operations; `host`/`:authority` ones act on the authority."""
    headers = apply_ops(headers, ops, ctx)
    if any(n in _AUTHORITY_NAMES for n, _ in headers):
        for name, value in headers:
            if name in _AUTHORITY_NAMES:
                host = value
        headers = [h for h in headers if h[0] not in _AUTHORITY_NAMES]
    return headers, host


_DEFAULT_PORTS = {"http": 80, "https": 443}


def redirect_location(redirect: Redirect, block: HttpMatch | bool | None, authority: str, path: bytes,
                      request_port: int) -> bytes:
    """The Location of an Istio HTTPRedirect, as Envoy builds it.

    `authority` replaces host and port; `port` or `derivePort` set the port (FROM_REQUEST_PORT: the
    port the request was addressed to, `request_port`, as istiod writes the route's own port); a scheme
    change without a port drops the request's port; a port that is the scheme's default is left out.
    `uri` replaces the path, `prefixRewrite` the matched prefix; the query string is kept unless the
    new path has one.
    """
    scheme = redirect.scheme or "http"
    host, port = split_authority(authority)
    if redirect.authority:
        host, port = split_authority(redirect.authority)
    if redirect.port:
        port = redirect.port
    elif redirect.derive_port == "FROM_PROTOCOL_DEFAULT":
        port = None
    elif redirect.derive_port == "FROM_REQUEST_PORT":
        port = request_port
    elif redirect.scheme and not redirect.authority:
        port = None
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    if redirect.uri is not None:
        bare, sep, query = path.decode("latin-1").partition("?")
        new_path = redirect.uri if "?" in redirect.uri else redirect.uri + sep + query
    elif redirect.prefix_rewrite is not None:
        new_path = _replace_path(path, redirect.prefix_rewrite, block).decode("latin-1")
    else:
        new_path = path.decode("latin-1")
    authority_out = host if port is None else f"{host}:{port}"
    return f"{scheme}://{authority_out}{new_path}".encode("latin-1")


# x-request-id: UUID version 4 from a PRNG of our own, so tests that replace state.rng see only the
# weighted picks. Not cryptographic, like Envoy's request ids. The first 80 random bits are drawn once per
# 4096 ids and the last 48 count up from a random start: unique within a process, random across processes,
# and about a third of the cost of formatting 122 fresh random bits per request.
_ids = random.Random()
_BATCH = 4096
_prefix = b""
_next = 0
_left = 0


def new_request_id() -> bytes:
    global _prefix, _next, _left
    if not _left:
        r = _ids.getrandbits(80)
        _prefix = b"%08x-%04x-4%03x-%04x-" % (r >> 48, (r >> 32) & 0xFFFF, (r >> 20) & 0xFFF,
                                             0x8000 | ((r >> 6) & 0x3FFF))
        _next = _ids.getrandbits(48)
        _left = _BATCH
    _left -= 1
    _next = (_next + 1) & 0xFFFFFFFFFFFF
    return b"%s%012x" % (_prefix, _next)
