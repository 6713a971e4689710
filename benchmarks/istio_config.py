"""The Istio YAML every proxy in the benchmark is configured from.

One Gateway (selector `istio: ingressgateway`) with three servers:
- HTTP on `ports.http`: a 50/50 weighted route to subsets v1/v2 of `http-backend.bench.local`;
- TCP on `ports.tcp`: an 80/20 weighted route to subsets v1/v2 of `tcp-echo.bench.local` (echo servers);
- TCP on `ports.bulk`: a single-destination route to `bulk.bench.local` (iperf3 server or byte sink).
  Bulk gets its own server because iperf3 opens a control and a data connection that must reach the
  same server process, which a per-connection weighted pick would split;
- HTTPS on `ports.https` (when given a certificate): TLS terminated with `tls.mode: SIMPLE` and the
  certificate/key file paths, then the same HTTP 50/50 route as the HTTP server.
Backends are ServiceEntries with STATIC resolution and one 127.0.0.1 endpoint per version, labelled
`version`, exactly how a user describes local services without Kubernetes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

HTTP_HOST = "http-backend.bench.local"
TCP_HOST = "tcp-echo.bench.local"
BULK_HOST = "bulk.bench.local"
HTTP_WEIGHTS = (50, 50)  # v1/v2
TCP_WEIGHTS = (80, 20)


@dataclass(frozen=True, slots=True)
class ListenerPorts:
    http: int
    tcp: int
    bulk: int
    https: int = 0  # 0: no HTTPS server


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """One server identity every proxy presents: PEM certificate chain, its key, and both in one file
    (HAProxy's `crt`)."""

    cert: str
    key: str
    combined: str


@dataclass(frozen=True, slots=True)
class BackendPorts:
    http_v1: int
    http_v2: int
    tcp_v1: int
    tcp_v2: int
    bulk: int


# the `shiftproxy-resilience` column: what the HTTP route and its clusters get on top of the weights
RESILIENCE_RETRIES = """\
    retries: {attempts: 2, retryOn: "5xx,reset", perTryTimeout: 10s}
"""
RESILIENCE_POLICY = """\
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
    loadBalancer: {consistentHash: {useSourceIp: true}}
"""


def bench_istio_yaml(listeners: ListenerPorts, backends: BackendPorts,
                     http_weights: tuple[int, int] = HTTP_WEIGHTS, tcp_weights: tuple[int, int] = TCP_WEIGHTS,
                     resilience: bool = False, tls: TlsFiles | None = None) -> str:
    """`resilience`: retries on the HTTP route, outlier detection and consistent hashing (by source IP) on the
    HTTP backend's subsets. `tls` with `listeners.https`: an HTTPS server terminating with that identity."""
    retries = RESILIENCE_RETRIES if resilience else ""
    https = ""
    if tls is not None and listeners.https:
        https = (f"  - port: {{number: {listeners.https}, name: https, protocol: HTTPS}}\n"
                 f"    hosts: [\"*\"]\n"
                 f"    tls: {{mode: SIMPLE, serverCertificate: {tls.cert}, privateKey: {tls.key}}}\n")
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {{number: {listeners.http}, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: {listeners.tcp}, name: tcp, protocol: TCP}}
    hosts: ["*"]
  - port: {{number: {listeners.bulk}, name: tcp-bulk, protocol: TCP}}
    hosts: ["*"]
{https}---
{service_entry("http-backend", HTTP_HOST, 80, "http", "HTTP",
                [("v1", backends.http_v1), ("v2", backends.http_v2)])}
---
{service_entry("tcp-echo", TCP_HOST, 9000, "tcp", "TCP", [("v1", backends.tcp_v1), ("v2", backends.tcp_v2)])}
---
{service_entry("bulk", BULK_HOST, 5201, "tcp", "TCP", [("v1", backends.bulk)])}
---
{_destination_rule("http-backend", HTTP_HOST, RESILIENCE_POLICY if resilience else "")}
---
{_destination_rule("tcp-echo", TCP_HOST)}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench
spec:
  hosts: ["*"]
  gateways: [bench-gateway]
  http:
  - route:
    - destination: {{host: {HTTP_HOST}, subset: v1, port: {{number: 80}}}}
      weight: {http_weights[0]}
    - destination: {{host: {HTTP_HOST}, subset: v2, port: {{number: 80}}}}
      weight: {http_weights[1]}
{retries}  tcp:
  - match:
    - port: {listeners.tcp}
    route:
    - destination: {{host: {TCP_HOST}, subset: v1, port: {{number: 9000}}}}
      weight: {tcp_weights[0]}
    - destination: {{host: {TCP_HOST}, subset: v2, port: {{number: 9000}}}}
      weight: {tcp_weights[1]}
  - match:
    - port: {listeners.bulk}
    route:
    - destination: {{host: {BULK_HOST}, port: {{number: 5201}}}}
"""


def service_entry(name: str, host: str, port: int, port_name: str, protocol: str,
                  endpoints: Iterable[tuple[str, int]]) -> str:
    """A STATIC ServiceEntry with one 127.0.0.1 endpoint per (version label, port)."""
    lines = "\n".join(
        f"  - {{address: 127.0.0.1, ports: {{{port_name}: {target}}}, labels: {{version: {version}}}}}"
        for version, target in endpoints)
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: {port}, name: {port_name}, protocol: {protocol}}}
  endpoints:
{lines}"""


def _destination_rule(name: str, host: str, policy: str = "") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
spec:
  host: {host}
{policy}  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}"""
