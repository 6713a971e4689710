"""The compiled, immutable routing snapshot the data plane reads.

A Snapshot is built off to the side by `proxy.config.compile` and swapped in with one reference
assignment. Requests and connections hold on to the snapshot (and the objects in it) they started
with, so nothing here may ever be mutated (the one exception is a memo of a pure lookup,
`RouteTable.find_host`). No I/O, no asyncio.

Vocabulary (Envoy's): a *listener* accepts downstream connections; an HTTP listener has a *route table*
of *virtual hosts* (one per VirtualService host set, or a default one per service) holding ordered
*routes*; a route's action is a weighted set of *destinations*, each naming a *cluster*
(`outbound|PORT|SUBSET|FQDN`) of *endpoints*.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from proxy.routing.formatters import Format
from proxy.routing.match import HttpMatch, RequestView, StringMatcher, TcpMatch
from proxy.routing.regex import RegexRewrite, compile_rewrite
from proxy.routing.resilience import ConnectionLimits, OutlierPolicy, RetryPolicy, TcpKeepalive

if TYPE_CHECKING:
    from proxy.capture.table import CaptureTable
    from proxy.routing.sticky import StickyPolicy
    from proxy.tls.contexts import ListenerTls, UpstreamTls
    from proxy.tls.credentials import Credential

HOST_MEMO_SIZE = 1024
_MISSING = object()

# PASSTHROUGH: the original destination of a redirected connection (capture); LEAST_REQUEST otherwise
LbPolicy = Literal["LEAST_REQUEST", "ROUND_ROBIN", "RANDOM", "PASSTHROUGH"]


def cluster_name(port: int, subset: str, fqdn: str) -> str:
    return f"outbound|{port}|{subset}|{fqdn}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream instance. `address` is an IP, or a DNS name resolved at connect time."""

    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)
    weight: int = 1
    # Istio metric labels of the serving workload, precomputed from `labels`
    version: str = "unknown"
    workload: str = "unknown"
    canonical_service: str = "unknown"
    canonical_revision: str = "latest"
    # (address, port): pools and active-request counts are keyed by it; b"address:port" for access logs.
    # Built once here rather than per request.
    key: tuple[str, int] | tuple[str, int, str] = field(init=False, compare=False, repr=False)
    host_bytes: bytes = field(init=False, compare=False, repr=False)
    # set in clusters that originate TLS: their connections are pooled apart from plaintext ones
    # (the key gets it as a third part), so a TLS cluster never reuses a plaintext connection
    pool_tag: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.address, self.port, self.pool_tag) if self.pool_tag
                           else (self.address, self.port))
        object.__setattr__(self, "host_bytes", f"{self.address}:{self.port}".encode())


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """The Istio service a cluster belongs to, for metric labels."""

    fqdn: str  # reviews.default.svc.cluster.local
    name: str  # reviews
    namespace: str  # default


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """DestinationRule `loadBalancer.consistentHash`: where a request's hash key comes from (one source)
    and the table the key is looked up in. A request without the key gets a random endpoint (Envoy)."""

    header: str | None = None  # lower-case request header name
    cookie: str | None = None
    cookie_path: str = ""
    cookie_ttl: float | None = None  # seconds; None: a missing cookie is not generated
    source_ip: bool = False
    query_parameter: str | None = None
    table: Literal["ring", "maglev"] = "ring"
    table_size: int = 1024  # ring: minimum ring size; maglev: table size (a prime)
    cookie_attributes: tuple[tuple[str, str], ...] = ()  # extra Set-Cookie attributes (SameSite=Lax, Secure)


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str  # outbound|9080|v3|reviews.default.svc.cluster.local
    service: ServiceInfo
    port: int  # service port
    subset: str  # "" = every endpoint
    endpoints: tuple[Endpoint, ...]
    lb_policy: LbPolicy = "LEAST_REQUEST"
    connect_timeout: float = 10.0  # seconds
    tcp_idle_timeout: float | None = 3600.0  # seconds; None = disabled (idleTimeout: 0s)
    http_idle_timeout: float = 3600.0  # upstream keep-alive idle timeout, seconds
    max_requests_per_connection: int = 0  # 0 = unlimited; 1 = no keep-alive
    # DestinationRule resilience (proxy.routing.resilience); None: not configured, nothing to do
    outlier: OutlierPolicy | None = None
    limits: ConnectionLimits | None = None
    max_connection_duration: float | None = None  # seconds an upstream connection may live
    tcp_keepalive: TcpKeepalive | None = None
    name_bytes: bytes = field(init=False, compare=False, repr=False)  # for access logs
    hash_policy: HashPolicy | None = None  # consistentHash; None: the `lb_policy` balancer
    tls: UpstreamTls | None = None  # DestinationRule tls origination; None: plaintext (DISABLE or unset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name_bytes", self.name.encode())


@dataclass(frozen=True, slots=True)
class Destination:
    """One weighted entry of a route. `cluster` is None when the subset does not exist (→ 503 NC)."""

    cluster_name: str
    cluster: Cluster | None
    weight: int
    # per-destination header operations (HTTP only)
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None


@dataclass(frozen=True, slots=True)
class HeaderOps:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()
    # values with Envoy `%VAR%` operators, parsed at compile time and rendered per request; the
    # constant values above cost nothing more
    set_formats: tuple[tuple[str, Format], ...] = ()
    add_formats: tuple[tuple[str, Format], ...] = ()


@dataclass(frozen=True, slots=True)
class WeightedDestinations:
    """Destinations with non-zero share, in config order, and their cumulative weights."""

    destinations: tuple[Destination, ...]
    cumulative: tuple[int, ...]
    # shiftproxy.io/sticky: the client's key picks the destination (proxy.routing.sticky); None: at random
    sticky: StickyPolicy | None = None
    # shiftproxy.io/empty-destination: fail keeps Istio's 503 UH for a destination with no healthy
    # endpoint; otherwise its share goes to the route's other destinations (proxy.upstream.shift)
    empty_fail: bool = False

    def pick(self, random_value: int) -> Destination:
        if len(self.destinations) == 1:
            return self.destinations[0]
        cumulative = self.cumulative  # pick_index, inlined: this runs once per request
        return self.destinations[bisect_right(cumulative, random_value % cumulative[-1])]

    def shares(self) -> list[tuple[Destination, float]]:
        """Each destination with its probability (for `explain` and config dumps)."""
        total = self.cumulative[-1] if self.cumulative else 0
        if len(self.destinations) == 1:
            return [(self.destinations[0], 1.0)]
        return [(d, d.weight / total) for d in self.destinations]


@dataclass(frozen=True, slots=True)
class Redirect:
    uri: str | None = None
    prefix_rewrite: str | None = None
    authority: str | None = None
    scheme: str | None = None
    port: int | None = None
    derive_port: str | None = None  # FROM_PROTOCOL_DEFAULT | FROM_REQUEST_PORT
    code: int = 301


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Rewrite:
    uri: str | None = None
    authority: str | None = None
    regex_match: str | None = None
    regex_rewrite: str | None = None
    regex: RegexRewrite | None = field(init=False, compare=False, repr=False)  # compiled once, with RE2

    def __post_init__(self) -> None:
        compiled = None if self.regex_match is None else compile_rewrite(self.regex_match, self.regex_rewrite or "")
        object.__setattr__(self, "regex", compiled)


@dataclass(frozen=True, slots=True)
class Fault:
    """Istio `fault` (Envoy's fault filter, run before the router): each request is delayed with
    probability `delay_percent`/100, then aborted with `abort_status` with probability `abort_percent`/100.
    A part that is not configured has None and 0."""

    delay_seconds: float | None = None
    delay_percent: float = 0.0
    abort_status: int | None = None
    abort_percent: float = 0.0


@dataclass(frozen=True, slots=True)
class Mirror:
    """A copy of the route's requests sent to another cluster, its answer discarded (Istio `mirror`)."""

    cluster_name: str
    cluster: Cluster | None  # None: the subset does not exist (nothing is sent)
    percent: float = 100.0  # share of requests copied


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Istio `corsPolicy` as Envoy's CORS filter applies it. Header values are joined already."""

    allow_origins: tuple[StringMatcher, ...] = ()
    allow_methods: str = ""
    allow_headers: str = ""
    expose_headers: str = ""
    max_age: str = ""  # seconds
    allow_credentials: bool = False
    # a preflight whose origin is not allowed goes to the upstream (FORWARD, the default) or is
    # answered by the proxy without CORS headers (IGNORE)
    forward_unmatched_preflights: bool = True


@dataclass(frozen=True, slots=True)
class HttpRoute:
    """One Istio HTTPRoute (rule). `matches` empty = match everything."""

    name: str  # "<vs namespace>/<vs name>#<rule index>" unless the rule has a name
    virtual_service: str  # "namespace/name", "" for a default (no VirtualService) route
    rule_index: int
    matches: tuple[HttpMatch, ...]
    action: WeightedDestinations | Redirect | DirectResponse
    timeout: float | None = None  # seconds; None = no timeout (Istio's default)
    rewrite: Rewrite | None = None
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None
    # retries of a failed upstream connect, on another endpoint when there is one. Istio's default
    # policy retries connect-failure twice; VirtualService `retries` sets it (attempts: 0 disables)
    connect_retries: int = 2
    fault: Fault | None = None  # None: no fault injection (the usual case, one check per request)
    # retries of attempts that sent the request (on a response status, reset or per-try timeout);
    # None when only failed connects are retried (Istio's default policy, over HTTP/1.1)
    retry: RetryPolicy | None = None
    name_bytes: bytes = field(init=False, compare=False, repr=False)  # for access logs
    mirrors: tuple[Mirror, ...] = ()
    cors: CorsPolicy | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name_bytes", self.name.encode())

    def match(self, req: RequestView) -> HttpMatch | None | bool:
        """The matching block, True when the route has no blocks, or None when nothing matches."""
        if not self.matches:
            return True
        for block in self.matches:
            if block.matches(req):
                return block
        return None


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """The routes for one set of domains (one VirtualService, or the default route of a service)."""

    name: str
    domains: tuple[str, ...]
    routes: tuple[HttpRoute, ...]
    # True when some route inspects the request (so the listener must build a RequestView)
    needs_request_view: bool = True
    # the first route when it matches every request (the usual traffic-shifting rule): no loop per request
    unconditional: HttpRoute | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        first = self.routes[0] if self.routes and not self.routes[0].matches else None
        object.__setattr__(self, "unconditional", first)

    def route(self, req: RequestView | None) -> HttpRoute | None:
        """First matching route (Istio: first match wins), or None (→ 404 NR)."""
        for route in self.routes:
            if not route.matches:
                return route
            assert req is not None
            for block in route.matches:
                if block.matches(req):
                    return route
        return None


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Virtual hosts by domain. Lookup order as Envoy: exact domain, then longest wildcard suffix, then `*`."""

    exact: Mapping[str, VirtualHost]
    suffixes: tuple[tuple[str, VirtualHost], ...] = ()  # (".example.com", vh), longest first
    catch_all: VirtualHost | None = None
    # Host header bytes → find(...) result, for the first HOST_MEMO_SIZE distinct values: clients send
    # the same few hosts again and again, and a bound keeps a client inventing hosts from growing it
    _by_host: dict[bytes, VirtualHost | None] = field(default_factory=dict, compare=False, repr=False)

    def find_host(self, host: bytes) -> VirtualHost | None:
        """`find` for a Host header as received, remembered."""
        memo = self._by_host
        vh = memo.get(host, _MISSING)
        if vh is _MISSING:
            vh = self.find(host.decode("latin-1"))
            if len(memo) < HOST_MEMO_SIZE:
                memo[host] = vh
        return vh  # type: ignore[return-value]

    def find(self, authority: str) -> VirtualHost | None:
        """`authority` is the Host header as sent (any case, with or without `:port`)."""
        host = authority.lower()
        vh = self.exact.get(host)
        if vh is not None:
            return vh
        bare = host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host
        vh = self.exact.get(bare)
        if vh is not None:
            return vh
        for suffix, vh in self.suffixes:
            if bare.endswith(suffix):
                return vh
        return self.catch_all


@dataclass(frozen=True, slots=True)
class HttpListener:
    name: str  # e.g. "0.0.0.0_8080" or "mesh_outbound_http"
    address: str
    port: int
    role: Literal["gateway", "mesh"]
    route_table: RouteTable
    tls: ListenerTls | None = None  # HTTPS: terminated with the certificate the client's SNI selects

    def match_port(self, authority_port: int | None) -> int:
        """The port `match.port` compares with: a gateway's own; on the sidecar, which serves every
        service port, the one the client addressed (80 when the authority has none), as in Istio."""
        if self.role == "gateway":
            return self.port
        return authority_port or 80


@dataclass(frozen=True, slots=True)
class TcpRoute:
    name: str
    virtual_service: str  # "" for the default route
    matches: tuple[TcpMatch, ...]  # empty = everything
    destinations: WeightedDestinations
    # shiftproxy.io/tcp-drain-on-shift: close connections whose destination lost its weight after this
    drain_on_shift: float | None = None

    def matches_connection(self, port: int, destination_ip: str) -> bool:
        return not self.matches or any(m.matches(port, destination_ip) for m in self.matches)


@dataclass(frozen=True, slots=True)
class SniRoute:
    """One VirtualService tls[] rule: SNI hosts (exact or `*.suffix`; empty = any) → a weighted pick per
    connection, like a TcpRoute."""

    route: TcpRoute
    sni_hosts: tuple[str, ...]

    def matches_sni(self, server_name: str) -> bool:
        if not self.sni_hosts:
            return True
        name = server_name.lower()
        for host in self.sni_hosts:
            if host == "*" or host == name or (host.startswith("*.") and name.endswith(host[1:])):
                return True
        return False


@dataclass(frozen=True, slots=True)
class TcpListener:
    name: str
    address: str
    port: int
    role: Literal["gateway", "mesh"]
    routes: tuple[TcpRoute, ...]  # first match wins; the default route (if any) is last
    tls: ListenerTls | None = None  # a TLS server terminated here; the decrypted bytes follow `routes`
    # VirtualService tls[] routes, chosen by the SNI of the ClientHello (read, not terminated) before
    # `routes`; empty: the connection is routed at accept
    sni_routes: tuple[SniRoute, ...] = ()

    def route(self, destination_ip: str) -> TcpRoute | None:
        for route in self.routes:
            if route.matches_connection(self.port, destination_ip):
                return route
        return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    content_hash: str  # sha256 of the canonical objects; equal configs give equal hashes
    http_listeners: Mapping[str, HttpListener]
    tcp_listeners: Mapping[str, TcpListener]
    clusters: Mapping[str, Cluster]
    services: Mapping[str, ServiceInfo]  # by FQDN
    warnings: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()  # skipped kinds, ignored delegate rules, port clashes
    # original destination → service port, for connections redirected to the outbound listener (--capture)
    capture: CaptureTable | None = None
    # every certificate file set loaded into a context of this snapshot, watched for rotation
    credentials: tuple[Credential, ...] = ()

    def listener_keys(self) -> set[tuple[str, str, int]]:
        """(kind, address, port) of every listener, for diffing on reload."""
        keys = {(listener_kind("http", li.tls), li.address, li.port) for li in self.http_listeners.values()}
        keys |= {(listener_kind("tcp", li.tls, bool(li.sni_routes)), li.address, li.port)
                 for li in self.tcp_listeners.values()}
        return keys


def listener_kind(base: str, tls: ListenerTls | None, sni: bool = False) -> str:
    """`http`, `tcp`, or with TLS `http+tls`, `tcp+mtls`, `tcp+sni`: a change of kind rebinds the port."""
    if tls is not None:
        return f"{base}+{tls.kind}"
    return f"{base}+sni" if sni else base
