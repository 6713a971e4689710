"""Translate Istio objects into a static Envoy bootstrap, the way istiod would for one gateway proxy.

This gives the benchmark an Envoy that routes exactly like the proxy under test, from the same YAML:
each Gateway server whose selector matches the gateway labels becomes a listener; HTTP servers get an
`http_connection_manager` whose routes come from the bound VirtualServices' `http[]` rules (several
destinations → `weighted_clusters`), TCP servers get a `tcp_proxy` from the first matching `tcp[]` rule
(several destinations → `tcp_proxy.weighted_clusters`). Every destination becomes a STATIC (or STRICT_DNS)
cluster named like Istio's (`outbound|<port>|<subset>|<fqdn>`) holding the ServiceEntry / WorkloadEntry
endpoints selected by the DestinationRule subset labels. Circuit breakers are opened up to 2^32-1 as
istiod does, so Envoy's own defaults (1024 connections) do not cap the idle-connection load.

Covered: uri/header/method/authority/scheme/query matches, `withoutHeaders`, `ignoreUriCase`, match-level
`port`, `timeout` (default infinite like Istio), `rewrite.uri` for prefix matches, `directResponse`, an optional
mesh (sidecar outbound) HTTP listener with default routes, HTTPS servers terminating with certificate files
(`tls.mode: SIMPLE`; a `DownstreamTlsContext` on the listener, ALPN http/1.1). Anything else is skipped with a
warning: this is a benchmark fixture, not a control plane. Pure functions, no I/O except `load_objects`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from proxy.config.load import RawObject, iter_config_files, load_text

DEFAULT_GATEWAY_LABELS: Mapping[str, str] = {"istio": "ingressgateway"}
CLUSTER_DOMAIN = "svc.cluster.local"
MAX_U32 = 2**32 - 1
HTTP_PROTOCOLS = {"HTTP", "HTTP2", "GRPC", "GRPC-WEB"}
TLS_PROTOCOLS = {"HTTPS", "TLS"}
LB_POLICIES = {"ROUND_ROBIN": "ROUND_ROBIN", "RANDOM": "RANDOM", "LEAST_REQUEST": "LEAST_REQUEST",
               "LEAST_CONN": "LEAST_REQUEST", "UNSPECIFIED": "LEAST_REQUEST"}
ROUTER_FILTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_VERSIONS = {"TLS_AUTO": "TLS_AUTO", "TLSV1_0": "TLSv1_0", "TLSV1_1": "TLSv1_1", "TLSV1_2": "TLSv1_2",
                "TLSV1_3": "TLSv1_3"}


@dataclass(frozen=True, slots=True)
class EnvoyConfig:
    bootstrap: dict[str, Any]
    warnings: tuple[str, ...]

    def to_yaml(self) -> str:
        return yaml.dump(self.bootstrap, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False)


class _PlainDumper(yaml.SafeDumper):
    """Writes shared sub-dicts (one route action for several match blocks) in full, without YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def load_objects(paths: Iterable[str | Path]) -> list[RawObject]:
    """Read the paths in order like successive `kubectl apply` calls.

    A later object with the same kind/namespace/name replaces the earlier one, so the Istio tasks'
    sequence (apply tcp-echo-all-v1.yaml, then tcp-echo-20-v2.yaml) can be given as two paths.
    """
    objects: dict[tuple[str, str, str], RawObject] = {}
    for file in iter_config_files(str(p) for p in paths):
        result = load_text(Path(file).read_text(encoding="utf-8"), file)
        if result.errors:
            raise ValueError("; ".join(f"{d.file}:{d.line}: {d.path}: {d.reason}" for d in result.errors))
        for obj in result.objects:
            objects[obj.key] = obj
    return list(objects.values())


def fqdn(host: str, namespace: str) -> str:
    """Istio's short-name rule: a name without a dot gets `<namespace>.svc.cluster.local`."""
    if host == "*" or "." in host or ":" in host:
        return host
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}"


def host_aliases(host: str) -> list[str]:
    """Names a sidecar accepts for a service: reviews, reviews.default, reviews.default.svc, the FQDN."""
    suffix = "." + CLUSTER_DOMAIN
    if not host.endswith(suffix):
        return [host]
    name, namespace = host[: -len(suffix)].split(".", 1)
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", host]


@dataclass(slots=True)
class _Endpoint:
    address: str
    ports: dict[str, int]
    labels: dict[str, str]
    weight: int | None


@dataclass(slots=True)
class _Service:
    host: str
    ports: list[dict[str, Any]]
    resolution: str
    endpoints: list[_Endpoint] = field(default_factory=list)


class _Translator:
    def __init__(self, objects: Sequence[RawObject], bind: str, access_log_path: str | None) -> None:
        self.bind = bind
        self.access_log_path = access_log_path
        self.warnings: list[str] = []
        self.clusters: dict[str, dict[str, Any]] = {}
        by_kind: dict[str, list[RawObject]] = {}
        for obj in objects:
            by_kind.setdefault(obj.kind, []).append(obj)
        self.gateways = by_kind.get("Gateway", [])
        self.virtual_services = by_kind.get("VirtualService", [])
        self.services = self._registry(by_kind.get("ServiceEntry", []), by_kind.get("WorkloadEntry", []))
        self.subsets: dict[str, dict[str, dict[str, str]]] = {}
        self.lb_policy: dict[str, str] = {}
        for dr in by_kind.get("DestinationRule", []):
            host = fqdn(str(dr.spec.get("host", "")), dr.namespace)
            subsets = self.subsets.setdefault(host, {})
            for subset in dr.spec.get("subsets") or []:
                subsets.setdefault(str(subset.get("name")), dict(subset.get("labels") or {}))
            simple = ((dr.spec.get("trafficPolicy") or {}).get("loadBalancer") or {}).get("simple")
            if simple is not None and host not in self.lb_policy:
                self.lb_policy[host] = LB_POLICIES.get(str(simple), "LEAST_REQUEST")

    # --- registry -------------------------------------------------------------------------------

    def _registry(self, entries: list[RawObject], workloads: list[RawObject]) -> dict[str, _Service]:
        services: dict[str, _Service] = {}
        for se in entries:
            spec = se.spec
            raw_endpoints = list(spec.get("endpoints") or [])
            selector = (spec.get("workloadSelector") or {}).get("labels")
            if selector:
                raw_endpoints += [we.spec for we in workloads
                                  if we.namespace == se.namespace and _selects(selector, we.spec.get("labels"))]
            endpoints = [_Endpoint(str(ep.get("address", "")), dict(ep.get("ports") or {}),
                                   dict(ep.get("labels") or {}), ep.get("weight")) for ep in raw_endpoints]
            for host in spec.get("hosts") or []:
                services[fqdn(str(host), se.namespace)] = _Service(
                    fqdn(str(host), se.namespace), list(spec.get("ports") or []),
                    str(spec.get("resolution", "NONE")), endpoints)
        return services

    # --- clusters -------------------------------------------------------------------------------

    def cluster_for(self, destination: Mapping[str, Any], namespace: str, listener_port: int | None) -> str:
        host = fqdn(str(destination.get("host", "")), namespace)
        subset = str(destination.get("subset") or "")
        service = self.services.get(host)
        port = (destination.get("port") or {}).get("number")
        if port is None and service is not None and len(service.ports) == 1:
            port = service.ports[0].get("number")
        if port is None:
            port = listener_port
        name = f"outbound|{port}|{subset}|{host}"
        if name not in self.clusters:
            self.clusters[name] = self._cluster(name, host, subset, port, service)
        return name

    def _cluster(self, name: str, host: str, subset: str, port: int | None,
                 service: _Service | None) -> dict[str, Any]:
        lb_endpoints: list[dict[str, Any]] = []
        kind = "STATIC"
        if service is None:
            self.warnings.append(f"{host}: no ServiceEntry for this host; cluster {name} has no endpoints")
        else:
            labels = {}
            if subset:
                known = self.subsets.get(host, {})
                if subset not in known:
                    self.warnings.append(f"{host}: no DestinationRule subset {subset!r}; {name} has no endpoints")
                    labels = None
                else:
                    labels = known[subset]
            if service.resolution.startswith("DNS"):
                kind = "STRICT_DNS"
            spec_port = next((p for p in service.ports if p.get("number") == port), {})
            endpoints = service.endpoints
            if not endpoints and kind == "STRICT_DNS":
                endpoints = [_Endpoint(host, {}, {}, None)]
            for ep in endpoints if labels is not None else []:
                if not _selects(labels, ep.labels):
                    continue
                target = ep.ports.get(str(spec_port.get("name"))) or spec_port.get("targetPort") or port
                lb_endpoint: dict[str, Any] = {"endpoint": {"address": _socket_address(ep.address, int(target))}}
                if ep.weight:
                    lb_endpoint["load_balancing_weight"] = int(ep.weight)
                lb_endpoints.append(lb_endpoint)
        cluster: dict[str, Any] = {
            "name": name,
            "type": kind,
            "connect_timeout": "10s",
            "lb_policy": self.lb_policy.get(host, "LEAST_REQUEST"),
            "circuit_breakers": {"thresholds": [{"max_connections": MAX_U32, "max_pending_requests": MAX_U32,
                                                 "max_requests": MAX_U32, "max_retries": MAX_U32}]},
            "load_assignment": {"cluster_name": name,
                                "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints else []},
        }
        if kind == "STRICT_DNS":
            cluster["dns_lookup_family"] = "V4_ONLY"
        return cluster

    def destinations(self, routes: Sequence[Mapping[str, Any]], namespace: str,
                     listener_port: int | None) -> dict[str, Any]:
        """`{"cluster": name}` for one destination, else `{"weighted_clusters": ...}` without zero weights."""
        if len(routes) == 1:
            return {"cluster": self.cluster_for(routes[0].get("destination") or {}, namespace, listener_port)}
        weighted = [{"name": self.cluster_for(r.get("destination") or {}, namespace, listener_port),
                     "weight": int(r.get("weight") or 0)} for r in routes]
        # Istio leaves weight-0 (and weight-less) destinations out; Envoy's tcp_proxy rejects weight 0.
        weighted = [w for w in weighted if w["weight"] > 0]
        if len(weighted) == 1:
            return {"cluster": weighted[0]["name"]}
        return {"weighted_clusters": {"clusters": weighted}}

    # --- listeners ------------------------------------------------------------------------------

    def gateway_listeners(self, gateway_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        servers_by_port: dict[int, list[tuple[RawObject, dict[str, Any]]]] = {}
        for gw in self.gateways:
            if not _selects(gw.spec.get("selector") or {}, gateway_labels):
                continue
            for server in gw.spec.get("servers") or []:
                port = int((server.get("port") or {}).get("number", 0))
                servers_by_port.setdefault(port, []).append((gw, server))
        listeners = []
        for port, servers in sorted(servers_by_port.items()):
            protocol = str((servers[0][1].get("port") or {}).get("protocol", "")).upper()
            bind = str(servers[0][1].get("bind") or self.bind)
            bound = [vs for vs in self.virtual_services if any(_binds(vs, gw) for gw, _ in servers)]
            if protocol in HTTP_PROTOCOLS:
                vhosts = self._virtual_hosts(bound, port, mesh=False)
                listeners.append(_listener(bind, port, self._hcm(f"gateway_{port}", vhosts)))
            elif protocol in TLS_PROTOCOLS:
                transport = self._downstream_tls(port, protocol, [server for _, server in servers])
                if transport is not None:
                    vhosts = self._virtual_hosts(bound, port, mesh=False)
                    listeners.append(_listener(bind, port, self._hcm(f"gateway_{port}", vhosts), transport))
            else:
                tcp = self._tcp_proxy(bound, port)
                if tcp is None:
                    self.warnings.append(f"gateway port {port}: no tcp route matches; listener left out")
                else:
                    listeners.append(_listener(bind, port, tcp))
        return listeners

    def _downstream_tls(self, port: int, protocol: str, servers: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The listener's `DownstreamTlsContext` for an HTTPS server terminating with certificate files
        (`tls.mode: SIMPLE`, `serverCertificate`/`privateKey`); None with a warning for anything else."""
        tls = servers[0].get("tls") or {}
        mode = str(tls.get("mode", "SIMPLE")).upper()
        if protocol != "HTTPS" or mode != "SIMPLE" or not tls.get("serverCertificate") or not tls.get("privateKey"):
            self.warnings.append(f"gateway port {port}: only HTTPS servers with tls.mode SIMPLE and "
                                 "serverCertificate/privateKey files are translated; listener left out")
            return None
        if len(servers) > 1:
            self.warnings.append(f"gateway port {port}: only the first server's certificate is used (no SNI chains)")
        common: dict[str, Any] = {
            "tls_certificates": [{"certificate_chain": {"filename": str(tls["serverCertificate"])},
                                  "private_key": {"filename": str(tls["privateKey"])}}],
            "alpn_protocols": ["http/1.1"],  # what shiftproxy offers; Istio's gateways add h2
        }
        params = {key: TLS_VERSIONS[str(tls[field])] for field, key in (
            ("minProtocolVersion", "tls_minimum_protocol_version"),
            ("maxProtocolVersion", "tls_maximum_protocol_version")) if str(tls.get(field)) in TLS_VERSIONS}
        if tls.get("cipherSuites"):
            params["cipher_suites"] = [str(c) for c in tls["cipherSuites"]]
        if params:
            common["tls_params"] = params
        return {"name": "envoy.transport_sockets.tls",
                "typed_config": {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": common}}

    def mesh_listener(self, port: int) -> dict[str, Any]:
        bound = [vs for vs in self.virtual_services if "mesh" in (vs.spec.get("gateways") or ["mesh"])]
        vhosts = self._virtual_hosts(bound, port, mesh=True)
        used = {d for vh in vhosts for d in vh["domains"]}
        for host, service in sorted(self.services.items()):
            # A registry service with no VirtualService gets Istio's default route: all its endpoints.
            if any(d in used for d in host_aliases(host)):
                continue
            http_ports = [p for p in service.ports if str(p.get("protocol", "")).upper() in HTTP_PROTOCOLS]
            if not http_ports:
                continue
            cluster = self.cluster_for({"host": host, "port": {"number": http_ports[0]["number"]}}, "", port)
            vhosts.append({"name": f"{host}:default", "domains": host_aliases(host),
                           "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}]})
        return _listener(self.bind, port, self._hcm(f"mesh_{port}", vhosts))

    def _virtual_hosts(self, bound: list[RawObject], port: int, mesh: bool) -> list[dict[str, Any]]:
        vhosts: list[dict[str, Any]] = []
        used: set[str] = set()
        for vs in bound:
            domains = []
            for host in vs.spec.get("hosts") or []:
                expanded = fqdn(str(host), vs.namespace)
                for name in host_aliases(expanded) if mesh else [expanded]:
                    # Envoy rejects a domain listed in two virtual hosts; like a gateway, the first VS keeps it.
                    if name not in used:
                        used.add(name)
                        domains.append(name)
            if not domains:
                self.warnings.append(f"VirtualService {vs.namespace}/{vs.name}: hosts already taken; skipped")
                continue
            routes = []
            for index, rule in enumerate(vs.spec.get("http") or []):
                routes += self._http_routes(vs, index, rule, port)
            vhosts.append({"name": f"{vs.namespace}/{vs.name}:{port}", "domains": domains, "routes": routes})
        return vhosts

    def _http_routes(self, vs: RawObject, index: int, rule: Mapping[str, Any], port: int) -> list[dict[str, Any]]:
        where = f"VirtualService {vs.namespace}/{vs.name} http[{index}]"
        for unsupported in ("redirect", "fault", "mirror", "mirrors", "retries", "corsPolicy", "delegate"):
            if unsupported in rule:
                self.warnings.append(f"{where}: {unsupported} is not translated")
        action: dict[str, Any]
        if "route" in rule:
            action = {"route": {**self.destinations(rule["route"], vs.namespace, port),
                                "timeout": str(rule.get("timeout", "0s"))}}
        elif "directResponse" in rule:
            direct = rule["directResponse"]
            action = {"direct_response": {"status": int(direct.get("status", 200))}}
            body = (direct.get("body") or {}).get("string")
            if body is not None:
                action["direct_response"]["body"] = {"inline_string": str(body)}
        else:
            return []
        blocks = [b for b in rule.get("match") or [{}] if not b.get("port") or int(b["port"]) == port]
        routes = []
        for block in blocks:
            match = _route_match(block or {})
            route = {"match": match, **action}
            prefix_rewrite = (rule.get("rewrite") or {}).get("uri")
            if prefix_rewrite is not None and "route" in route:
                if "prefix" in match:
                    route["route"] = {**route["route"], "prefix_rewrite": str(prefix_rewrite)}
                else:
                    self.warnings.append(f"{where}: rewrite.uri is only translated for prefix matches")
            routes.append(route)
        return routes

    def _hcm(self, stat_prefix: str, vhosts: list[dict[str, Any]]) -> dict[str, Any]:
        config: dict[str, Any] = {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "strip_any_host_port": True,  # Host "x:8080" matches domain "x", as Istio's port-less domains do
            "route_config": {"name": stat_prefix, "virtual_hosts": vhosts},
            "http_filters": [copy.deepcopy(ROUTER_FILTER)],
        }
        if self.access_log_path:
            config["access_log"] = [_file_log(self.access_log_path)]
        return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}

    def _tcp_proxy(self, bound: list[RawObject], port: int) -> dict[str, Any] | None:
        for vs in bound:
            for rule in vs.spec.get("tcp") or []:
                blocks = rule.get("match") or [{}]
                if not any(not b.get("port") or int(b["port"]) == port for b in blocks):
                    continue
                config: dict[str, Any] = {"@type": TCP_PROXY_TYPE, "stat_prefix": f"tcp_{port}",
                                          **self.destinations(rule.get("route") or [], vs.namespace, port)}
                if self.access_log_path:
                    config["access_log"] = [_file_log(self.access_log_path)]
                return {"name": "envoy.filters.network.tcp_proxy", "typed_config": config}
        return None


def istio_to_envoy(objects: Sequence[RawObject], *, admin_port: int, bind: str = "127.0.0.1",
                   gateway_labels: Mapping[str, str] = DEFAULT_GATEWAY_LABELS,
                   mesh_http_port: int | None = None, access_log_path: str | None = None) -> EnvoyConfig:
    """Build the bootstrap for a gateway proxy labelled `gateway_labels` (plus a mesh HTTP listener if asked)."""
    translator = _Translator(objects, bind, access_log_path)
    listeners = translator.gateway_listeners(gateway_labels)
    if mesh_http_port is not None:
        listeners.append(translator.mesh_listener(mesh_http_port))
    if not listeners:
        translator.warnings.append("no listener: no Gateway selects these labels and no mesh port was asked for")
    bootstrap = {
        "node": {"id": "bench-envoy", "cluster": "bench"},
        "admin": {"address": _socket_address(bind, admin_port)},
        "static_resources": {"listeners": listeners, "clusters": list(translator.clusters.values())},
    }
    return EnvoyConfig(bootstrap, tuple(translator.warnings))


def _selects(selector: Mapping[str, Any], labels: Mapping[str, Any] | None) -> bool:
    labels = labels or {}
    return all(str(labels.get(k)) == str(v) for k, v in selector.items())


def _binds(vs: RawObject, gateway: RawObject) -> bool:
    for ref in vs.spec.get("gateways") or []:
        namespace, _, name = str(ref).rpartition("/")
        if name == gateway.name and (namespace or vs.namespace) == gateway.namespace:
            return True
    return False


def _string_match(match: Mapping[str, Any]) -> dict[str, Any]:
    """An Istio StringMatch as an Envoy StringMatcher; `{}` (Istio's "present") gives an empty dict."""
    if "exact" in match:
        return {"exact": str(match["exact"])}
    if "prefix" in match:
        return {"prefix": str(match["prefix"])}
    if "regex" in match:
        return {"safe_regex": {"regex": str(match["regex"])}}
    return {}


def _route_match(block: Mapping[str, Any]) -> dict[str, Any]:
    uri = block.get("uri") or {}
    match: dict[str, Any]
    if "exact" in uri:
        match = {"path": str(uri["exact"])}
    elif "regex" in uri:
        match = {"safe_regex": {"regex": str(uri["regex"])}}
    else:
        match = {"prefix": str(uri.get("prefix", "/")) or "/"}
    if block.get("ignoreUriCase"):
        match["case_sensitive"] = False
    headers = []
    pseudo = {"method": ":method", "authority": ":authority", "scheme": ":scheme"}
    for key, header in pseudo.items():
        if block.get(key):
            headers.append({"name": header, "string_match": _string_match(block[key])})
    for invert, source in ((False, "headers"), (True, "withoutHeaders")):
        for name, value in (block.get(source) or {}).items():
            string_match = _string_match(value or {})
            entry: dict[str, Any] = {"name": str(name)}
            if string_match:
                entry["string_match"] = string_match
            else:
                entry["present_match"] = True
            if invert:
                entry["invert_match"] = True
            headers.append(entry)
    if headers:
        match["headers"] = headers
    query = []
    for name, value in (block.get("queryParams") or {}).items():
        string_match = _string_match(value or {})
        matcher = {"string_match": string_match} if string_match else {"present_match": True}
        query.append({"name": str(name), **matcher})
    if query:
        match["query_parameters"] = query
    return match


def _socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def _listener(bind: str, port: int, network_filter: dict[str, Any],
              transport_socket: dict[str, Any] | None = None) -> dict[str, Any]:
    chain: dict[str, Any] = {"filters": [network_filter]}
    if transport_socket is not None:
        chain["transport_socket"] = transport_socket
    return {"name": f"{bind}_{port}", "address": _socket_address(bind, port), "filter_chains": [chain]}


def _file_log(path: str) -> dict[str, Any]:
    return {"name": "envoy.access_loggers.file", "typed_config": {"@type": FILE_LOG_TYPE, "path": path}}
