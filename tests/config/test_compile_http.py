"""Compiling consistent hash, mirrors, CORS, source matches, redirects and `%VAR%` header values."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.compile_http import hash_policy, mirrors
from proxy.config.load import load_text
from proxy.routing.formatters import Format
from proxy.routing.snapshot import HashPolicy, HttpRoute, Mirror, Redirect, Snapshot
from tests import registry

SERVICES = registry.REVIEWS_SE + "---" + registry.http_service_entry("productpage", {"v1": 9080})
DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, path: /, ttl: 0s}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: X-User, maglev: {tableSize: 1009}}}}
"""


def compile_yaml(text: str, **options: Any) -> Snapshot:
    objects = load_text(SERVICES + "---" + text, "test.yaml").objects
    return compile_snapshot(objects, CompileOptions(**options))


def mesh_routes(snap: Snapshot, host: str = "reviews") -> tuple[HttpRoute, ...]:
    vh = snap.http_listeners["mesh_http"].route_table.find(host)
    assert vh is not None
    return vh.routes


@pytest.mark.parametrize(("spec", "expected"), [
    ({"simple": "ROUND_ROBIN"}, None),
    ({"consistentHash": {"useSourceIp": True}}, HashPolicy(source_ip=True, table="ring", table_size=1024)),
    ({"consistentHash": {"httpQueryParameterName": "id", "ringHash": {"minimumRingSize": 4096}}},
     HashPolicy(query_parameter="id", table_size=4096)),
    ({"consistentHash": {"httpHeaderName": "x-u", "minimumRingSize": 2048}}, HashPolicy(header="x-u", table_size=2048)),
    ({"consistentHash": {"httpHeaderName": "x-u", "maglev": {}}}, HashPolicy(header="x-u", table="maglev",
                                                                             table_size=65537)),
    ({"consistentHash": {"httpCookie": {"name": "c", "ttl": "10s"}}}, HashPolicy(cookie="c", cookie_ttl=10.0)),
    ({"consistentHash": {"httpCookie": {"name": "c"}}}, HashPolicy(cookie="c", cookie_ttl=None)),
    ({"consistentHash": {"httpCookie": {"name": "c", "ttl": "0s", "attributes": [{"name": "SameSite", "value": "Lax"},
                                                                               {"name": "Secure"}]}}},
     HashPolicy(cookie="c", cookie_ttl=0.0, cookie_attributes=(("SameSite", "Lax"), ("Secure", "")))),
])
def test_hash_policy(spec: dict[str, Any], expected: HashPolicy | None) -> None:
    assert hash_policy(spec) == expected


def test_clusters_get_the_hash_policy_of_their_subset() -> None:
    snap = compile_yaml(DR)
    all_ = snap.clusters["outbound|9080||reviews.default.svc.cluster.local"]
    v1 = snap.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
    v2 = snap.clusters["outbound|9080|v2|reviews.default.svc.cluster.local"]
    assert all_.hash_policy == v1.hash_policy == HashPolicy(cookie="user", cookie_path="/", cookie_ttl=0.0)
    assert v2.hash_policy == HashPolicy(header="x-user", table="maglev", table_size=1009)
    assert all_.lb_policy == "RANDOM"  # for a request without the key, as Envoy's ring hash
    assert not snap.notices


@pytest.mark.parametrize(("simple", "notice"), [("LEAST_CONN", False), ("UNSPECIFIED", False),
                                                ("PASSTHROUGH", True)])
def test_simple_balancers(simple: str, notice: bool) -> None:
    snap = compile_yaml(f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec: {{host: reviews, trafficPolicy: {{loadBalancer: {{simple: {simple}}}}}}}
""")
    assert snap.clusters["outbound|9080||reviews.default.svc.cluster.local"].lb_policy == "LEAST_REQUEST"
    assert any("PASSTHROUGH" in n and "run --capture" in n for n in snap.notices) is notice


def resolve(destination: dict[str, Any]) -> tuple[str, None]:
    return f"to {destination['host']}", None


@pytest.mark.parametrize(("rule", "expected"), [
    ({"mirror": {"host": "a"}}, [("to a", 100.0)]),
    ({"mirror": {"host": "a"}, "mirrorPercentage": {"value": 12.5}}, [("to a", 12.5)]),
    ({"mirror": {"host": "a"}, "mirrorPercentage": {"value": 0}}, []),  # an explicit 0 mirrors nothing
    ({"mirror": {"host": "a"}, "mirrorPercent": 30}, [("to a", 30.0)]),
    ({"mirror": {"host": "a"}, "mirrorPercent": 0}, []),
    ({"mirrors": [{"destination": {"host": "a"}}, {"destination": {"host": "b"}, "percentage": {"value": 5}},
                  {"destination": {"host": "c"}, "percentage": {"value": 0}}]}, [("to a", 100.0), ("to b", 5.0)]),
    ({}, []),
])
def test_mirror_percentages_as_istiod(rule: dict[str, Any], expected: list[tuple[str, float]]) -> None:
    assert [(m.cluster_name, m.percent) for m in mirrors(rule, resolve)] == expected


def test_mirror_destinations_are_clusters_and_nothing_is_reported() -> None:
    snap = compile_yaml(DR + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 50}
    corsPolicy: {allowOrigins: [{exact: "https://a"}], allowMethods: [GET], maxAge: 1m}
""")
    route = mesh_routes(snap)[0]
    v2 = snap.clusters["outbound|9080|v2|reviews.default.svc.cluster.local"]
    assert route.mirrors == (Mirror(v2.name, v2, 50.0),)
    assert route.cors is not None and route.cors.max_age == "60" and route.cors.allow_methods == "GET"
    assert not [n for n in snap.notices if "not enforced" in n]


SOURCE_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: productpage, version: v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{sourceNamespace: canary}]
    route: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"""


@pytest.mark.parametrize(("labels", "namespace", "first_subset"), [
    ({"app": "productpage", "version": "v2", "extra": "x"}, "default", "v2"),  # a superset matches
    ({"app": "productpage", "version": "v1"}, "default", "v1"),  # both conditional rules dropped
    ({"app": "productpage"}, "canary", "v3"),
])
def test_source_labels_and_namespace_select_rules_for_this_proxy(labels: dict[str, str], namespace: str,
                                                                 first_subset: str) -> None:
    snap = compile_yaml(SOURCE_VS, gateway_labels=labels, namespace=namespace)
    routes = mesh_routes(snap)
    first = routes[0].action
    assert not isinstance(first, Redirect) and first.destinations[0].cluster_name.split("|")[2] == first_subset
    assert routes[0].matches == ()  # a kept rule matches every request of this proxy: the condition is static


def test_redirect_prefix_rewrite_and_derive_port() -> None:
    snap = compile_yaml("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {prefixRewrite: /new, authority: example.com, derivePort: FROM_REQUEST_PORT}
""")
    action = mesh_routes(snap)[0].action
    assert action == Redirect(prefix_rewrite="/new", authority="example.com", derive_port="FROM_REQUEST_PORT")


def test_header_values_with_operators_are_parsed_at_compile_time() -> None:
    snap = compile_yaml("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - headers:
      request: {set: {x-client: "%DOWNSTREAM_REMOTE_ADDRESS%", x-plain: plain, x-bad: "%NOPE%"}}
    route:
    - destination: {host: reviews}
      headers: {response: {add: {x-pct: "100%"}}}
""")
    route = mesh_routes(snap)[0]
    ops = route.request_headers
    assert ops is not None
    assert ops.set == (("x-plain", "plain"), ("x-bad", "%NOPE%"))
    assert [(n, type(f)) for n, f in ops.set_formats] == [("x-client", Format)]
    notices = [n for n in snap.notices if "headers" in n]
    assert len(notices) == 2, snap.notices
    assert any("spec.http[0].headers.request.set.x-bad: unknown operator %NOPE%" in n for n in notices)
    assert any("spec.http[0].route[0].headers.response.add.x-pct" in n for n in notices)


TCP_VS = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {tcp: 19001}, labels: {app: tcp-echo, version: v1}}
  - {address: 127.0.0.1, ports: {tcp: 19002}, labels: {app: tcp-echo, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo}
spec:
  host: tcp-echo
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo]
  tcp:
  - match: [{sourceLabels: {app: canary-client}}]
    route: [{destination: {host: tcp-echo, subset: v2}}]
  - route: [{destination: {host: tcp-echo, subset: v1}}]
"""


@pytest.mark.parametrize(("labels", "subset"), [({"app": "canary-client"}, "v2"), ({"app": "other"}, "v1")])
def test_tcp_source_labels(labels: dict[str, str], subset: str) -> None:
    snap = compile_yaml(TCP_VS, gateway_labels=labels)
    route = snap.tcp_listeners["mesh_tcp_9000"].route("127.0.0.1")
    assert route is not None and route.destinations.destinations[0].cluster_name.split("|")[2] == subset


def test_explain_shows_mirrors_cors_and_the_hash_key() -> None:
    from proxy.routing.explain import explain_http

    snap = compile_yaml(DR + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{authority: {exact: "reviews:9080"}}]
    route: [{destination: {host: reviews, subset: v2}}]
    mirrors: [{destination: {host: productpage}, percentage: {value: 10}}]
    corsPolicy: {allowOrigins: [{prefix: "https://"}], unmatchedPreflights: IGNORE}
""")
    listener = snap.http_listeners["mesh_http"]
    assert explain_http(snap, listener, "reviews")["result"]["status"] == 404  # no port: the exact match fails
    out = explain_http(snap, listener, "reviews:9080")
    action = out["route"]
    assert action["mirrors"] == [{"cluster": "outbound|9080||productpage.default.svc.cluster.local", "percent": 10.0}]
    assert action["cors"] == {"allow_origins": ["prefix 'https://'"], "unmatched_preflights": "IGNORE"}
    assert action["destinations"][0]["lb_policy"] == "MAGLEV"
    assert action["destinations"][0]["hash_key"] == "header x-user"
