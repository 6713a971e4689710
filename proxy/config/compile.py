"""Compile validated Istio objects into an immutable routing Snapshot.

Everything the request path needs is decided here, once per config change: listeners per role, virtual
hosts keyed by every alias of a service, match predicates, clusters with their endpoints, cumulative
weights. What istiod resolves per proxy at config time (match ports, gateway binding) is resolved here
too. No I/O, no asyncio.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from proxy.capture.compile import build_capture_table
from proxy.config import compile_cluster, compile_http, compile_match, compile_shift
from proxy.config.compile_policy import retry_policy
from proxy.config.compile_tls import TlsCompiler, TlsOptions, https_redirects, sni_routes, terminates
from proxy.config.delegate import expand_delegates
from proxy.config.diagnostics import ConfigError, Diagnostic
from proxy.config.duration import parse_duration
from proxy.config.hosts import fqdn
from proxy.config.load import LoadResult, RawObject, load_paths
from proxy.config.registry import Service, ServicePort, aliases, build_registry
from proxy.gatewayapi.translate import translate as translate_gateway_api
from proxy.routing.match import HttpMatch, TcpMatch
from proxy.routing.snapshot import (
    Cluster,
    Destination,
    DirectResponse,
    HeaderOps,
    HttpListener,
    HttpRoute,
    Redirect,
    RouteTable,
    ServiceInfo,
    Snapshot,
    SniRoute,
    TcpListener,
    TcpRoute,
    VirtualHost,
    WeightedDestinations,
    cluster_name,
)
from proxy.routing.weighted import cumulative
from proxy.tls.credentials import stamps

DRAIN_ANNOTATION = "shiftproxy.io/tcp-drain-on-shift"
HTTP_SERVER_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTPS"})
TCP_SERVER_PROTOCOLS = frozenset({"TCP", "MONGO", "TLS"})


@dataclass(frozen=True, slots=True)
class CompileOptions:
    gateway_labels: dict[str, str] = field(default_factory=lambda: {"istio": "ingressgateway"})
    gateway: bool = True  # run the gateway role
    mesh: bool = True  # run the sidecar (mesh) role
    bind: str = "0.0.0.0"  # address for gateway listeners
    mesh_bind: str = "127.0.0.1"
    mesh_port: int = 15001  # outbound HTTP listener
    mesh_tcp_port_offset: int = 0  # sidecar TCP listener = service port + offset
    namespace: str = "default"  # this proxy's namespace, for match.sourceNamespace (its labels: gateway_labels)
    capture: bool = False  # route connections redirected to the outbound listener by original destination
    outbound_traffic_policy: str = "ALLOW_ANY"  # redirected connections to no service: ALLOW_ANY | REGISTRY_ONLY
    inbound_capture_port: int = 0  # with capture: listener for redirected inbound connections (0: none)
    tls: TlsOptions = field(default_factory=TlsOptions)  # where certificate files come from


def build_snapshot(paths: Iterable[str], options: CompileOptions, version: int = 1,
                   extra: list[RawObject] | None = None) -> tuple[Snapshot, LoadResult]:
    """load → validate → compile. Raises ConfigError with every error at once."""
    from proxy.config.validate import validate

    loaded = load_paths(paths)
    if extra:
        loaded.objects.extend(extra)
    errors, warnings = validate(loaded.objects)
    if loaded.errors or errors:
        raise ConfigError(loaded.errors + errors)
    snapshot = compile_snapshot(loaded.objects, options, version,
                                warnings=[str(w) for w in warnings], notices=loaded.notices)
    return snapshot, loaded


def content_hash(objects: list[RawObject], options: CompileOptions) -> str:
    canonical = sorted(
        json.dumps([o.kind, o.namespace, o.name, o.body.get("spec"), o.body.get("metadata", {}).get("annotations")],
                    sort_keys=True, default=str) for o in objects
    )
    digest = hashlib.sha256()
    digest.update(repr(options).encode())
    for item in canonical:
        digest.update(item.encode())
    return digest.hexdigest()[:16]


def compile_snapshot(objects: list[RawObject], options: CompileOptions, version: int = 1,
                     warnings: list[str] | None = None, notices: list[str] | None = None) -> Snapshot:
    """Compile validated objects. Field names are canonicalised first: Istio also accepts snake_case."""
    from proxy.config.validate import canonical_spec

    # Gateway API kinds → the Istio objects they mean
    objects, translated = translate_gateway_api(objects, options.gateway_labels if options.gateway else None)
    canonical = [replace(o, body={**o.body, "spec": canonical_spec(o)}) for o in objects]
    try:
        return _Compiler(canonical, options).run(version, warnings or [], (notices or []) + translated)
    except ConfigError:
        raise  # e.g. a certificate file that is missing: the config error it is
    except Exception as exc:  # a compiler bug rejects the change like an invalid config; it never kills the proxy
        files = ", ".join(sorted({o.file for o in objects})) or "config"
        raise ConfigError([Diagnostic(files, 0, "", f"internal error while compiling: {exc!r}")]) from exc


class _Compiler:
    def __init__(self, objects: list[RawObject], options: CompileOptions) -> None:
        self.objects = objects
        self.options = options
        self.registry: dict[str, Service] = build_registry(objects)
        self.clusters: dict[str, Cluster] = {}
        self.notices: list[str] = []
        self.subsets, self.policies = compile_cluster.destination_rules(objects)
        # delegate VirtualServices are merged into their roots here, as istiod does
        self.virtual_services, delegate_notices = expand_delegates(o for o in objects if o.kind == "VirtualService")
        self.notices.extend(delegate_notices)
        self.mesh_vs: list[RawObject] = []
        self.tls = TlsCompiler(objects, options.tls)

    def run(self, version: int, warnings: list[str], notices: list[str]) -> Snapshot:
        compile_cluster.build_clusters(self.clusters, self.notices, self.registry, self.subsets, self.policies,
                                       self.tls, self.options.capture)
        http: dict[str, HttpListener] = {}
        tcp: dict[str, TcpListener] = {}
        if self.options.gateway:
            self._gateway_listeners(http, tcp)
        if self.options.mesh:
            self._mesh_listeners(http, tcp)
        services = {s.fqdn: ServiceInfo(s.fqdn, s.name, s.namespace) for s in self.registry.values()}
        capture = None
        if self.options.mesh and self.options.capture:
            capture, capture_notices = build_capture_table(
                self.registry, http.get("mesh_http"), self.clusters,
                lambda service, port: self._mesh_tcp_routes(self.mesh_vs, service, port),
                self.options.outbound_traffic_policy,  # type: ignore[arg-type]
                (self.options.bind, self.options.inbound_capture_port))
            self.notices += capture_notices
        self.tls.finish()
        digest = content_hash(self.objects, self.options)
        if self.tls.credentials:  # a changed CA bundle (reloaded only by a rebuild) must change the hash
            digest = hashlib.sha256((digest + stamps(self.tls.credentials)).encode()).hexdigest()[:16]
        return Snapshot(version, digest, http, tcp, dict(self.clusters),
                        services, tuple(warnings), tuple(notices + sorted(set(self.notices))), capture,
                        tuple(self.tls.credentials))

    # destinations ---------------------------------------------------------------------------------

    def _destinations(self, vs: RawObject, routes: list[dict[str, Any]], listener_port: int | None,
                      http: bool) -> WeightedDestinations:
        """Istio's weight rules: one destination gets 100 %; among several, weight 0/absent gets nothing."""
        entries = []
        for rd in routes:
            dest = rd.get("destination") or {}
            host = fqdn(str(dest.get("host", "")), vs.namespace)
            service = self.registry.get(host)
            number = (dest.get("port") or {}).get("number")
            port: int | None = int(number) if number else None
            if port is None and service is not None:
                only = service.port(None)
                if only is not None:
                    port = only.number
                else:
                    port = listener_port if service.port(listener_port) else _first_port(service, http)
            subset = str(dest.get("subset") or "")
            name = cluster_name(port or 0, subset, host)
            headers = rd.get("headers") or {}
            entries.append(Destination(name, self.clusters.get(name), int(rd.get("weight") or 0),
                                       _header_ops(headers.get("request")), _header_ops(headers.get("response"))))
        if len(entries) > 1:
            entries = [d for d in entries if d.weight > 0]
        else:
            entries = [Destination(d.cluster_name, d.cluster, 100, d.request_headers, d.response_headers)
                       for d in entries]
        action = compile_shift.apply(vs, WeightedDestinations(tuple(entries), cumulative([d.weight for d in entries])))
        self.notices.extend(compile_shift.empty_warnings(vs, action))
        return action

    # HTTP -----------------------------------------------------------------------------------------

    def _http_routes(self, vs: RawObject, listener_port: int | None, gateway: str | None) -> list[HttpRoute]:
        """The VS's http[] rules for one listener: static conditions (port, gateways) resolved now."""
        out: list[HttpRoute] = []
        top_gateways = _gateways(vs)
        for index, rule in enumerate(vs.spec.get("http") or []):
            blocks = rule.get("match") or []
            matches: list[HttpMatch] = []
            for block in blocks:
                block = block or {}
                gws = [_gateway_ref(g, vs.namespace) for g in block["gateways"]] if block.get("gateways") \
                    else top_gateways
                if (gateway or "mesh") not in gws:
                    continue
                if not compile_http.source_matches(block, self.options.gateway_labels, self.options.namespace):
                    continue  # istiod drops blocks whose sourceLabels/sourceNamespace are not this proxy's
                port = int(block.get("port") or 0)
                if port and listener_port is not None and port != listener_port:
                    continue
                matches.append(compile_match.http_match(block, port if listener_port is None else 0))
            if blocks and not matches:
                continue  # every block was for another gateway or port
            # fields accepted but not enforced are warned about by validation (proxy.config.enforcement)
            fault = rule.get("fault") or {}
            where = f"{vs.file}: VirtualService {vs.namespace}/{vs.name} spec.http[{index}]"
            self.notices.extend(compile_http.format_problems(rule, where))
            connect_retries, retry = retry_policy(rule.get("retries"))
            out.append(HttpRoute(
                connect_retries=connect_retries,
                name=str(rule.get("name") or f"{vs.namespace}/{vs.name}#{index}"),
                virtual_service=f"{vs.namespace}/{vs.name}", rule_index=index,
                matches=tuple(matches) if blocks and not compile_match.any_catch_all(matches) else (),
                action=self._http_action(vs, rule, listener_port),
                timeout=parse_duration(str(rule["timeout"])) if rule.get("timeout") else None,
                rewrite=compile_match.rewrite(rule.get("rewrite")),
                request_headers=_header_ops((rule.get("headers") or {}).get("request")),
                response_headers=_header_ops((rule.get("headers") or {}).get("response")),
                fault=compile_match.fault(fault),
                mirrors=compile_http.mirrors(rule, lambda d: self._mirror_cluster(vs, d, listener_port)),
                cors=compile_http.cors_policy(rule.get("corsPolicy")),
                retry=retry,
            ))
        return out

    def _mirror_cluster(self, vs: RawObject, destination: dict[str, Any],
                        listener_port: int | None) -> tuple[str, Cluster | None]:
        """The cluster a mirror destination names, its port chosen as for a route destination."""
        d = self._destinations(vs, [{"destination": destination}], listener_port, http=True).destinations[0]
        return d.cluster_name, d.cluster

    def _http_action(self, vs: RawObject, rule: dict[str, Any],
                     listener_port: int | None) -> WeightedDestinations | Redirect | DirectResponse:
        if rule.get("redirect"):
            r = rule["redirect"]
            return Redirect(uri=r.get("uri"), prefix_rewrite=r.get("prefixRewrite"), authority=r.get("authority"),
                            scheme=r.get("scheme"), port=int(r["port"]) if r.get("port") else None,
                            derive_port=r.get("derivePort"), code=int(r.get("redirectCode") or 301))
        if rule.get("directResponse"):
            d = rule["directResponse"]
            body = d.get("body") or {}
            data = body.get("string", "").encode() if "string" in body else base64.b64decode(body.get("bytes", ""))
            return DirectResponse(int(d["status"]), data)
        return self._destinations(vs, rule.get("route") or [], listener_port, http=True)

    def _virtual_host(self, name: str, domains: list[str], routes: list[HttpRoute]) -> VirtualHost:
        needs_view = any(r.matches for r in routes)
        return VirtualHost(name, tuple(domains), tuple(routes), needs_view)

    def _gateway_listeners(self, http: dict[str, HttpListener], tcp: dict[str, TcpListener]) -> None:
        labels = self.options.gateway_labels
        servers: dict[tuple[str, int], list[tuple[str, dict[str, Any]]]] = {}
        for gw in (o for o in self.objects if o.kind == "Gateway"):
            selector = gw.spec.get("selector") or {}
            if any(labels.get(k) != str(v) for k, v in selector.items()):
                continue
            for server in gw.spec.get("servers") or []:
                proto = str(server["port"].get("protocol", "")).upper()
                kind = "http" if proto in HTTP_SERVER_PROTOCOLS else "tcp" if proto in TCP_SERVER_PROTOCOLS else ""
                if proto == "HTTPS" and not terminates(server):
                    kind = "tcp"  # HTTPS passed through: routed by SNI like a TLS server
                if not kind:
                    continue  # validation warns: Port.protocol in proxy.config.enforcement
                servers.setdefault((kind, int(server["port"]["number"])), []).append(
                    (f"{gw.namespace}/{gw.name}", server))
        bind = self.options.bind
        for (kind, port), bound in sorted(servers.items()):
            gateway_names = [g for g, _ in bound]
            servers_here = [s for _, s in bound]
            tls = self.tls.listener(port, servers_here)
            if kind == "http":
                table = self._gateway_route_table(gateway_names, port, bound)
                table = https_redirects(table, servers_here, port)
                name = f"gateway_http_{port}"
                http[name] = HttpListener(name, bind, port, "gateway", table, tls)
            else:
                name = f"gateway_tcp_{port}"
                sni = tuple(self._gateway_sni_routes(gateway_names, port)) if tls is None else ()
                tcp[name] = TcpListener(name, bind, port, "gateway", tuple(self._gateway_tcp_routes(gateway_names,
                                                                                                  port)), tls, sni)

    def _bound(self, vs: RawObject, gateway_names: list[str]) -> str | None:
        refs = set(_gateways(vs))
        for block in vs.spec.get("http") or []:
            for m in block.get("match") or []:
                refs.update(_gateway_ref(g, vs.namespace) for g in (m or {}).get("gateways") or [])
        return next((g for g in gateway_names if g in refs), None)

    def _gateway_route_table(self, gateway_names: list[str], port: int,
                             bound: list[tuple[str, dict[str, Any]]]) -> RouteTable:
        server_hosts = [h.split("/", 1)[-1].lower() for _, s in bound for h in s.get("hosts") or ["*"]]
        # VirtualServices for the same host are merged at gateways: rules concatenated in load order
        by_domain: dict[str, list[HttpRoute]] = {}
        for vs in self.virtual_services:
            gateway = self._bound(vs, gateway_names)
            if gateway is None or not vs.spec.get("http"):
                continue
            routes = self._http_routes(vs, port, gateway)
            for host in vs.spec.get("hosts") or []:
                host = str(host).lower()
                if not any(_host_admitted(host, sh) for sh in server_hosts):
                    continue
                by_domain.setdefault(host, []).extend(routes)
        return self._route_table(by_domain, port)

    def _route_table(self, by_domain: dict[str, list[HttpRoute]], port: int | None) -> RouteTable:
        exact: dict[str, VirtualHost] = {}
        suffixes: list[tuple[str, VirtualHost]] = []
        catch_all = None
        for domain, routes in by_domain.items():
            vh = self._virtual_host(domain, [domain], routes)
            if domain == "*":
                catch_all = vh
            elif domain.startswith("*."):
                suffixes.append((domain[1:], vh))
            else:
                exact[domain] = vh
                if port:
                    exact[f"{domain}:{port}"] = vh
        suffixes.sort(key=lambda item: -len(item[0]))
        return RouteTable(exact, tuple(suffixes), catch_all)

    def _mesh_listeners(self, http: dict[str, HttpListener], tcp: dict[str, TcpListener]) -> None:
        opts = self.options
        mesh_vs = [vs for vs in self.virtual_services if "mesh" in _gateways(vs) or self._has_mesh_block(vs)]
        self.mesh_vs = mesh_vs
        exact: dict[str, VirtualHost] = {}
        suffixes: list[tuple[str, VirtualHost]] = []
        claimed: set[str] = set()
        for vs in mesh_vs:
            if not vs.spec.get("http"):
                continue
            hosts = [fqdn(str(h), vs.namespace) for h in vs.spec.get("hosts") or []]
            hosts = [h for h in hosts if h not in claimed]  # one VS per host for sidecars: the first wins
            if not hosts:
                continue
            claimed.update(hosts)
            routes = self._http_routes(vs, None, None)
            vh = self._virtual_host(f"{vs.namespace}/{vs.name}", hosts, routes)
            for host in hosts:
                if host.startswith("*."):
                    suffixes.append((host[1:], vh))
                    continue
                for domain in self._domains(host):
                    exact.setdefault(domain, vh)
        # services without a VirtualService get the default route: all endpoints, every version
        for service in self.registry.values():
            if service.fqdn in claimed or not any(p.is_http for p in service.ports):
                continue
            for port in (p for p in service.ports if p.is_http):
                route = HttpRoute(
                    name=f"default/{service.fqdn}:{port.number}", virtual_service="", rule_index=0, matches=(),
                    action=self._default_destinations(service, port),
                )
                vh = VirtualHost(f"default:{service.fqdn}:{port.number}", tuple(aliases(service.fqdn)), (route,),
                                 False)
                for alias in aliases(service.fqdn):
                    exact.setdefault(f"{alias}:{port.number}", vh)
                    if port is _first_http(service):
                        exact.setdefault(alias, vh)
        suffixes.sort(key=lambda item: -len(item[0]))
        name = "mesh_http"
        http[name] = HttpListener(name, opts.mesh_bind, opts.mesh_port, "mesh",
                                  RouteTable(exact, tuple(suffixes), None))
        self._mesh_tcp_listeners(mesh_vs, tcp)

    def _has_mesh_block(self, vs: RawObject) -> bool:
        return any("mesh" in ((m or {}).get("gateways") or []) for r in vs.spec.get("http") or []
                   for m in r.get("match") or [])

    def _domains(self, host: str) -> list[str]:
        """Every alias of a host, with and without each of its service's ports."""
        service = self.registry.get(host)
        names = aliases(host)
        ports = [p.number for p in service.ports] if service else []
        return names + [f"{n}:{p}" for n in names for p in ports]

    def _default_destinations(self, service: Service, port: ServicePort) -> WeightedDestinations:
        name = cluster_name(port.number, "", service.fqdn)
        return WeightedDestinations((Destination(name, self.clusters.get(name), 100),), (100,))

    # TCP ------------------------------------------------------------------------------------------

    def _tcp_routes(self, vs: RawObject, port: int, gateway: str | None) -> list[TcpRoute]:
        out = []
        top = _gateways(vs)
        drain = (vs.body.get("metadata") or {}).get("annotations", {}) or {}
        drain_on_shift = parse_duration(str(drain[DRAIN_ANNOTATION])) if DRAIN_ANNOTATION in drain else None
        for index, rule in enumerate(vs.spec.get("tcp") or []):
            blocks = rule.get("match") or []
            matches = []
            for block in blocks:
                gws = [_gateway_ref(g, vs.namespace) for g in block["gateways"]] if block.get("gateways") else top
                if (gateway or "mesh") not in gws:
                    continue
                if not compile_http.source_matches(block, self.options.gateway_labels, self.options.namespace):
                    continue
                if block.get("port") and int(block["port"]) != port:
                    continue  # istiod drops blocks for other ports when it builds this listener
                nets = tuple(ipaddress.ip_network(s, strict=False) for s in block.get("destinationSubnets") or [])
                matches.append(TcpMatch(0, nets))
            if blocks and not matches:
                continue
            catch_all = not blocks or any(not m.destination_subnets for m in matches)
            out.append(TcpRoute(f"{vs.namespace}/{vs.name}#tcp{index}", f"{vs.namespace}/{vs.name}",
                                () if catch_all else tuple(matches),
                                self._destinations(vs, rule.get("route") or [], port, http=False), drain_on_shift))
        return out

    def _gateway_sni_routes(self, gateway_names: list[str], port: int) -> list[SniRoute]:
        return sni_routes(self.virtual_services, gateway_names, port, self._destinations, self._source_ok,
                          _gateway_ref)

    def _source_ok(self, block: dict[str, Any]) -> bool:
        return compile_http.source_matches(block, self.options.gateway_labels, self.options.namespace)

    def _gateway_tcp_routes(self, gateway_names: list[str], port: int) -> list[TcpRoute]:
        routes: list[TcpRoute] = []
        for vs in self.virtual_services:
            gateway = next((g for g in gateway_names if g in _gateways(vs)), None)
            if gateway is None:
                gateway = next((g for g in gateway_names for r in vs.spec.get("tcp") or []
                                for m in r.get("match") or [] if g in [_gateway_ref(x, vs.namespace)
                                                                      for x in (m or {}).get("gateways") or []]),
                               None)
            if gateway is not None:
                routes.extend(self._tcp_routes(vs, port, gateway))
        return routes

    def _mesh_tcp_routes(self, mesh_vs: list[RawObject], service: Service, port: ServicePort) -> list[TcpRoute]:
        routes: list[TcpRoute] = []
        vs = next((v for v in mesh_vs if service.fqdn in
                   [fqdn(str(h), v.namespace) for h in v.spec.get("hosts") or []] and v.spec.get("tcp")), None)
        if vs is not None:
            routes = self._tcp_routes(vs, port.number, None)
        # no rule for this port → the service's default route (TCP falls through, unlike HTTP's 404)
        routes.append(TcpRoute(f"default/{service.fqdn}:{port.number}", "", (),
                               self._default_destinations(service, port)))
        return routes

    def _mesh_tcp_listeners(self, mesh_vs: list[RawObject], tcp: dict[str, TcpListener]) -> None:
        opts = self.options
        for service in self.registry.values():
            for port in service.ports:
                if port.is_http:
                    continue
                routes = self._mesh_tcp_routes(mesh_vs, service, port)
                # TLS and HTTPS ports are passed through, routed by SNI with the mesh VirtualServices' tls rules;
                # an HTTPS port gets a listener only for such rules (egress entries for :443 need no local port)
                sni = tuple(sni_routes(mesh_vs, ["mesh"], port.number, self._destinations, self._source_ok,
                                       _gateway_ref)) \
                    if port.protocol in ("HTTPS", "TLS") else ()
                if port.protocol == "HTTPS" and not sni:
                    continue
                listen_port = port.number + opts.mesh_tcp_port_offset
                name = f"mesh_tcp_{listen_port}"
                if name in tcp or listen_port == opts.mesh_port:
                    self.notices.append(f"sidecar TCP port {listen_port} of {service.fqdn} is already in use by "
                                        "another service; skipped")
                    continue
                tcp[name] = TcpListener(name, opts.mesh_bind, listen_port, "mesh", tuple(routes), None, sni)


# small pure helpers -------------------------------------------------------------------------------


def _first_port(service: Service, http: bool) -> int | None:
    port = next((p for p in service.ports if p.is_http == http), None) or (service.ports[0] if service.ports
                                                                            else None)
    return port.number if port else None


def _first_http(service: Service) -> ServicePort | None:
    return next((p for p in service.ports if p.is_http), None)


def _gateway_ref(ref: str, namespace: str) -> str:
    ref = str(ref)
    if ref == "mesh":
        return ref
    if "/" in ref:
        return ref
    if "." in ref:  # legacy name.ns.svc.cluster.local
        parts = ref.split(".")
        return f"{parts[1]}/{parts[0]}"
    return f"{namespace}/{ref}"


def _gateways(vs: RawObject) -> list[str]:
    return [_gateway_ref(g, vs.namespace) for g in vs.spec.get("gateways") or ["mesh"]]


def _host_admitted(vs_host: str, server_host: str) -> bool:
    """Gateway server hosts admit VS hosts: `*` admits all; `*.example.com` admits `dev.example.com`."""
    if server_host == "*" or vs_host == server_host:
        return True
    if server_host.startswith("*."):
        return vs_host.endswith(server_host[1:])
    return vs_host == "*"


def _header_ops(spec: dict[str, Any] | None) -> HeaderOps | None:
    return compile_http.header_ops(spec)
