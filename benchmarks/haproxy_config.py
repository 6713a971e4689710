"""HAProxy configuration from the same Istio YAML, by way of the Envoy bootstrap `envoy_config` builds.

Each Envoy listener becomes a `frontend` (`mode http` for an `http_connection_manager`, `mode tcp` for a
`tcp_proxy`) with one `backend`. A listener's destinations (its first route's `weighted_clusters`, or
its single `cluster`) become the backend's servers: every endpoint of a destination cluster is a
`server`, weighted by the destination's weight split evenly over the cluster's endpoints.

How that differs from Istio/Envoy (and from shiftproxy):
- `balance random(1)`: one weighted random draw per request (HTTP, per request even on a keep-alive
  connection: `option http-keep-alive` balances each request) or per connection (TCP). HAProxy's plain
  `random` makes two draws and keeps the less loaded server, which would skew the weights under load.
- weights live on servers, not on clusters: a subset is not a unit HAProxy knows. Server weights are
  integers up to 256 and `random` picks a point on a consistent-hash ring (16 points per weight unit), so
  weights are scaled up to 256 and the shares are as exact as that ring is even (about ±1%).
- only the first route of the first virtual host is used (the benchmark routes `/` alone); matches,
  rewrites, timeouts and header operations are not translated.
- TLS termination (a listener with a `DownstreamTlsContext`): `bind ... ssl crt <pem> alpn http/1.1`, where
  `<pem>` holds the certificate chain and its key in one file (HAProxy's form), given per certificate file in
  `pems`; HAProxy's defaults otherwise (TLS 1.2–1.3, session tickets on, as Envoy's and shiftproxy's).
- upstream keep-alive: `http-reuse always` with idle connections kept, as Envoy's connection pool. Header
  names go out lower-cased over HTTP/1.1, as from Envoy and shiftproxy (HAProxy 2.x's internal HTX form;
  `h1-case-adjust` would restore a case).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HTTP_MANAGER = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
MAX_WEIGHT = 256


def _servers(clusters: Mapping[str, Mapping[str, Any]], weighted: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """(address:port, weight) for every endpoint of every weighted cluster."""
    raw: list[tuple[str, int]] = []
    for name, weight in weighted:
        endpoints = [lb["endpoint"]["address"]["socket_address"]
                     for group in clusters[name]["load_assignment"]["endpoints"] for lb in group["lb_endpoints"]]
        for address in endpoints:
            raw.append((f"{address['address']}:{address['port_value']}", max(weight * 1000 // len(endpoints), 1)))
    if not raw:
        return raw
    # `random` draws a point on a consistent-hash ring holding weight × 16 points per server: small
    # weights leave arcs of very unequal length (1:1 came out 42:58), so weights are scaled up to 256
    top = max(w for _, w in raw)
    return [(address, max(1, round(w * MAX_WEIGHT / top))) for address, w in raw]


def _destinations(filter_config: Mapping[str, Any]) -> list[tuple[str, int]]:
    if "weighted_clusters" in filter_config:
        return [(c["name"], int(c["weight"])) for c in filter_config["weighted_clusters"]["clusters"]]
    return [(filter_config["cluster"], 1)]


_HAPROXY_VERSIONS = {"TLSv1_0": "TLSv1.0", "TLSv1_1": "TLSv1.1", "TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}


def _ssl_bind(transport_socket: Mapping[str, Any], pems: Mapping[str, str]) -> str | None:
    """The `ssl ...` options of a `bind` terminating TLS like `transport_socket`; None without a PEM for it."""
    common = transport_socket["typed_config"].get("common_tls_context") or {}
    certificates = common.get("tls_certificates") or []
    chain = certificates[0]["certificate_chain"]["filename"] if certificates else ""
    if chain not in pems:
        return None
    options = [f"ssl crt {pems[chain]}"]
    if common.get("alpn_protocols"):
        options.append("alpn " + ",".join(common["alpn_protocols"]))
    params = common.get("tls_params") or {}
    for key, option in (("tls_minimum_protocol_version", "ssl-min-ver"),
                        ("tls_maximum_protocol_version", "ssl-max-ver")):
        if params.get(key) in _HAPROXY_VERSIONS:
            options.append(f"{option} {_HAPROXY_VERSIONS[params[key]]}")
    return " ".join(options)


def envoy_to_haproxy(bootstrap: Mapping[str, Any], *, pidfile: str, access_log: bool, nofile: int,
                     pems: Mapping[str, str] | None = None) -> str:
    """The haproxy.cfg text for `bootstrap` (the dict `istio_to_envoy(...).bootstrap`). `pems`: certificate
    chain file → a PEM file with that chain and its key, for listeners that terminate TLS."""
    resources = bootstrap["static_resources"]
    clusters = {c["name"]: c for c in resources["clusters"]}
    lines: list[str | None] = [
        "global",
        "  nbthread 1",  # one core, as Envoy --concurrency 1 and nginx with one worker
        f"  pidfile {pidfile}",
        f"  maxconn {max(nofile // 2 - 64, 256)}",  # two sockets per proxied connection, within the fd limit
        "  log stdout format raw local0" if access_log else None,
        "defaults",
        "  timeout connect 10s",
        "  timeout client 300s",
        "  timeout server 300s",
        "  timeout http-keep-alive 300s",
        "  log global" if access_log else None,
        "",
    ]
    for listener in resources["listeners"]:
        address = listener["address"]["socket_address"]
        chain = listener["filter_chains"][0]
        network_filter = chain["filters"][0]
        config = network_filter["typed_config"]
        name = f"l{address['port_value']}"
        ssl = ""
        if "transport_socket" in chain:
            found = _ssl_bind(chain["transport_socket"], pems or {})
            if found is None:
                lines += [f"# {name}: TLS listener left out (no combined PEM for its certificate)", ""]
                continue
            ssl = " " + found
        if network_filter["name"] == HTTP_MANAGER:
            route = config["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
            mode, destinations = "http", _destinations(route)
        elif network_filter["name"] == TCP_PROXY:
            mode, destinations = "tcp", _destinations(config)
        else:
            continue
        lines += [f"frontend {name}", f"  mode {mode}", f"  bind {address['address']}:{address['port_value']}{ssl}",
                  f"  default_backend {name}_backend"]
        if access_log:
            lines.append("  option httplog" if mode == "http" else "  option tcplog")
        lines += [f"backend {name}_backend", f"  mode {mode}", "  balance random(1)"]
        if mode == "http":
            lines += ["  option http-keep-alive", "  http-reuse always"]
        for i, (server, weight) in enumerate(_servers(clusters, destinations)):
            lines.append(f"  server s{i} {server} weight {weight}")
        lines.append("")
    return "\n".join(line for line in lines if line is not None) + "\n"
