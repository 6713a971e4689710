"""Compile DestinationRules into clusters: a cluster per service port and one per subset, with the
merged traffic policy (Istio's MergeTrafficPolicy), load balancer, connection pool timeouts and TLS.
Called by compile.py. No I/O, no asyncio.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from proxy.config import compile_http
from proxy.config.compile_policy import cluster_resilience
from proxy.config.compile_tls import TlsCompiler
from proxy.config.duration import parse_duration
from proxy.config.hosts import fqdn
from proxy.config.load import RawObject
from proxy.config.registry import Service, ServicePort
from proxy.routing.snapshot import Cluster, LbPolicy, ServiceInfo, cluster_name


def destination_rules(objects: list[RawObject],
                      ) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Per host FQDN: subsets by name (first definition wins) and the top-level trafficPolicy."""
    subsets: dict[str, dict[str, dict[str, Any]]] = {}
    policies: dict[str, dict[str, Any]] = {}
    for dr in (o for o in objects if o.kind == "DestinationRule"):
        host = fqdn(str(dr.spec.get("host", "")), dr.namespace)
        by_name = subsets.setdefault(host, {})
        for subset in dr.spec.get("subsets") or []:
            by_name.setdefault(str(subset["name"]), subset)
        if dr.spec.get("trafficPolicy") and host not in policies:
            policies[host] = dr.spec["trafficPolicy"]
    return subsets, policies


def build_clusters(clusters: dict[str, Cluster], notices: list[str], registry: dict[str, Service],
                   subsets: dict[str, dict[str, dict[str, Any]]], policies: dict[str, dict[str, Any]],
                   tls: TlsCompiler, capture: bool) -> None:
    """A cluster per service port, and one per subset of it, into `clusters`."""
    for service in registry.values():
        info = ServiceInfo(service.fqdn, service.name, service.namespace)
        top = policies.get(service.fqdn, {})
        for port in service.ports:
            top_port = _port_policy(top, port.number)  # the top-level port settings first
            _add_cluster(clusters, notices, tls, capture, info, service, port, "", None, top_port)
            for name, subset in subsets.get(service.fqdn, {}).items():
                # a subset policy replaces that one field by field, then its own port settings apply
                # (Istio's MergeTrafficPolicy)
                own = subset.get("trafficPolicy") or {}
                policy = {**{k: v for k, v in top_port.items() if k != "portLevelSettings"}, **own}
                _add_cluster(clusters, notices, tls, capture, info, service, port, name, subset.get("labels") or {},
                             policy)


def _add_cluster(clusters: dict[str, Cluster], notices: list[str], tls_compiler: TlsCompiler, capture: bool,
                 info: ServiceInfo, service: Service, port: ServicePort, subset: str,
                 selector: dict[str, str] | None, policy: dict[str, Any]) -> None:
    policy = _port_policy(policy, port.number)
    lb = (policy.get("loadBalancer") or {}).get("simple") or "LEAST_REQUEST"
    hashing = compile_http.hash_policy(policy.get("loadBalancer"))
    if hashing is not None:
        lb = "RANDOM"  # Envoy's ring hash and Maglev pick at random for a request without a key
    elif lb in ("LEAST_CONN", "UNSPECIFIED"):  # Istio's alias and default
        lb = "LEAST_REQUEST"
    elif lb == "PASSTHROUGH" and capture:
        notices.append(f"loadBalancer PASSTHROUGH for {info.fqdn}: connections that were not redirected "
                       "(no original destination) use LEAST_REQUEST")
    elif lb == "PASSTHROUGH":
        notices.append(f"loadBalancer PASSTHROUGH for {info.fqdn} needs the original destination "
                       "(run --capture), which is off; using LEAST_REQUEST")
        lb = "LEAST_REQUEST"
    elif lb not in ("LEAST_REQUEST", "ROUND_ROBIN", "RANDOM"):
        notices.append(f"loadBalancer {lb} for {info.fqdn} is not supported; using LEAST_REQUEST")
        lb = "LEAST_REQUEST"
    pool = policy.get("connectionPool") or {}
    tcp_pool, http_pool = pool.get("tcp") or {}, pool.get("http") or {}
    idle = tcp_pool.get("idleTimeout")
    tcp_idle: float | None = 3600.0 if idle is None else (parse_duration(str(idle)) or None)
    name = cluster_name(port.number, subset, info.fqdn)
    tls = tls_compiler.cluster(policy.get("tls"), info.fqdn)
    endpoints = service.endpoints(port, selector)
    if tls is not None:  # pooled apart from plaintext connections to the same addresses
        endpoints = tuple(replace(e, pool_tag=tls.tag) for e in endpoints)
    clusters[name] = Cluster(
        name=name, service=info, port=port.number, subset=subset,
        endpoints=endpoints, lb_policy=_lb(lb), tls=tls,
        connect_timeout=parse_duration(str(tcp_pool.get("connectTimeout", "10s"))),
        tcp_idle_timeout=tcp_idle,
        http_idle_timeout=parse_duration(str(http_pool.get("idleTimeout", "1h"))),
        max_requests_per_connection=int(http_pool.get("maxRequestsPerConnection") or 0),
        hash_policy=hashing,
        **cluster_resilience(policy),
    )


def _lb(name: str) -> LbPolicy:
    return name if name in ("ROUND_ROBIN", "RANDOM", "PASSTHROUGH") else "LEAST_REQUEST"  # type: ignore[return-value]


def _port_policy(policy: dict[str, Any], port: int) -> dict[str, Any]:
    """portLevelSettings for `port` replace the four policy fields whole (they are not inherited)."""
    for pls in policy.get("portLevelSettings") or []:
        if int((pls.get("port") or {}).get("number") or 0) == port:
            return {k: pls.get(k) for k in ("loadBalancer", "connectionPool", "outlierDetection", "tls")}
    return policy
