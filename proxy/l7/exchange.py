"""One request through the proxy: its state (`Exchange`) and the decisions about it that need no I/O.

`route` takes a request from its head to either a local answer (404 NR, 503 NC/UH, a redirect, a direct
response, an injected fault abort) or a chosen cluster and endpoint with the exact bytes of the upstream
request head; `response_head` builds the head the client gets from the upstream's; `log` writes the
access-log line. The connection code in `downstream.py` does the rest (sockets, flow control, order of
requests).

Upstream request head: HTTP/1.1 always; `host` as received (the URI's authority for an absolute-form
target, rewritten by `rewrite.authority` or a `host` header operation); the path normalized as routed
(`--path-normalization`); hop-by-hop headers left out; `x-forwarded-proto` is set; the body keeps its
framing (Content-Length, or chunked re-encoded as it streams).

Edge headers follow what istiod configures: a gateway listener is Envoy with `use_remote_address: true`
(the client is external), so the client address is appended to `x-forwarded-for`, the client's
`x-envoy-*` internal headers are dropped and its `x-request-id` replaced by a fresh one (unless
`--preserve-external-request-id`); the sidecar's outbound listener has `use_remote_address: false`
(the client is the local app, trusted), so all three pass through unchanged and `x-request-id` is only
generated when missing.

Upgrades: `websocket` is allowed (Istio enables it on every listener); any other token gets Envoy's
answer for an upgrade type not configured, 403 with the connection closed (h2c never gets here: the
codec strips it).
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from typing import TYPE_CHECKING, Any

from proxy.l7 import cors as cors_filter
from proxy.l7 import errors, mirror, shifting
from proxy.l7.codec import CRLF, CodecError, RequestHead, ResponseHead, check_target
from proxy.l7.codec import response_head as serialize_response_head
from proxy.l7.errors import STATUS_LINES, LocalReply
from proxy.l7.router import (
    apply_ops,
    apply_request_ops,
    new_request_id,
    redirect_location,
    request_view,
    rewrite_path,
    split_target,
)
from proxy.routing.formatters import FormatContext
from proxy.routing.match import split_authority
from proxy.routing.path_normalization import PathNormalization, normalize
from proxy.routing.snapshot import (
    Cluster,
    Destination,
    Endpoint,
    Fault,
    HashPolicy,
    HeaderOps,
    HttpListener,
    HttpRoute,
    Redirect,
    WeightedDestinations,
)
from proxy.upstream.hashing import generated_cookie, hash64, request_key

if TYPE_CHECKING:
    from proxy.accesslog import AccessLog
    from proxy.l7.attempts import AttemptState
    from proxy.l7.upstream import HttpUpstream
    from proxy.routing.match import RequestView
    from proxy.state import ServerState

Answer = tuple[LocalReply, tuple[tuple[bytes, bytes], ...]]  # a local reply and its extra headers

_X_FORWARDED_PROTO = b"x-forwarded-proto: http\r\n"
_X_FORWARDED_PROTO_HTTPS = b"x-forwarded-proto: https\r\n"  # the downstream connection is TLS
_CHUNKED = b"transfer-encoding: chunked\r\n"
_CLOSE = b"connection: close\r\n"
_KEEP_ALIVE = b"connection: keep-alive\r\n"
# Istio turns on Envoy's include_request_attempt_count for every virtual host: the header is always sent
_ATTEMPT_COUNT = b"x-envoy-attempt-count: "
_FIRST_ATTEMPT = _ATTEMPT_COUNT + b"1\r\n"
_WEBSOCKET = b"websocket"
# Envoy: an upgrade type not in upgrade_configs is refused with 403 and no body (details upgrade_failed)
UPGRADE_FAILED = LocalReply(403, b"", "-")
PATH_NORMALIZATION_FAILED = LocalReply(400, b"", "-")  # Envoy: no body, details path_normalization_failed

_CONTENT_LENGTH_LINES: dict[int, bytes] = {}
_PLAIN_PATH = frozenset(b"%\\.").isdisjoint
_BASE = PathNormalization.BASE  # a module global: cheaper to reach than the enum's attribute


def _content_length_line(length: int) -> bytes:
    """`content-length: N` with its CRLF; messages repeat a few sizes, so the first 4096 are remembered."""
    line = _CONTENT_LENGTH_LINES.get(length)
    if line is None:
        line = b"content-length: %d\r\n" % length
        if len(_CONTENT_LENGTH_LINES) < 4096:
            _CONTENT_LENGTH_LINES[length] = line
    return line


class Exchange:
    """One request and its response: what it was routed to and how far each direction got."""

    __slots__ = (
        "head", "start", "failure", "head_only", "keep_alive", "close", "path", "authority", "request_id",
        "route", "cluster_name", "cluster", "endpoint", "counted", "response_ops", "out_head",
        "upstream", "connect_task", "pending", "pending_size", "replay", "replay_size", "reused", "retried",
        "request_complete", "request_bytes", "status", "response_started", "response_chunked",
        "response_bytes", "timer", "tunnel", "done", "delay", "mirror", "extra_response", "format_ctx",
        "retries", "resil", "moved", "key_hash",
    )

    def __init__(self, head: RequestHead | None, start: float) -> None:
        self.head = head
        self.start = start
        self.failure: LocalReply | None = None  # a malformed request: answered with this when its turn comes
        self.head_only = head is not None and head.method == b"HEAD"
        # an upgrade the upstream refuses is followed by the client's next request, as any other
        self.keep_alive = head is not None and head.keep_alive
        self.close = False  # the response says `connection: close`
        self.path = b""
        self.authority = b""
        self.request_id: bytes | None = None
        # routing decisions, taken once from one snapshot
        self.route: HttpRoute | None = None
        self.cluster_name = ""
        self.cluster: Cluster | None = None
        self.endpoint: Endpoint | None = None
        self.counted = False  # in the cluster manager's active requests
        self.response_ops: tuple[HeaderOps, ...] = ()
        self.out_head = b""
        # request direction
        self.upstream: HttpUpstream | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.pending: list[bytes] | None = None  # bytes for an upstream not attached yet
        self.pending_size = 0
        self.replay: list[bytes] | None = None  # bytes written to a reused connection, while small
        self.replay_size = 0
        self.reused = False
        self.retried = False
        self.request_complete = head is None or not (head.chunked or head.content_length)  # not head.has_body
        self.request_bytes = 0
        # response direction
        self.status = 0
        self.response_started = False
        self.response_chunked = False
        self.response_bytes = 0
        self.timer: asyncio.TimerHandle | None = None
        self.tunnel = False
        self.done = False
        self.delay: float | None = None  # seconds the route's fault delays it (flag DI); None: not delayed
        # features that cost nothing unless the route or cluster has them
        self.mirror: mirror.MirrorCopies | None = None  # copies waiting for the request body
        self.extra_response: list[tuple[bytes, bytes]] | None = None  # CORS headers, a hash Set-Cookie
        self.format_ctx: FormatContext | None = None  # for header values with %VAR% operators
        # retries made so far (x-envoy-attempt-count is one more), and the state of retries, per-try
        # timeouts and circuit-breaker slots, made only for a request that needs it (see attempts.py)
        self.retries = 0
        self.resil: AttemptState | None = None
        # moved off an empty destination (flag ED), and the sticky key's hash (proxy.l7.shifting)
        self.moved = False
        self.key_hash: int | None = None


def route(ex: Exchange, listener: HttpListener | None, state: ServerState, client_ip: bytes,
          transport: Any = None) -> Answer | None:
    """Route `ex` on `listener` (from the snapshot the request reads once). None: forward it to
    `ex.endpoint` with `ex.out_head`; otherwise the local answer to send. `transport` (the downstream
    one) is read only by features that need the connection's addresses."""
    head = ex.head
    assert head is not None
    target = head.target
    host = head.host
    if target[:1] == b"/":
        path = target
    else:
        try:
            check_target(head.method, target)
        except CodecError as exc:
            return errors.protocol_error(exc.status), ()
        authority, path = split_target(target)
        if authority is not None:  # absolute-form (a client using HTTP_PROXY): the URI's authority wins
            host = authority
        elif head.method == b"CONNECT":
            return errors.CONNECT_NOT_SUPPORTED, ()
        elif target != b"*":
            return errors.protocol_error(400), ()
    mode = state.path_normalization
    # the default mode's quick check, inlined (normalize() would say the same): no escape, `\\` or dot
    normal = path if mode is _BASE and _PLAIN_PATH(path) else normalize(path, mode)
    if normal is None:
        ex.path = path
        return PATH_NORMALIZATION_FAILED, ()
    ex.path = path = normal
    authority = ex.authority = host or b""
    if listener is None:
        return errors.NO_ROUTE, ()
    vhost = listener.route_table.find_host(authority)
    if vhost is None:
        return errors.NO_ROUTE, ()
    view = None
    if vhost.needs_request_view:
        authority_text = authority.decode("latin-1")
        # a sidecar listener serves every service port: match.port is the port the client addressed
        port = listener.match_port(split_authority(authority_text)[1])
        view = request_view(head.method, path, authority_text, head.headers, port,
                            head.forwarded_for, head.request_id, "https" if listener.tls is not None else "http")
    chosen = vhost.unconditional or vhost.route(view)
    if chosen is None:
        return errors.NO_ROUTE, ()
    ex.route = chosen
    if head.upgrade is not None and head.upgrade.strip().lower() != _WEBSOCKET:
        ex.keep_alive = False  # Envoy closes: the bytes after an upgrade head are not known to be HTTP
        return UPGRADE_FAILED, ()
    cors = chosen.cors
    if cors is not None:  # Envoy's CORS filter runs before fault injection and the router
        preflight, cors_headers = cors_filter.apply(cors, head.method, head.headers)
        if preflight is not None:
            return preflight, cors_headers
        if cors_headers:
            ex.extra_response = list(cors_headers)
    if chosen.fault is not None:
        abort = _inject_fault(ex, chosen.fault, state)
        if abort is not None:
            return abort, ()
    action = chosen.action
    if type(action) is not WeightedDestinations:
        if type(action) is Redirect:
            block = chosen.match(view) if chosen.matches else True  # type: ignore[arg-type]
            authority_text = authority.decode("latin-1")
            request_port = listener.match_port(split_authority(authority_text)[1])
            location = redirect_location(action, block, authority_text, path, request_port)
            return LocalReply(action.code, b"", "-"), ((b"location", location),)
        return LocalReply(action.status, action.body, "-"), ()  # type: ignore[union-attr]
    destinations = action.destinations
    if len(destinations) == 1:
        dest = destinations[0]
    else:  # the weighted pick, inlined (once per request); sticky keys and empty destinations: shifting.py
        cumulative = action.cumulative
        random_value = state.rng.getrandbits(32)
        dest = destinations[bisect_right(cumulative, random_value % cumulative[-1])]
        cluster = dest.cluster
        manager = state.cluster_manager
        # (manager.has_endpoint(cluster)'s usual answer inlined: endpoints, no outlier detection, none failing)
        if action.sticky is not None or not (action.empty_fail or (
                cluster is not None and cluster.endpoints and cluster.outlier is None and not manager.failing)
                or manager.has_endpoint(cluster)):
            dest = shifting.pick(ex, action, state, client_ip, transport, random_value)
    ex.cluster_name = dest.cluster_name
    cluster = dest.cluster
    if cluster is None:
        return errors.NO_CLUSTER, ()
    ex.cluster = cluster
    endpoints = cluster.endpoints  # a subset of one endpoint (the usual case) needs no balancer
    hashing = cluster.hash_policy
    if hashing is not None:
        endpoint = _hashed_endpoint(ex, cluster, hashing, state, client_ip, transport)
    else:
        # (outlier detection may eject even a lone endpoint: then the balancer decides)
        endpoint = endpoints[0] if len(endpoints) == 1 and cluster.outlier is None else \
            state.cluster_manager.choose_endpoint(cluster)
    if endpoint is None:
        return errors.NO_HEALTHY_UPSTREAM, ()
    ex.endpoint = endpoint
    ex.out_head = _upstream_head(ex, head, chosen, dest, view,
                                 client_ip if listener.role == "gateway" else None,
                                 state.preserve_external_request_id, transport, state,
                                 listener.tls is not None)
    if chosen.mirrors and head.upgrade is None:  # an upgrade (WebSocket) is not copied
        ex.mirror = mirror.start(state, chosen.mirrors, ex.out_head, head.chunked, ex.request_complete,
                                 chosen.timeout, ex.pending, ex.pending_size, ex.delay)
    return None


reroute_empty = shifting.reroute  # for the connection code: a failed connect that emptied the cluster


def _hashed_endpoint(ex: Exchange, cluster: Cluster, policy: HashPolicy, state: ServerState, client_ip: bytes,
                     transport: Any) -> Endpoint | None:
    """Consistent hash: the endpoint that owns the request's key. A missing hash cookie with a `ttl` is
    generated and set on the response (Envoy); any other missing key gets an endpoint at random."""
    head = ex.head
    assert head is not None
    key = request_key(policy, head.headers, ex.path, client_ip, ex.authority, head.request_id, head.forwarded_for)
    if key is None and policy.cookie is not None and policy.cookie_ttl is not None:
        peer = transport.get_extra_info("peername") if transport is not None else None
        local = transport.get_extra_info("sockname") if transport is not None else None
        key, set_cookie = generated_cookie(policy, str(peer), str(local))
        if ex.extra_response is None:
            ex.extra_response = []
        ex.extra_response.append((b"set-cookie", set_cookie))
    manager = state.cluster_manager
    if key is None:
        endpoints = cluster.endpoints
        return endpoints[0] if len(endpoints) == 1 else manager.choose_endpoint(cluster)
    return manager.choose_endpoint(cluster, hash64(key))


def _inject_fault(ex: Exchange, fault: Fault, state: ServerState) -> LocalReply | None:
    """Envoy's fault filter, before the router: maybe a delay (`ex.delay`, waited by the connection
    code before anything else), then maybe an abort answered locally without contacting the upstream."""
    rng = state.rng
    if fault.delay_seconds is not None and fault.delay_percent > 0 and rng.random() * 100 < fault.delay_percent:
        ex.delay = fault.delay_seconds
    if fault.abort_status is not None and fault.abort_percent > 0 and rng.random() * 100 < fault.abort_percent:
        return errors.fault_abort(fault.abort_status)
    return None


def _format_context(ex: Exchange, head: RequestHead, route: HttpRoute, host: bytes | None, request_id: bytes,
                    forwarded_for: bytes | None, transport: Any, state: ServerState) -> FormatContext:
    headers = [(b"host", host or b""), *head.headers, (b"x-request-id", request_id)]
    if forwarded_for is not None:
        headers.append((b"x-forwarded-for", forwarded_for))
    loop = state.loop
    elapsed = loop.time() - ex.start if loop is not None else 0.0
    endpoint, cluster = ex.endpoint, ex.cluster
    return FormatContext(transport, headers, endpoint.host_bytes.decode() if endpoint is not None else "",
                         cluster.name if cluster is not None else "", time.time() - max(elapsed, 0.0),
                         "HTTP/1.0" if head.http10 else "HTTP/1.1", route.name)


def _has_formats(*ops: HeaderOps | None) -> bool:
    return any(o is not None and (o.set_formats or o.add_formats) for o in ops)


def _upstream_head(ex: Exchange, head: RequestHead, route: HttpRoute, dest: Destination,
                   view: RequestView | None, client_ip: bytes | None, preserve_request_id: bool,
                   transport: Any = None, state: ServerState | None = None, tls: bool = False) -> bytes:
    """`client_ip` is None on the sidecar role (Envoy's use_remote_address false), else the edge rules apply."""
    headers = head.headers
    if head.envoy_headers is not None and client_ip is None:  # only the trusted local app may set them
        headers = headers + head.envoy_headers
    host = head.host if head.target[:1] == b"/" else ex.authority
    path = ex.path
    rewrite = route.rewrite
    if rewrite is not None:
        if rewrite.uri is not None or rewrite.regex_match is not None:
            path = rewrite_path(rewrite, route.match(view) if route.matches else True, path)  # type: ignore[arg-type]
        if rewrite.authority:
            host = rewrite.authority.encode("latin-1")
    request_id = head.request_id
    if request_id is None or (client_ip is not None and not preserve_request_id):
        request_id = new_request_id()
    ex.request_id = request_id
    forwarded_for = head.forwarded_for
    if client_ip:
        forwarded_for = client_ip if forwarded_for is None else forwarded_for + b", " + client_ip
    ctx = None
    if (dest.request_headers is not None or route.request_headers is not None or dest.response_headers is not None
            or route.response_headers is not None) and state is not None and _has_formats(
            dest.request_headers, route.request_headers, dest.response_headers, route.response_headers):
        ctx = ex.format_ctx = _format_context(ex, head, route, host, request_id, forwarded_for, transport, state)
    # Envoy's order: the destination's operations, then the route's (a route-level set wins)
    if dest.request_headers is not None:
        headers, host = apply_request_ops(headers, host, dest.request_headers, ctx)
    if route.request_headers is not None:
        headers, host = apply_request_ops(headers, host, route.request_headers, ctx)
    if dest.response_headers is not None or route.response_headers is not None:
        ex.response_ops = tuple(o for o in (dest.response_headers, route.response_headers) if o is not None)
    # the head serialized here in one list (codec.request_head's layout): this runs once per request
    # HTTP/1.1 needs a Host; an HTTP/1.0 request may have none: then it is empty (RFC 9112 §3.2)
    parts = [head.method, b" ", path, b" HTTP/1.1\r\nhost: ", host or b"", CRLF]
    for name, value in headers:
        parts += (name, b": ", value, CRLF)
    parts += (_X_FORWARDED_PROTO_HTTPS if tls else _X_FORWARDED_PROTO, b"x-request-id: ", request_id, CRLF)
    if forwarded_for is not None:
        parts += (b"x-forwarded-for: ", forwarded_for, CRLF)
    if head.content_length is not None:
        parts.append(_CONTENT_LENGTH_LINES.get(head.content_length) or _content_length_line(head.content_length))
    elif head.chunked:
        parts.append(_CHUNKED)
    if head.upgrade is not None:
        parts += (b"connection: upgrade\r\nupgrade: ", head.upgrade, CRLF)
    parts += (_FIRST_ATTEMPT, CRLF)  # x-envoy-attempt-count last: `attempt_head` rewrites it for a retry
    return b"".join(parts)


def attempt_head(out_head: bytes, attempt: int) -> bytes:
    """The upstream request head of attempt number `attempt` (x-envoy-attempt-count, the last header)."""
    return out_head[:out_head.rindex(_ATTEMPT_COUNT)] + _ATTEMPT_COUNT + b"%d\r\n\r\n" % attempt


def response_head(ex: Exchange, head: ResponseHead, close: bool) -> bytes:
    """The client's response head for the upstream's final (>= 200) head.

    Sets `ex.response_chunked` (the body is re-chunked: upstream chunked or delimited by its close, to
    an HTTP/1.1 client) and `ex.close` (the connection closes after it: asked for, or an HTTP/1.0
    client whose body length is unknown).
    """
    status = head.status
    request = ex.head
    assert request is not None
    # serialized here in one list (codec.response_head's layout): this runs once per response
    parts = [STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]  # 600-999: llhttp lets them through
    raw = head.raw
    if raw is not None:  # nothing edits the upstream's fields: its lines as received, Content-Length included
        parts.append(raw)
        if head.content_length is None and not (ex.head_only or status == 204 or status == 304):
            if request.http10:
                close = True  # no chunked encoding in HTTP/1.0: the body ends when the connection does
            else:
                parts.append(_CHUNKED)
                ex.response_chunked = True
    else:
        headers = head.headers
        if ex.response_ops:
            ctx = ex.format_ctx
            if ctx is not None:
                ctx.response_headers = headers
                ctx.response_code = status
            for ops in ex.response_ops:
                headers = apply_ops(headers, ops, ctx)
        extra = ex.extra_response
        if extra is not None:
            headers = _with_extra(headers, extra)
        for name, value in headers:
            parts += (name, b": ", value, CRLF)
        if ex.head_only or status == 204 or status == 304:
            if head.content_length is not None and status != 204:
                parts.append(_CONTENT_LENGTH_LINES.get(head.content_length) or
                             _content_length_line(head.content_length))
            elif head.chunked and status != 204 and not request.http10:
                parts.append(_CHUNKED)
        elif head.content_length is not None:
            parts.append(_CONTENT_LENGTH_LINES.get(head.content_length) or _content_length_line(head.content_length))
        elif request.http10:
            close = True  # no chunked encoding in HTTP/1.0: the body ends when the connection does
        else:
            parts.append(_CHUNKED)
            ex.response_chunked = True
    if close:
        parts.append(_CLOSE)
    elif request.http10:
        parts.append(_KEEP_ALIVE)
    ex.close = close
    parts.append(CRLF)
    return b"".join(parts)


def _with_extra(headers: list[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The proxy's own response headers: CORS ones replace the upstream's (Envoy sets them), a
    Set-Cookie is added beside the upstream's."""
    if any(name in cors_filter.RESPONSE_NAMES for name, _ in extra):
        headers = [h for h in headers if h[0].lower() not in cors_filter.RESPONSE_NAMES]
    return [*headers, *extra]


def local_reply_headers(ex: Exchange) -> tuple[tuple[bytes, bytes], ...]:
    """The CORS headers of an actual CORS request, for a response the proxy writes itself (a hash
    Set-Cookie only goes with an upstream's response, as in Envoy)."""
    return tuple(h for h in ex.extra_response or () if h[0] in cors_filter.RESPONSE_NAMES)


def switching_protocols_head(ex: Exchange, head: ResponseHead) -> bytes:
    upgrade = head.upgrade or ex.head.upgrade  # type: ignore[union-attr]
    tail = (b"connection: upgrade\r\nupgrade: ", upgrade or b"", CRLF)
    return serialize_response_head(STATUS_LINES[101], head.headers, tail)


def log(access_log: AccessLog, ex: Exchange, code: int, flags: str, duration_ms: float) -> None:
    head = ex.head
    endpoint = ex.endpoint
    cluster = ex.cluster
    request_id = ex.request_id or (head.request_id if head is not None else None) or b""
    if ex.moved:
        flags = errors.add_flag(flags, shifting.EMPTY_FLAG)
    access_log.http(
        head.method if head is not None else b"-",
        ex.path or (head.target if head is not None else b"") or b"-",
        b"HTTP/1.0" if head is not None and head.http10 else b"HTTP/1.1",
        code, flags, ex.request_bytes, ex.response_bytes, duration_ms,
        endpoint.host_bytes if endpoint is not None else b"",
        cluster.name_bytes if cluster is not None else ex.cluster_name.encode(),
        ex.authority, request_id,
        ex.route.name_bytes if ex.route is not None else b"",
    )
