"""Gateway API validation: every error at once, each as FILE:LINE: YAML.PATH: reason; references that do not
resolve are warnings; conflicts with Istio objects are errors; GRPCRoute is refused."""

from __future__ import annotations

import pytest

from proxy.config.load import load_paths, load_text
from proxy.config.validate import validate
from tests.gatewayapi.support import BACKENDS, GATEWAY, check, load
from tests.paths import SAMPLES

BAD_ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches:
    - path: {type: Exact, value: no-slash}
    - path: {type: PathPrefix, value: /a//b}
    - path: {type: RegularExpression, value: '(?<=x)y'}
    - method: FETCH
    - headers: [{name: x-a, value: one}, {name: X-A, value: two}]
    backendRefs:
    - {name: a, port: 9080, weight: 1000001}
    - {name: b, weight: -1}
    - {name: c, port: 9080, wieght: 3}
    timeouts: {request: 10s, backendRequest: 1m}
  - filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 304}
    - type: URLRewrite
      urlRewrite: {hostname: example.com}
    backendRefs: [{name: a, port: 9080}]
"""


def test_every_error_with_file_line_and_path() -> None:
    errors, _ = check(GATEWAY, BACKENDS, BAD_ROUTE)
    got = [str(e) for e in errors if e.file.endswith("2-config.yaml")]
    assert got == [
        "2-config.yaml:8: spec.rules[0].matches[0].path.value: path 'no-slash' must start with '/'",
        "2-config.yaml:9: spec.rules[0].matches[1].path.value: path '/a//b' must not contain '//', '/./', "
        "'/../', '%2f', '#' or end with '/..' or '/.'",
        "2-config.yaml:10: spec.rules[0].matches[2].path.value: invalid regular expression '(?<=x)y': "
        "invalid perl operator: (?<= (lookaround is not supported by RE2)",
        "2-config.yaml:11: spec.rules[0].matches[3].method: method 'FETCH' is not one of GET, HEAD, POST, PUT, "
        "DELETE, CONNECT, OPTIONS, TRACE, PATCH",
        "2-config.yaml:12: spec.rules[0].matches[4].headers[1].name: 'X-A' is matched twice in this match",
        "2-config.yaml:14: spec.rules[0].backendRefs[0].weight: weight 1000001 is out of range 0..1,000,000",
        "2-config.yaml:15: spec.rules[0].backendRefs[1].port: port is required when the backend is a Service",
        "2-config.yaml:15: spec.rules[0].backendRefs[1].weight: weight -1 is out of range 0..1,000,000",
        '2-config.yaml:16: spec.rules[0].backendRefs[2].wieght: unknown field "wieght" (did you mean "weight"?)',
        "2-config.yaml:17: spec.rules[0].timeouts.backendRequest: backendRequest must not be longer than request",
        "2-config.yaml:18: spec.rules[1].filters: RequestRedirect and URLRewrite cannot be used together",
        "2-config.yaml:20: spec.rules[1].filters[0].requestRedirect.statusCode: statusCode 304 is not one of 301, "
        "302, 303, 307, 308",
        "2-config.yaml:23: spec.rules[1].backendRefs: a rule with a RequestRedirect filter may not have "
        "backendRefs",
    ]


def test_weights_at_the_limits_are_valid() -> None:
    route = BAD_ROUTE.split("  - filters:")[0].replace("weight: 1000001", "weight: 1000000")
    route = route.replace("{name: b, weight: -1}", "{name: b, port: 9080, weight: 0}").replace("wieght", "weight")
    for bad in ("no-slash", "/a//b", "'(?<=x)y'", "FETCH"):
        route = route.replace(bad, {"FETCH": "GET", "'(?<=x)y'": "'/x.*'"}.get(bad, "/ok"))
    route = route.replace("X-A", "x-b").replace("backendRequest: 1m", "backendRequest: 5s")
    errors, _ = check(GATEWAY, BACKENDS, route)
    assert [str(e) for e in errors] == []


GATEWAY_ERRORS = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g}
spec:
  listeners:
  - {name: a, port: 80, protocol: HTTP}
  - {name: a, port: 0, protocol: QUIC}
  - {name: t, port: 9000, protocol: TCP, hostname: example.com}
  - {name: s, port: 443, protocol: HTTPS}
"""


def test_gateway_errors() -> None:
    errors, _ = check(GATEWAY_ERRORS)
    assert [str(e) for e in errors] == [
        "config.yaml:4: spec.gatewayClassName: gatewayClassName is required",
        "config.yaml:7: spec.listeners[1].name: listener name 'a' is already used by listeners[0]",
        "config.yaml:7: spec.listeners[1].port: port 0 is out of range 1..65,535",
        "config.yaml:7: spec.listeners[1].protocol: protocol 'QUIC' is not one of HTTP, HTTPS, TLS, TCP, UDP",
        "config.yaml:8: spec.listeners[2].hostname: hostname must not be set on a TCP listener",
        "config.yaml:9: spec.listeners[3].tls: an HTTPS listener needs tls (certificateRefs)",
    ]


def test_grpc_route_is_refused_with_a_reason() -> None:
    loaded = load_text("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g}\n", "g.yaml")
    assert [str(e) for e in loaded.errors] == [
        "g.yaml:2: kind: GRPCRoute is not supported: this proxy speaks HTTP/1.1 only (no HTTP/2, so no gRPC); "
        "route gRPC-Web or HTTP/1.1 traffic with an HTTPRoute"]


def test_unsupported_version_is_an_error() -> None:
    loaded = load_text("apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {name: t}\n", "t.yaml")
    assert [str(e) for e in loaded.errors] == [
        "t.yaml:1: apiVersion: unsupported version 'v1' (expected one of v1alpha2)"]


def test_istio_gateway_and_gateway_api_gateway_of_one_name_coexist() -> None:
    istio = load_paths([str(SAMPLES / "bookinfo" / "networking" / "bookinfo-gateway.yaml"),
                        str(SAMPLES / "bookinfo" / "gateway-api" / "bookinfo-gateway.yaml")])
    assert istio.errors == []
    assert sorted(o.kind for o in istio.objects if o.name == "bookinfo-gateway") == [
        "Gateway", "Gateway.gateway.networking.k8s.io"]


MESH_ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a-route}
spec:
  parentRefs: [{kind: Service, group: "", name: a, port: 9080}]
  rules: [{backendRefs: [{name: b, port: 9080}]}]
"""
ISTIO_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-vs}
spec:
  hosts: [a]
  http: [{route: [{destination: {host: c}}]}]
"""


def test_an_istio_and_a_gateway_api_route_for_one_mesh_service_conflict() -> None:
    errors, _ = check(BACKENDS, MESH_ROUTE, ISTIO_VS)
    assert [str(e) for e in errors] == [
        "1-config.yaml:5: spec.parentRefs[0]: service a.default.svc.cluster.local is also routed by VirtualService "
        "default/a-vs (2-config.yaml:1): an Istio and a Gateway API route for one mesh service conflict; delete "
        "one of them"]
    assert check(BACKENDS, MESH_ROUTE)[0] == []


SERVICE_A = """apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  selector: {app: a}
  ports: [{port: 9080, name: http}]
"""


@pytest.mark.parametrize(("texts", "expected"), [
    ((BACKENDS, SERVICE_A), "1-config.yaml:3: metadata.name: ServiceEntry default/a (0-config.yaml:2) also "
                            "defines host a.default.svc.cluster.local; its endpoints are used"),
    ((SERVICE_A.replace("app: a", "app: nobody"),), "config.yaml:5: spec.selector: selector app=nobody picks no "
     "WorkloadEntry or ServiceEntry endpoint in namespace default: requests to a get 503 UH"),
    ((GATEWAY, BACKENDS, MESH_ROUTE.replace("name: b,", "name: gone,")),
     "2-config.yaml:6: spec.rules[0].backendRefs[0]: BackendNotFound: backend(gone.default.svc.cluster.local) "
     "not found; its share of requests gets 500"),
    ((BACKENDS, MESH_ROUTE.replace("{kind: Service, group: \"\", name: a, port: 9080}", "{name: missing-gw}")),
     "1-config.yaml:5: spec.parentRefs[0]: not accepted (NoMatchingParent): gateway default/missing-gw not found"),
    ((BACKENDS, MESH_ROUTE.replace("name: b, port: 9080", "name: b, port: 9080, namespace: other")),
     "1-config.yaml:6: spec.rules[0].backendRefs[0]: RefNotPermitted: backendRef to Service other/b not "
     "permitted by any ReferenceGrant; its share of requests gets 500"),
])
def test_warnings_for_what_does_not_resolve(texts: tuple[str, ...], expected: str) -> None:
    errors, warnings = check(*texts)
    assert [str(e) for e in errors] == []
    assert expected in [str(w) for w in warnings]


def test_reference_grant_permits_a_cross_namespace_backend() -> None:
    other = BACKENDS.replace("metadata: {name: b}", "metadata: {name: b, namespace: other}")
    route = MESH_ROUTE.replace("name: b, port: 9080", "name: b, port: 9080, namespace: other")
    grant = """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service}]
"""
    _, warnings = check(other, route, grant)
    assert [str(w) for w in warnings if "RefNotPermitted" in w.reason] == []
    _, warnings = check(other, route, grant.replace("namespace: default", "namespace: elsewhere"))
    assert [w.reason for w in warnings if "RefNotPermitted" in w.reason] != []


def test_gateway_api_samples_validate_together() -> None:
    loaded = load(*(p.read_text() for p in sorted((SAMPLES / "bookinfo" / "gateway-api").glob("*.yaml"))
                    if p.name in ("bookinfo-gateway.yaml", "route-reviews-50-v3.yaml")),
                  (SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo-versions.yaml").read_text())
    errors, _ = validate(loaded.objects)
    assert [str(e) for e in errors] == []


def test_a_second_tcp_route_on_one_listener_is_reported() -> None:
    gateway = GATEWAY.replace("{name: http, port: 8080, protocol: HTTP}", "{name: tcp, port: 9400, protocol: TCP}")
    tcp = """apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: NAME, creationTimestamp: 'STAMP'}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: a, port: 9080}]}]
"""
    _, warnings = check(gateway, BACKENDS, tcp.replace("NAME", "newer").replace("STAMP", "2024-02-01T00:00:00Z"),
                        tcp.replace("NAME", "older").replace("STAMP", "2024-01-01T00:00:00Z"))
    assert [str(w) for w in warnings] == [
        "2-config.yaml:5: spec.parentRefs[0]: listener 'tcp' already serves TCPRoute default/older (older): only "
        "that one gets its connections"]
