"""`explain` on compiled snapshots: the listener, rule and destinations a request would get, and why."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from proxy.admin.handlers import explain_request
from proxy.admin.server import AdminRequest
from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.load import load_paths, load_text
from proxy.routing.explain import (
    ExplainError,
    explain_http,
    explain_http_everywhere,
    explain_tcp,
    find_listener,
    routes,
)
from proxy.routing.path_normalization import PathNormalization
from proxy.routing.snapshot import HttpListener, Snapshot, TcpListener, WeightedDestinations
from tests.paths import BOOKINFO_NET, TCP_ECHO
from tests.registry import REVIEWS_SE

TCP_ECHO_CONFIG = """
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
kind: Gateway
metadata: {name: tcp-echo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 31400, name: tcp, protocol: TCP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo-destination}
spec:
  host: tcp-echo
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def snapshot(*files: str, extra: str = REVIEWS_SE, **options: object) -> Snapshot:
    loaded = load_paths([str(f) for f in files])
    assert not loaded.errors
    objects = loaded.objects + load_text(extra, "extra.yaml").objects
    return compile_snapshot(objects, CompileOptions(**options))  # type: ignore[arg-type]


def mesh(snap: Snapshot) -> HttpListener:
    listener = find_listener(snap)
    assert isinstance(listener, HttpListener)
    return listener


def versions(destination: dict) -> list[str]:
    return [e["version"] for e in destination["endpoints"]]


def test_fifty_fifty_gives_each_subset_half_with_its_endpoints() -> None:
    snap = snapshot(BOOKINFO_NET / "destination-rule-all.yaml",
                    BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml")
    answer = explain_http(snap, mesh(snap), "reviews:9080", "/reviews/0")
    assert answer["listener"]["name"] == "mesh_http"
    assert answer["virtual_host"]["virtual_service"] == "default/reviews"
    dests = answer["route"]["destinations"]
    assert [(d["subset"], d["probability"], d["weight"]) for d in dests] == [("v1", 0.5, 50), ("v3", 0.5, 50)]
    assert [versions(d) for d in dests] == [["v1"], ["v3"]]
    assert [e["port"] for d in dests for e in d["endpoints"]] == [9091, 9093]
    assert [r["matched"] for r in answer["rules"]] == [True]


@pytest.mark.parametrize("sample", ["virtual-service-reviews-50-v3.yaml",
                                    "virtual-service-reviews-80-20.yaml",
                                    "virtual-service-reviews-90-10.yaml",
                                    "virtual-service-reviews-v2-v3.yaml"])
def test_probabilities_are_the_share_of_random_values_the_data_plane_picks(sample: str) -> None:
    snap = snapshot(BOOKINFO_NET / "destination-rule-all.yaml", BOOKINFO_NET / sample)
    answer = explain_http(snap, mesh(snap), "reviews:9080")
    vh = mesh(snap).route_table.find("reviews:9080")
    assert vh is not None
    action = vh.routes[0].action
    assert isinstance(action, WeightedDestinations)
    total = action.cumulative[-1]
    # every random value in one period of `random % total`: the exact share each destination gets
    picked = Counter(action.pick(r).cluster_name for r in range(total))
    assert {d["cluster"]: d["probability"] for d in answer["route"]["destinations"]} == {
        name: n / total for name, n in picked.items()}


def test_header_rule_explains_why_it_did_not_match() -> None:
    snap = snapshot(BOOKINFO_NET / "destination-rule-all.yaml",
                    BOOKINFO_NET / "virtual-service-reviews-test-v2.yaml")
    jason = explain_http(snap, mesh(snap), "reviews", headers={"End-User": "jason"})
    assert [r["matched"] for r in jason["rules"]] == [True]
    assert versions(jason["route"]["destinations"][0]) == ["v2"]

    alice = explain_http(snap, mesh(snap), "reviews", headers={"end-user": "alice"})
    first, second = alice["rules"]
    assert first["matched"] is False
    assert first["reasons"] == ["match[0]: header end-user ('alice') is not exact 'jason'"]
    assert second["matched"] is True and second["why"] == "the rule has no match conditions"
    assert versions(alice["route"]["destinations"][0]) == ["v1"]

    anonymous = explain_http(snap, mesh(snap), "reviews")
    assert anonymous["rules"][0]["reasons"] == ["match[0]: header end-user (None) is not exact 'jason'"]


def test_service_without_virtual_service_reaches_every_version() -> None:
    snap = snapshot(BOOKINFO_NET / "destination-rule-all.yaml")
    answer = explain_http(snap, mesh(snap), "reviews.default.svc.cluster.local:9080")
    assert answer["virtual_host"]["virtual_service"] is None
    (dest,) = answer["route"]["destinations"]
    assert dest["probability"] == 1.0 and dest["subset"] is None
    assert sorted(versions(dest)) == ["v1", "v2", "v3"]


def test_unknown_host_is_404_nr_and_lists_what_is_known() -> None:
    snap = snapshot(BOOKINFO_NET / "virtual-service-reviews-v3.yaml")
    answer = explain_http(snap, mesh(snap), "ratings:9080")
    assert answer["virtual_host"] is None
    assert (answer["result"]["status"], answer["result"]["flags"]) == (404, "NR")
    assert "reviews" in answer["result"]["known_hosts"]


def test_no_matching_rule_is_404_nr_with_every_reason() -> None:
    vs = REVIEWS_SE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}}, {method: {exact: POST}}]
    route: [{destination: {host: reviews}}]
"""
    snap = snapshot(extra=vs)
    answer = explain_http(snap, mesh(snap), "reviews", "/reviews/0")
    assert answer["route"] is None and answer["result"]["status"] == 404
    assert answer["rules"][0]["reasons"] == ["match[0]: uri '/reviews/0' is not prefix '/api'",
                                             "match[1]: method GET is not exact 'POST'"]


def test_undefined_subset_says_503_nc() -> None:
    snap = snapshot(BOOKINFO_NET / "virtual-service-reviews-v3.yaml")  # no DestinationRule
    (dest,) = explain_http(snap, mesh(snap), "reviews")["route"]["destinations"]
    assert dest["endpoints"] == [] and "503 NC" in dest["problem"]


def test_subset_without_endpoints_says_503_uh() -> None:
    dr = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v9, labels: {version: v9}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v9}}]}]
"""
    snap = snapshot(extra=REVIEWS_SE + dr)
    (dest,) = explain_http(snap, mesh(snap), "reviews")["route"]["destinations"]
    assert dest["endpoints"] == [] and "503 UH" in dest["problem"]


def test_gateway_listener_by_port_uses_the_listener_port() -> None:
    snap = snapshot(BOOKINFO_NET / "bookinfo-gateway.yaml", bind="127.0.0.1", mesh=False)
    listener = find_listener(snap, port=8080)
    assert isinstance(listener, HttpListener) and listener.role == "gateway"
    hit = explain_http(snap, listener, "bookinfo.example", "/productpage")
    assert hit["request"]["port"] == 8080
    assert hit["route"]["destinations"][0]["host"] == "productpage.default.svc.cluster.local"
    miss = explain_http(snap, listener, "bookinfo.example", "/admin")
    assert miss["result"]["status"] == 404


def test_tcp_twenty_percent_to_v2() -> None:
    snap = snapshot(TCP_ECHO / "tcp-echo-20-v2.yaml", extra=TCP_ECHO_CONFIG, mesh=False)
    listener = find_listener(snap, port=31400)
    assert isinstance(listener, TcpListener)
    answer = explain_tcp(snap, listener)
    dests = answer["route"]["destinations"]
    assert [(d["subset"], d["probability"]) for d in dests] == [("v1", 0.8), ("v2", 0.2)]
    assert [versions(d) for d in dests] == [["v1"], ["v2"]]


def test_listener_lookup_errors_name_the_listeners() -> None:
    snap = snapshot(TCP_ECHO / "tcp-echo-20-v2.yaml", extra=TCP_ECHO_CONFIG, mesh=False)
    with pytest.raises(ExplainError, match=r"no listener on port 1234; listeners: gateway_tcp_31400"):
        find_listener(snap, port=1234)
    with pytest.raises(ExplainError, match="no listener named 'nope'"):
        find_listener(snap, name="nope")
    with pytest.raises(ExplainError, match="say which listener"):
        find_listener(snap)


def test_one_proxy_with_both_roles_answers_from_the_listener_that_routes_it() -> None:
    snap = snapshot(BOOKINFO_NET / "bookinfo-gateway.yaml", BOOKINFO_NET / "destination-rule-all.yaml",
                    BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml", bind="127.0.0.1")
    answer = explain_http_everywhere(snap, None, "reviews:9080", "/reviews/0")
    assert answer["listener"]["name"] == "mesh_http" and routes(answer)
    assert [(o["listener"]["name"], o["routes"], o["summary"]) for o in answer["other_listeners"]] == [
        ("gateway_http_8080", False, "404 NR: no rule of default/bookinfo matches this request")]
    # the gateway's path: the gateway routes it, the sidecar does not know the host
    answer = explain_http_everywhere(snap, None, "bookinfo.example", "/productpage")
    assert answer["listener"]["name"] == "gateway_http_8080" and routes(answer)
    (other,) = answer["other_listeners"]
    assert other["listener"]["name"] == "mesh_http" and not other["routes"]
    assert other["summary"].startswith("404 NR: no VirtualService or service on listener mesh_http serves")
    # a named listener is explained even when it does not route; the 404 answer names the one that does
    gateway = find_listener(snap, port=8080)
    assert isinstance(gateway, HttpListener)
    answer = explain_http_everywhere(snap, gateway, "reviews:9080", "/reviews/0")
    assert answer["result"]["status"] == 404
    assert [(o["listener"]["name"], o["summary"]) for o in answer["other_listeners"]] == [
        ("mesh_http", "routes it (rule default/reviews#0)")]


def test_nothing_routes_it_the_sidecar_says_why() -> None:
    snap = snapshot(BOOKINFO_NET / "bookinfo-gateway.yaml", bind="127.0.0.1")
    answer = explain_http_everywhere(snap, None, "ratingz:9080")
    assert answer["listener"]["name"] == "mesh_http" and answer["result"]["status"] == 404
    assert [o["routes"] for o in answer["other_listeners"]] == [False]
    tcp_only = snapshot(TCP_ECHO / "tcp-echo-20-v2.yaml", extra=TCP_ECHO_CONFIG, mesh=False)
    with pytest.raises(ExplainError, match="no HTTP listener; listeners: gateway_tcp_31400"):
        explain_http_everywhere(tcp_only, None, "reviews")


ADMIN_ONLY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /admin}}]
    directResponse: {status: 403}
  - route: [{destination: {host: reviews}}]
"""


@pytest.mark.parametrize(("path", "mode", "status"), [
    ("/public/../admin/x", PathNormalization.BASE, 403),  # normalized as the listener does: the /admin rule
    ("/%61dmin", PathNormalization.BASE, 403),
    ("/public/../admin/x", PathNormalization.NONE, 200),  # not normalized: the prefix rule does not see /admin
    ("/../admin", PathNormalization.BASE, 400),  # climbs above the root: the listener refuses it
])
def test_explain_normalizes_the_path_as_the_listener_does(path: str, mode: PathNormalization, status: int) -> None:
    snap = snapshot(extra=REVIEWS_SE + "---" + ADMIN_ONLY)
    request = AdminRequest("GET", "/explain", [("authority", "reviews:9080"), ("path", path)], {}, b"")
    answer = explain_request(snap, request, mode)
    body = json.loads(answer.body)
    if status == 400:
        assert answer.status == 400 and "path normalization" in body["error"]
    else:
        assert answer.status == 200
        route = body["route"]
        assert (route.get("direct_response", {}).get("status") or 200) == status, body
