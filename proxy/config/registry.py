"""The service registry: ServiceEntry (+ WorkloadEntry) → services with ports and labelled endpoints.

There is no Kubernetes here, so ServiceEntries are where `reviews` and its v1/v2/v3 instances come from.
Input objects are already validated. No I/O: DNS endpoints keep their name and are resolved at connect time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.config.hosts import CLUSTER_SUFFIX, fqdn
from proxy.config.load import RawObject
from proxy.routing.snapshot import Endpoint

HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})


def aliases(host: str) -> list[str]:
    """Every name a client may use for a host: `reviews`, `reviews.default`, `reviews.default.svc`, the FQDN."""
    if host.endswith(CLUSTER_SUFFIX):
        parts = host[: -len(CLUSTER_SUFFIX)].split(".")
        if len(parts) == 2:
            name, ns = parts
            return [name, f"{name}.{ns}", f"{name}.{ns}.svc", host]
    return [host]


def port_protocol(port: dict[str, Any]) -> str:
    """Protocol of a ServiceEntry port: `protocol`, else the port name's prefix (Istio's convention)."""
    proto = str(port.get("protocol") or "").upper()
    if proto:
        return proto
    prefix = str(port.get("name", "")).split("-", 1)[0].upper()
    return prefix if prefix in HTTP_PROTOCOLS | {"TCP", "TLS", "HTTPS", "MONGO", "REDIS", "MYSQL"} else "TCP"


@dataclass(slots=True)
class ServicePort:
    number: int
    name: str
    protocol: str
    target_port: int | None

    @property
    def is_http(self) -> bool:
        return self.protocol in HTTP_PROTOCOLS


@dataclass(slots=True)
class Service:
    fqdn: str
    name: str
    namespace: str
    ports: list[ServicePort]
    resolution: str
    # (address, per-port-name ports, labels, weight) of every workload
    workloads: list[tuple[str, dict[str, int], dict[str, str], int]] = field(default_factory=list)
    source: RawObject | None = None

    def port(self, number: int | None) -> ServicePort | None:
        if number is None:
            return self.ports[0] if len(self.ports) == 1 else None
        return next((p for p in self.ports if p.number == number), None)

    def endpoints(self, port: ServicePort, selector: dict[str, str] | None = None) -> tuple[Endpoint, ...]:
        """Endpoints serving `port`, limited to workloads whose labels contain `selector` (a subset)."""
        out = []
        for address, ports, labels, weight in self.workloads:
            if selector and any(labels.get(k) != v for k, v in selector.items()):
                continue
            number = ports.get(port.name) or port.target_port or port.number
            out.append(make_endpoint(address, number, labels, weight, self.name))
        return tuple(out)


def make_endpoint(address: str, port: int, labels: dict[str, str], weight: int, service_name: str) -> Endpoint:
    version = labels.get("version", "unknown")
    app = labels.get("app", service_name)
    canonical = (labels.get("service.istio.io/canonical-name") or labels.get("app.kubernetes.io/name")
                 or app)
    revision = (labels.get("service.istio.io/canonical-revision") or labels.get("app.kubernetes.io/version")
                or labels.get("version") or "latest")
    workload = f"{app}-{version}" if "version" in labels else app
    return Endpoint(address, port, dict(labels), weight, version, workload, canonical, revision)


def build_registry(objects: list[RawObject]) -> dict[str, Service]:
    workload_entries = [o for o in objects if o.kind == "WorkloadEntry"]
    services: dict[str, Service] = {}
    for se in (o for o in objects if o.kind == "ServiceEntry"):
        spec = se.spec
        ports = [
            ServicePort(int(p["number"]), str(p.get("name", "")), port_protocol(p),
                        int(p["targetPort"]) if p.get("targetPort") else None)
            for p in spec.get("ports") or []
        ]
        resolution = str(spec.get("resolution") or "NONE")
        workloads = [_workload(ep) for ep in spec.get("endpoints") or []]
        selector = (spec.get("workloadSelector") or {}).get("labels")
        if selector:
            for we in workload_entries:
                labels = we.spec.get("labels") or {}
                if we.namespace == se.namespace and all(labels.get(k) == v for k, v in selector.items()):
                    workloads.append(_workload(we.spec))
        for host in spec.get("hosts") or []:
            name = fqdn(str(host), se.namespace)
            if name in services:  # first definition wins, like Istio's oldest-first
                continue
            if name.endswith(CLUSTER_SUFFIX):
                short, _, ns = name[: -len(CLUSTER_SUFFIX)].partition(".")
            else:
                short, ns = name.split(".", 1)[0], se.namespace
            host_workloads = workloads
            if not workloads and resolution.startswith("DNS") and "*" not in name:
                host_workloads = [(str(host), {}, {}, 1)]  # DNS with no endpoints resolves the host itself
            services[name] = Service(name, short, ns, ports, resolution, list(host_workloads), se)
    return services


def _workload(spec: dict[str, Any]) -> tuple[str, dict[str, int], dict[str, str], int]:
    address = str(spec.get("address", ""))
    ports = {str(k): int(v) for k, v in (spec.get("ports") or {}).items()}
    labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
    return address, ports, labels, int(spec.get("weight") or 1)
