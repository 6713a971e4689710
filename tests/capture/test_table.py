"""The capture table compiled from ServiceEntries: original destination → service port → protocol → routes."""

from __future__ import annotations

import pytest

from proxy.capture.accept import first_authority, sniff
from proxy.capture.table import BLACKHOLE, PASSTHROUGH, CaptureTable
from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.load import load_paths, load_text
from proxy.routing.snapshot import Snapshot, WeightedDestinations
from tests.paths import BOOKINFO_NET

SERVICES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  addresses: [127.10.0.2]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9091}, labels: {app: reviews, version: v1}}
  - {address: 127.0.0.1, ports: {http: 9093}, labels: {app: reviews, version: v3}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db]
  addresses: [10.9.0.0/24]
  ports:
  - {number: 5432, name: tcp-postgres}
  - {number: 8000, name: web}
  - {number: 9000, name: admin, protocol: TCP}
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.7, labels: {app: db, version: v1}}
  - {address: db.internal, labels: {app: db, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings]
  addresses: [127.10.0.2]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.7, ports: {http: 9095}, labels: {app: ratings, version: v1}}
"""


def compile_capture(extra: str = "", **options: object) -> Snapshot:
    loaded = load_paths([str(BOOKINFO_NET / "destination-rule-all.yaml"),
                         str(BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml")])
    objects = loaded.objects + load_text(SERVICES + extra, "services.yaml").objects
    return compile_snapshot(objects, CompileOptions(capture=True, **options))  # type: ignore[arg-type]


def table(snap: Snapshot) -> CaptureTable:
    assert snap.capture is not None
    return snap.capture


def test_no_table_without_capture() -> None:
    loaded = load_text(SERVICES, "services.yaml")
    assert compile_snapshot(loaded.objects, CompileOptions()).capture is None


@pytest.mark.parametrize(("address", "port", "service", "protocol"), [
    ("127.10.0.2", 9080, "reviews.default.svc.cluster.local", "http"),  # VIP
    ("127.0.0.1", 9080, "reviews.default.svc.cluster.local", "http"),  # endpoint address, service port
    ("10.9.0.77", 5432, "db.default.svc.cluster.local", "tcp"),  # in the CIDR; name prefix tcp-
    ("10.9.0.1", 8000, "db.default.svc.cluster.local", "sniff"),  # no protocol, unknown name prefix
    ("10.9.0.1", 9000, "db.default.svc.cluster.local", "tcp"),  # protocol field
    ("10.0.0.7", 5432, "db.default.svc.cluster.local", "tcp"),  # endpoint address
    ("10.0.0.7", 9080, "ratings.default.svc.cluster.local", "http"),
])
def test_lookup(address: str, port: int, service: str, protocol: str) -> None:
    target = table(compile_capture()).lookup(address, port)
    assert target is not None
    assert (target.service, target.protocol) == (service, protocol)
    assert (target.http is not None) == (protocol != "tcp")
    assert (target.tcp is not None) == (protocol != "http")


@pytest.mark.parametrize(("address", "port"), [("127.10.0.2", 9081), ("10.9.1.1", 5432), ("127.10.0.3", 9080)])
def test_unknown_destinations(address: str, port: int) -> None:
    assert table(compile_capture()).lookup(address, port) is None


def test_a_vip_claimed_twice_keeps_its_first_service_and_says_so() -> None:
    snap = compile_capture()
    assert any("127.10.0.2:9080 belongs to reviews.default.svc.cluster.local; ratings.default.svc.cluster.local"
               in n for n in snap.notices)


def test_unknown_route_follows_the_outbound_policy() -> None:
    allow = table(compile_capture()).unknown_route.destinations.destinations[0]
    assert allow.cluster_name == PASSTHROUGH and allow.cluster is not None and allow.cluster.endpoints == ()
    deny = table(compile_capture(outbound_traffic_policy="REGISTRY_ONLY")).unknown_route
    assert deny.destinations.destinations[0].cluster_name == BLACKHOLE


def test_http_routes_by_host_first_then_by_the_dialled_service() -> None:
    target = table(compile_capture()).lookup("127.10.0.2", 9080)
    assert target is not None and target.http is not None
    routes = target.http.route_table
    by_ip = routes.find("127.10.0.2:9080")  # Host names nothing known: the VIP's service
    assert by_ip is not None and by_ip.routes[0].virtual_service == "default/reviews"
    action = by_ip.routes[0].action
    assert isinstance(action, WeightedDestinations) and action.cumulative == (50, 100)
    other = routes.find("ratings:9080")  # Host names another service: that one, as Istio's per-port listener
    assert other is not None and other.name.startswith("default:ratings")
    assert target.http.match_port(None) == 9080  # a Host without a port still matches port 9080 rules


def test_a_sniffed_port_without_routes_gets_the_default_route() -> None:
    target = table(compile_capture()).lookup("10.9.0.1", 8000)
    assert target is not None and target.http is not None and target.tcp is not None
    vh = target.http.route_table.find("10.9.0.1:8000")
    assert vh is not None and vh.routes[0].action.destinations[0].cluster_name == (  # type: ignore[union-attr]
        "outbound|8000||db.default.svc.cluster.local")
    assert target.tcp.routes[-1].destinations.destinations[0].cluster_name == (
        "outbound|8000||db.default.svc.cluster.local")


@pytest.mark.parametrize(("data", "kind"), [
    (b"GET / HTTP/1.1\r\n", "http"), (b"POST /x HTTP/1.1", "http"), (b"OPTIONS * ", "http"),
    (b"G", None), (b"DELE", None), (b"", None),
    (b"GEX", "tcp"), (b"\x16\x03\x01\x02\x00", "tcp"),  # a TLS ClientHello
    (b"PRI * HTTP/2.0\r\n", "tcp"), (b"hello\n", "tcp"), (b"get / HTTP/1.1", "tcp"),
])
def test_sniff(data: bytes, kind: str | None) -> None:
    assert sniff(data) == kind


def test_http_ports_route_a_known_host_at_any_address() -> None:
    ports = table(compile_capture()).http_ports
    assert set(ports) == {9080}  # the only port some service speaks HTTP on
    routes = ports[9080].route_table
    assert routes.find("reviews:9080") is not None
    assert routes.find("example.com") is None  # unknown host: not HTTP-routed (passthrough or blackhole)


@pytest.mark.parametrize(("head", "authority"), [
    (b"GET / HTTP/1.1\r\nHost: reviews:9080\r\nx: y", b"reviews:9080"),
    (b"GET / HTTP/1.1\r\nuser-agent: c\r\nHOST:  ratings ", b"ratings"),
    (b"GET http://details:9080/x HTTP/1.1\r\nhost: other", b"details:9080"),
    (b"GET / HTTP/1.0\r\naccept: */*", None),
])
def test_first_authority(head: bytes, authority: bytes | None) -> None:
    assert first_authority(head) == authority


@pytest.mark.parametrize(("capture", "policy", "notice"), [
    (True, "PASSTHROUGH", "connections that were not redirected (no original destination) use LEAST_REQUEST"),
    (False, "LEAST_REQUEST", "loadBalancer PASSTHROUGH for reviews.default.svc.cluster.local"
     " needs the original destination (run --capture)"),
])
def test_passthrough_load_balancing_needs_capture(capture: bool, policy: str, notice: str) -> None:
    dr = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-lb}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}
"""
    objects = load_text(SERVICES + "---" + dr, "services.yaml").objects
    snap = compile_snapshot(objects, CompileOptions(capture=capture))
    assert snap.clusters["outbound|9080||reviews.default.svc.cluster.local"].lb_policy == policy
    assert any(notice in n for n in snap.notices)
