"""Compiling the seed's Istio YAML gives the routes, clusters and weights Istio would give."""

from __future__ import annotations

import pytest

from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.load import load_paths, load_text
from proxy.routing.match import RequestView
from proxy.routing.snapshot import Fault, Snapshot, WeightedDestinations
from tests import registry
from tests.paths import BOOKINFO_NET, TCP_ECHO

REVIEWS_SE = registry.REVIEWS_SE + "---" + registry.http_service_entry("productpage", {"v1": 9080})

TCP_SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo]
  ports: [{number: 9000, name: tcp, protocol: TCP}, {number: 9001, name: tcp-other, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {tcp: 19001, tcp-other: 19011}, labels: {app: tcp-echo, version: v1}}
  - {address: 127.0.0.1, ports: {tcp: 19002, tcp-other: 19012}, labels: {app: tcp-echo, version: v2}}
"""


def compile_files(*files: str, extra: str = "", **options: object) -> Snapshot:
    loaded = load_paths([str(f) for f in files])
    assert not loaded.errors
    objects = loaded.objects + (load_text(extra, "extra.yaml").objects if extra else [])
    return compile_snapshot(objects, CompileOptions(**options))  # type: ignore[arg-type]


def mesh_action(snap: Snapshot, authority: str, path: str = "/", headers: dict[str, str] | None = None
                ) -> WeightedDestinations:
    vh = snap.http_listeners["mesh_http"].route_table.find(authority)
    assert vh is not None, authority
    route = vh.route(RequestView("GET", path, {}, authority.split(":")[0], "http", headers or {}, 9080))
    assert route is not None
    assert isinstance(route.action, WeightedDestinations)
    return route.action


def test_reviews_50_v3_gives_v1_v3_cumulative_50_100() -> None:
    snap = compile_files(BOOKINFO_NET / "destination-rule-all.yaml",
                         BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml", extra=REVIEWS_SE)
    action = mesh_action(snap, "reviews:9080")
    assert [d.cluster_name for d in action.destinations] == [
        "outbound|9080|v1|reviews.default.svc.cluster.local",
        "outbound|9080|v3|reviews.default.svc.cluster.local",
    ]
    assert action.cumulative == (50, 100)
    subsets = [d.cluster.subset for d in action.destinations if d.cluster]
    assert subsets == ["v1", "v3"]
    assert [e.port for d in action.destinations if d.cluster for e in d.cluster.endpoints] == [9091, 9093]


@pytest.mark.parametrize("authority", [
    "reviews", "reviews:9080", "reviews.default", "reviews.default:9080", "reviews.default.svc",
    "reviews.default.svc:9080", "reviews.default.svc.cluster.local", "REVIEWS.default.svc.cluster.local:9080",
])
def test_every_alias_of_a_service_matches(authority: str) -> None:
    snap = compile_files(BOOKINFO_NET / "destination-rule-all.yaml",
                         BOOKINFO_NET / "virtual-service-reviews-v3.yaml", extra=REVIEWS_SE)
    action = mesh_action(snap, authority)
    assert [d.cluster_name for d in action.destinations] == ["outbound|9080|v3|reviews.default.svc.cluster.local"]


def test_unknown_authority_has_no_virtual_host() -> None:
    snap = compile_files(BOOKINFO_NET / "virtual-service-reviews-v3.yaml", extra=REVIEWS_SE)
    assert snap.http_listeners["mesh_http"].route_table.find("ratings:9080") is None


def test_tcp_echo_20_v2_is_80_20_on_31400() -> None:
    snap = compile_files(TCP_ECHO / "tcp-echo-all-v1.yaml", extra=TCP_SE, mesh=False)
    assert set(snap.tcp_listeners) == {"gateway_tcp_31400"}
    snap = compile_files(TCP_ECHO / "tcp-echo-20-v2.yaml", extra=TCP_SE + """
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
""", mesh=False)
    listener = snap.tcp_listeners["gateway_tcp_31400"]
    assert listener.port == 31400
    route = listener.route("127.0.0.1")
    assert route is not None
    dests = route.destinations
    assert [(d.cluster_name, d.weight) for d in dests.destinations] == [
        ("outbound|9000|v1|tcp-echo.default.svc.cluster.local", 80),
        ("outbound|9000|v2|tcp-echo.default.svc.cluster.local", 20),
    ]
    assert dests.cumulative == (80, 100)
    assert [e.port for d in dests.destinations if d.cluster for e in d.cluster.endpoints] == [19001, 19002]


def test_all_v1_single_destination_gets_100_percent_whatever_weight() -> None:
    snap = compile_files(BOOKINFO_NET / "destination-rule-all.yaml", BOOKINFO_NET / "virtual-service-all-v1.yaml",
                         extra=REVIEWS_SE)
    action = mesh_action(snap, "reviews")
    assert len(action.destinations) == 1 and action.destinations[0].cluster is not None
    assert action.shares()[0][1] == 1.0


def test_missing_weight_among_several_gets_nothing() -> None:
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
    - destination: {host: reviews, subset: v3}
      weight: 50
"""
    snap = compile_files(BOOKINFO_NET / "destination-rule-all.yaml", extra=REVIEWS_SE + "---\n" + vs)
    action = mesh_action(snap, "reviews")
    assert [d.cluster_name.split("|")[2] for d in action.destinations] == ["v3"]


def test_no_virtual_service_routes_to_all_endpoints() -> None:
    snap = compile_files(BOOKINFO_NET / "destination-rule-all.yaml", extra=REVIEWS_SE)
    action = mesh_action(snap, "reviews:9080")
    cluster = action.destinations[0].cluster
    assert cluster is not None and cluster.subset == ""
    assert sorted(e.version for e in cluster.endpoints) == ["v1", "v2", "v3"]


def test_undefined_subset_compiles_to_missing_cluster() -> None:
    snap = compile_files(BOOKINFO_NET / "virtual-service-reviews-v3.yaml", extra=REVIEWS_SE)
    action = mesh_action(snap, "reviews")
    assert action.destinations[0].cluster is None  # → 503 NC at request time


def test_header_match_test_v2_routes_jason_to_v2() -> None:
    snap = compile_files(BOOKINFO_NET / "destination-rule-all.yaml",
                         BOOKINFO_NET / "virtual-service-reviews-test-v2.yaml", extra=REVIEWS_SE)
    jason = mesh_action(snap, "reviews", headers={"end-user": "jason"})
    other = mesh_action(snap, "reviews", headers={"end-user": "alice"})
    anonymous = mesh_action(snap, "reviews")
    assert jason.destinations[0].cluster_name.split("|")[2] == "v2"
    assert other.destinations[0].cluster_name.split("|")[2] == "v1"
    assert anonymous.destinations[0].cluster_name.split("|")[2] == "v1"


def test_gateway_listener_from_bookinfo_gateway() -> None:
    snap = compile_files(BOOKINFO_NET / "bookinfo-gateway.yaml", extra=REVIEWS_SE, bind="127.0.0.1")
    listener = snap.http_listeners["gateway_http_8080"]
    assert (listener.address, listener.port, listener.role) == ("127.0.0.1", 8080, "gateway")
    vh = listener.route_table.find("anything.example:8080")
    assert vh is not None
    view = RequestView("GET", "/productpage", {}, "x", "http", {}, 8080)
    route = vh.route(view)
    assert route is not None and isinstance(route.action, WeightedDestinations)
    assert route.action.destinations[0].cluster_name == "outbound|9080||productpage.default.svc.cluster.local"
    assert vh.route(RequestView("GET", "/other", {}, "x", "http", {}, 8080)) is None  # → 404 NR


def test_gateway_selector_must_match_labels() -> None:
    snap = compile_files(BOOKINFO_NET / "bookinfo-gateway.yaml", extra=REVIEWS_SE,
                         gateway_labels={"istio": "egressgateway"})
    assert "gateway_http_8080" not in snap.http_listeners


def test_content_hash_is_stable_and_changes_with_weights() -> None:
    a = compile_files(BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml", extra=REVIEWS_SE)
    b = compile_files(BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml", extra=REVIEWS_SE)
    c = compile_files(BOOKINFO_NET / "virtual-service-reviews-80-20.yaml", extra=REVIEWS_SE)
    assert a.content_hash == b.content_hash != c.content_hash


RATINGS_SE = registry.http_service_entry("ratings", {"v1": 9094})


@pytest.mark.parametrize(("sample", "expected"), [
    ("virtual-service-ratings-test-abort.yaml", Fault(None, 0.0, 500, 100.0)),
    ("virtual-service-ratings-test-delay.yaml", Fault(7.0, 100.0, None, 0.0)),
])
def test_fault_injection_is_compiled(sample: str, expected: Fault) -> None:
    snap = compile_files(BOOKINFO_NET / sample, extra=RATINGS_SE)
    vh = snap.http_listeners["mesh_http"].route_table.find("ratings")
    assert vh is not None
    assert vh.routes[0].fault == expected  # the rule for end-user jason
    assert vh.routes[1].fault is None


@pytest.mark.parametrize(("fault", "expected"), [
    ("{delay: {fixedDelay: 250ms, percent: 30}}", Fault(0.25, 30.0, None, 0.0)),  # deprecated `percent`
    ("{delay: {fixedDelay: 1s, percent: 30, percentage: {value: 0.5}}}", Fault(1.0, 0.5, None, 0.0)),
    ("{delay: {fixedDelay: 1s}, abort: {httpStatus: 503}}", None),  # no percentage: nothing injected
    ("{abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}", None),
])
def test_fault_percentages(fault: str, expected: Fault | None) -> None:
    vs = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews}}
    fault: {fault}
"""
    snap = compile_files(extra=REVIEWS_SE + "---\n" + vs)
    vh = snap.http_listeners["mesh_http"].route_table.find("reviews")
    assert vh is not None and vh.routes[0].fault == expected


@pytest.mark.parametrize(("retries", "expected"), [
    ("", 2),  # no `retries`: Istio's default policy, connect-failure retried twice
    ("    retries: {attempts: 0}\n", 0),
    ("    retries: {attempts: 3, retryOn: 5xx}\n", 3),  # Envoy's 5xx covers a failed connect
    ("    retries: {attempts: 4}\n", 4),  # retryOn absent: Istio's default list has connect-failure
    ("    retries: {attempts: 3, retryOn: retriable-4xx}\n", 0),
])
def test_connect_retries_follow_the_retry_policy(retries: str, expected: int) -> None:
    vs = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews}}
{retries}"""
    snap = compile_files(extra=REVIEWS_SE + "---\n" + vs)
    vh = snap.http_listeners["mesh_http"].route_table.find("reviews")
    assert vh is not None and vh.routes[0].connect_retries == expected
