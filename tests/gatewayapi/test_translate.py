"""What the Gateway API objects compile to: Services' endpoints, weights and missing backends, mesh routes,
filters, TCPRoutes, listeners that are accepted but not served, and the status `get` shows."""

from __future__ import annotations

from proxy.gatewayapi.status import statuses
from proxy.l7.router import rewrite_path
from proxy.routing.snapshot import DirectResponse, Redirect, WeightedDestinations
from tests.gatewayapi.support import BACKENDS, GATEWAY, compiled, explain, load, route, winner


def backend_rule(refs: str, extra: str = "") -> str:
    return f"  - backendRefs: {refs}\n{extra}"


def only_route(snapshot, path: str = "/", **kw):  # type: ignore[no-untyped-def]
    """The compiled route a request to `path` takes."""
    index = explain(snapshot, path, **kw)["rules"][-1]["index"]
    vhost = snapshot.http_listeners[kw.get("listener", "gateway_http_8080")].route_table.find(
        kw.get("authority", "example.com"))
    return next(r for r in vhost.routes if r.rule_index == index)


def test_a_missing_backend_keeps_its_share_and_gets_500() -> None:
    snapshot = compiled(GATEWAY, BACKENDS, route("r", backend_rule(
        "[{name: a, port: 9080, weight: 3}, {name: gone, port: 9080, weight: 1}]")))
    r = only_route(snapshot)
    assert r.fault is not None and (r.fault.abort_status, r.fault.abort_percent) == (500, 25.0)
    assert isinstance(r.action, WeightedDestinations)
    assert [d.cluster_name for d in r.action.destinations] == ["outbound|9080||a.default.svc.cluster.local"]


def test_zero_weights() -> None:
    snapshot = compiled(GATEWAY, BACKENDS, route("r", backend_rule(
        "[{name: a, port: 9080, weight: 0}, {name: b, port: 9080, weight: 1000000}]")))
    assert winner(snapshot, "/") == "b"  # weight 0 gets nothing
    snapshot = compiled(GATEWAY, BACKENDS, route("r", backend_rule(
        "[{name: a, port: 9080, weight: 0}, {name: b, port: 9080, weight: 0}]")))
    assert only_route(snapshot).action == DirectResponse(500)  # nothing to send to: 500
    snapshot = compiled(GATEWAY, BACKENDS, route("r", backend_rule("[{name: gone, port: 9080}]")))
    assert only_route(snapshot).action == DirectResponse(500)


def test_relative_weights_are_kept() -> None:
    snapshot = compiled(GATEWAY, BACKENDS, route("r", backend_rule(
        "[{name: a, port: 9080, weight: 1}, {name: b, port: 9080, weight: 999999}]")))
    action = only_route(snapshot).action
    assert isinstance(action, WeightedDestinations)
    assert [(d.weight, round(p, 6)) for d, p in action.shares()] == [(1, 1e-6), (999999, 0.999999)]


SERVICES = """apiVersion: v1
kind: Service
metadata: {name: web-v2}
spec:
  selector: {app: web, version: v2}
  ports:
  - {name: http, port: 8000, targetPort: http-alt}
  - {name: admin, port: 8001, targetPort: 7001}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-v2-a}
spec: {address: 127.0.0.2, labels: {app: web, version: v2}, ports: {http-alt: 7000}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-v1-a}
spec: {address: 127.0.0.3, labels: {app: web, version: v1}, ports: {http-alt: 7000}}
"""


def test_a_service_selects_workload_entries_by_label_and_target_port() -> None:
    snapshot = compiled(SERVICES)
    endpoints = {name: [(e.address, e.port, e.version) for e in c.endpoints]
                 for name, c in snapshot.clusters.items() if "web-v2" in name}
    assert endpoints == {"outbound|8000||web-v2.default.svc.cluster.local": [("127.0.0.2", 7000, "v2")],
                         "outbound|8001||web-v2.default.svc.cluster.local": [("127.0.0.2", 7001, "v2")]}


MESH = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-b}
spec:
  parentRefs: [{kind: Service, group: "", name: a}]
  rules:
  - matches: [{headers: [{name: end-user, value: jason}]}]
    backendRefs: [{name: b, port: 9080}]
  - backendRefs: [{name: c, port: 9080}]
"""


def test_a_mesh_route_serves_its_service_on_the_sidecar() -> None:
    snapshot = compiled(BACKENDS, MESH)
    assert winner(snapshot, "/", {"end-user": "jason"}, authority="a:9080", listener="mesh_http") == "b"
    assert winner(snapshot, "/", authority="a.default.svc.cluster.local", listener="mesh_http") == "c"
    assert winner(snapshot, "/", authority="d:9080", listener="mesh_http") == "d"  # other services: default route
    assert "gateway_http_8080" not in snapshot.http_listeners  # no Gateway: no gateway listener


def test_filters() -> None:
    rules = """  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: new.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-Env, value: canary}], remove: [x-debug]}
    backendRefs: [{name: a, port: 9080}]
  - matches: [{path: {type: Exact, value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: example.org, statusCode: 301}
"""
    snapshot = compiled(GATEWAY, BACKENDS, route("r", rules))
    below = only_route(snapshot, "/old/page")
    assert below.rewrite is not None and below.rewrite.authority == "new.example.com"
    assert rewrite_path(below.rewrite, below.matches[0], b"/old/page?q=1") == b"/new/page?q=1"
    exact = only_route(snapshot, "/old")
    assert rewrite_path(exact.rewrite, exact.matches[0], b"/old") == b"/new"  # type: ignore[arg-type]
    assert below.request_headers is not None and below.request_headers.set == (("x-env", "canary"),)
    assert below.request_headers.remove == ("x-debug",)
    moved = only_route(snapshot, "/moved")
    assert moved.action == Redirect(authority="example.org", scheme="https", code=301)


def test_tcp_route_weights_on_the_gateway_listener() -> None:
    gateway = GATEWAY.replace("{name: http, port: 8080, protocol: HTTP}", "{name: tcp, port: 9400, protocol: TCP}")
    tcp_route = """apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: t}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules: [{backendRefs: [{name: a, port: 9080, weight: 80}, {name: b, port: 9080, weight: 20}]}]
"""
    snapshot = compiled(gateway, BACKENDS, tcp_route)
    routes = snapshot.tcp_listeners["gateway_tcp_9400"].routes
    assert [(d.cluster_name.split("|")[3].split(".")[0], d.weight) for d in routes[0].destinations.destinations] == [
        ("a", 80), ("b", 20)]


def test_https_listener_and_tls_route_are_accepted_but_not_served() -> None:
    gateway = GATEWAY.replace("protocol: HTTP}", """protocol: HTTP}
  - {name: https, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
  - {name: tls, port: 9443, protocol: TLS, tls: {mode: Passthrough}}""")
    tls_route = """apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: tls}
spec:
  parentRefs: [{name: gw, sectionName: tls}]
  rules: [{backendRefs: [{name: a, port: 9080}]}]
"""
    snapshot = compiled(gateway, BACKENDS, tls_route)
    assert sorted(li.port for li in snapshot.http_listeners.values() if li.role == "gateway") == [8080]
    assert not any(li.port in (8443, 9443) for li in snapshot.tcp_listeners.values())
    assert any("listener 'https' (HTTPS) is accepted but not served yet" in n for n in snapshot.notices)
    assert any("TLSRoute default/tls is accepted but not enforced yet" in n for n in snapshot.notices)
    status = statuses(load(gateway, BACKENDS, tls_route).objects)
    listeners = {li["name"]: li for li in status[("Gateway.gateway.networking.k8s.io", "default", "gw")]["listeners"]}
    assert {c["type"]: c["status"] for c in listeners["https"]["conditions"]}["Programmed"] == "False"
    assert listeners["tls"]["attachedRoutes"] == 1
    tls_parent = status[("TLSRoute", "default", "tls")]["parents"][0]["conditions"][0]
    assert tls_parent["message"] == "Route was valid; not enforced yet (no TLS support)"


def test_status_of_routes() -> None:
    other_ns = route("elsewhere", backend_rule("[{name: a, port: 9080}]")).replace(
        "metadata: {name: elsewhere", "metadata: {namespace: team, name: elsewhere").replace(
        "[{name: gw}]", "[{name: gw, namespace: default}]")
    hosts = route("hosts", backend_rule("[{name: a, port: 9080}]"), hostnames="[a.example.com]")
    narrow = GATEWAY.replace("protocol: HTTP}", "protocol: HTTP, hostname: '*.example.org'}")
    objects = load(narrow, BACKENDS, other_ns, hosts, route("ok", backend_rule("[{name: a, port: 9080}, "
                                                                               "{name: gone, port: 9080}]"),
                                                            hostnames="[x.example.org]")).objects
    status = statuses(objects)

    def conditions(ns: str, name: str) -> dict[str, tuple[str, str]]:
        parent = status[("HTTPRoute", ns, name)]["parents"][0]
        return {c["type"]: (c["status"], c["reason"]) for c in parent["conditions"]}

    assert conditions("team", "elsewhere")["Accepted"] == ("False", "NotAllowedByListeners")
    assert conditions("default", "hosts")["Accepted"] == ("False", "NoMatchingListenerHostname")
    assert conditions("default", "ok") == {"Accepted": ("True", "Accepted"),
                                           "ResolvedRefs": ("False", "BackendNotFound")}
    listener = status[("Gateway.gateway.networking.k8s.io", "default", "gw")]["listeners"][0]
    assert listener["attachedRoutes"] == 1


def test_timeouts() -> None:
    rules = backend_rule("[{name: a, port: 9080}]", "    timeouts: {request: 10s, backendRequest: 1500ms}\n")
    assert only_route(compiled(GATEWAY, BACKENDS, route("r", rules))).timeout == 1.5
    rules = backend_rule("[{name: a, port: 9080}]", "    timeouts: {request: 0s}\n")
    assert only_route(compiled(GATEWAY, BACKENDS, route("r", rules))).timeout is None  # 0s disables it


def test_explain_shows_the_missing_backends_share() -> None:
    snapshot = compiled(GATEWAY, BACKENDS, route("r", backend_rule(
        "[{name: a, port: 9080, weight: 3}, {name: gone, port: 9080, weight: 1}]")))
    answer = explain(snapshot, "/")["route"]
    assert (answer["fault"]["abort_status"], answer["fault"]["abort_percent"]) == (500, 25.0)


def test_a_port_bound_by_both_apis_is_reported() -> None:
    istio = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-gw}
spec:
  selector: {gateway.networking.k8s.io/gateway-name: gw}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
    snapshot = compiled(GATEWAY, BACKENDS, istio)
    assert [n for n in snapshot.notices if "port 8080" in n] == [
        "0-config.yaml: port 8080 is bound by Gateway API Gateway default/gw and by Istio Gateway default/istio-gw "
        "(2-config.yaml): both APIs' routes share that listener"]
    assert not [n for n in compiled(GATEWAY, BACKENDS).notices if "port 8080" in n]


def test_a_mesh_parent_section_is_a_port_name() -> None:
    two_ports = BACKENDS.replace("ports: [{number: 9080, name: http, protocol: HTTP}]",
                                 "ports: [{number: 9080, name: http, protocol: HTTP}, "
                                 "{number: 9090, name: http-admin, protocol: HTTP}]", 1)
    mesh = MESH.replace('name: a}]', 'name: a, sectionName: http-admin}]')
    snapshot = compiled(two_ports, mesh)
    assert winner(snapshot, "/", authority="a:9090", listener="mesh_http") == "c"
    # the route is for port 9090 only: port 9080 keeps the default route to every endpoint of a
    assert winner(snapshot, "/", authority="a:9080", listener="mesh_http") == "a"
    status = statuses(load(two_ports, MESH.replace('name: a}]', 'name: a, sectionName: grpc}]')).objects)
    accepted = status[("HTTPRoute", "default", "to-b")]["parents"][0]["conditions"][0]
    assert (accepted["reason"], accepted["message"]) == (
        "NoMatchingParent", "service a.default.svc.cluster.local has no port named 'grpc'")
