"""Istio `delegate`: the root rule's match ANDed with each delegate rule, one level deep, as istiod merges."""

from __future__ import annotations

import pytest

from proxy.config.load import load_text
from proxy.config.validate import validate
from proxy.routing.match import RequestView
from proxy.routing.snapshot import DirectResponse, Snapshot, WeightedDestinations
from tests.config.test_compile import REVIEWS_SE, compile_files

DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}, {name: v3, labels: {version: v3}}]
"""


def vs(name: str, spec: str, namespace: str = "default") -> str:
    body = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}\n")


ROOT = vs("reviews", """
hosts: [reviews]
http:
- name: api
  match: [{uri: {prefix: /api}}, {uri: {prefix: /v2api}}]
  timeout: 3s
  delegate: {name: reviews-api, namespace: team}
- route: [{destination: {host: reviews, subset: v1}}]
""")
DELEGATE = vs("reviews-api", """
http:
- name: three
  match: [{uri: {prefix: /api/v3}, headers: {x-user: {exact: jason}}}]
  route: [{destination: {host: reviews.default.svc.cluster.local, subset: v3}}]
- match: [{uri: {exact: /elsewhere}}]
  route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]
- timeout: 1s
  route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
""", namespace="team")


def snapshot(*docs: str) -> Snapshot:
    text = "---\n".join((REVIEWS_SE, DR, *docs))
    loaded = load_text(text, "delegate.yaml")
    errors, _ = validate(loaded.objects)
    assert [str(e) for e in errors] == []
    return compile_files(extra=text)


def route_for(snap: Snapshot, path: str, headers: dict[str, str] | None = None) -> tuple[str, float | None] | None:
    vh = snap.http_listeners["mesh_http"].route_table.find("reviews")
    assert vh is not None
    route = vh.route(RequestView("GET", path, {}, "reviews", "http", headers or {}, 9080))
    if route is None:
        return None
    action = route.action
    assert isinstance(action, WeightedDestinations) and action.destinations, route
    return action.destinations[0].cluster_name.split("|")[2], route.timeout


@pytest.mark.parametrize(("path", "headers", "expected"), [
    ("/api/v3/x", {"x-user": "jason"}, ("v3", 3.0)),  # root /api AND delegate /api/v3 + header; root's timeout
    ("/api/v3/x", {}, ("v2", 1.0)),  # header missing: the delegate's catch-all, its own timeout
    ("/v2api/v3", {"x-user": "jason"}, ("v2", 1.0)),  # /api/v3 does not fit inside /v2api: that pairing is gone
    ("/elsewhere", {}, ("v1", None)),  # the conflicting delegate rule is dropped; the root's next rule serves
    ("/other", {}, ("v1", None)),
])
def test_delegate_rules_are_anded_with_the_root_match(path: str, headers: dict[str, str],
                                                       expected: tuple[str, float | None]) -> None:
    snap = snapshot(ROOT, DELEGATE)
    assert route_for(snap, path, headers) == expected


def test_the_dropped_rule_and_the_delegate_itself_are_reported() -> None:
    snap = snapshot(ROOT, DELEGATE)
    assert any("rule 1 of delegate team/reviews-api conflicts with the root rule's match; ignored" in n
               for n in snap.notices)
    _, warnings = validate(load_text("---\n".join((REVIEWS_SE, DR, ROOT, DELEGATE)), "d.yaml").objects)
    assert [w.path for w in warnings if "Istio ignores it" in w.reason] == ["spec.http[0].delegate"]


def test_short_names_in_a_delegate_are_its_own_namespace() -> None:
    delegate = vs("reviews-api", "http:\n- route: [{destination: {host: reviews, subset: v3}}]", namespace="team")
    snap = snapshot(ROOT, delegate)
    vh = snap.http_listeners["mesh_http"].route_table.find("reviews")
    assert vh is not None
    route = vh.route(RequestView("GET", "/api", {}, "reviews", "http", {}, 9080))
    assert route is not None and isinstance(route.action, WeightedDestinations)
    assert route.action.destinations[0].cluster_name == "outbound|0|v3|reviews.team.svc.cluster.local"


def test_a_missing_delegate_ignores_the_rule_instead_of_crashing() -> None:
    snap = snapshot(ROOT)
    assert route_for(snap, "/api/v3", {"x-user": "jason"}) == ("v1", None)
    assert any("delegate VirtualService team/reviews-api not found; rule ignored" in n for n in snap.notices)


def test_a_root_direct_response_is_inherited() -> None:
    root = vs("reviews", """
hosts: [reviews]
http:
- match: [{uri: {prefix: /api}}]
  directResponse: {status: 418}
  delegate: {name: reviews-api, namespace: team}
""")
    snap = snapshot(root, DELEGATE)
    vh = snap.http_listeners["mesh_http"].route_table.find("reviews")
    assert vh is not None
    route = vh.route(RequestView("GET", "/api/x", {}, "reviews", "http", {}, 9080))
    assert route is not None and route.action == DirectResponse(418, b"")


def test_a_delegate_is_not_routable_by_itself() -> None:
    snap = snapshot(DELEGATE)  # hosts-less: only reachable through a root
    vh = snap.http_listeners["mesh_http"].route_table.find("reviews")
    assert vh is not None and vh.name.startswith("default:")  # the service's default route, not the delegate


def test_gateway_names_are_compared_resolved() -> None:
    """The root says `gw`, the delegate `default/gw` and `gw.default.svc.cluster.local`: the same gateway."""
    root = vs("reviews", """
hosts: [reviews]
http:
- match: [{gateways: [gw, mesh]}]
  delegate: {name: reviews-api}
""")
    delegate = vs("reviews-api", """
http:
- match: [{gateways: [default/gw]}]
  route: [{destination: {host: reviews, subset: v3}}]
- match: [{gateways: [gw.default.svc.cluster.local]}]
  route: [{destination: {host: reviews, subset: v2}}]
- match: [{gateways: [other/gw]}]
  route: [{destination: {host: reviews, subset: v1}}]
""")
    snap = snapshot(root, delegate)
    assert [n for n in snap.notices if "conflicts" in n] == [
        "extra.yaml: VirtualService default/reviews spec.http[0].delegate: rule 2 of delegate "
        "default/reviews-api conflicts with the root rule's match; ignored"]


def test_an_unnamed_delegate_drops_the_rule() -> None:
    root = vs("reviews", "hosts: [reviews]\nhttp:\n- delegate: {}\n"
                         "- route: [{destination: {host: reviews, subset: v2}}]")
    snap = snapshot(root)
    assert route_for(snap, "/any") == ("v2", None)
    _, warnings = validate(load_text("---\n".join((REVIEWS_SE, DR, root)), "d.yaml").objects)
    assert [w.path for w in warnings if "delegate has no name" in w.reason] == ["spec.http[0].delegate"]
