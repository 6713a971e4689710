"""Never an empty destination: the pick with a cluster manager, injected random values, the compiled
annotations, explain and the validate warning."""

from __future__ import annotations

import pytest

from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.load import load_text
from proxy.config.validate import validate
from proxy.routing.explain import destinations
from proxy.routing.snapshot import Snapshot, WeightedDestinations
from proxy.upstream import shift
from proxy.upstream.cluster import ClusterManager
from proxy.upstream.hashing import hash64

CONFIG = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9001}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: 9002}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  annotations: {ANNOTATIONS}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 20}
    - {destination: {host: reviews, subset: v2}, weight: 30}
    - {destination: {host: reviews, subset: v3}, weight: 50}
"""


def compiled(annotations: str = "{}") -> tuple[Snapshot, WeightedDestinations]:
    loaded = load_text(CONFIG.replace("{ANNOTATIONS}", annotations), "reviews.yaml")
    errors, _ = validate(loaded.objects)
    assert errors == []
    snapshot = compile_snapshot(loaded.objects, CompileOptions())
    _, action = shift.weighted_routes(snapshot)["default/reviews#0"]
    return snapshot, action


def subset(dest: object) -> str:
    return dest.cluster_name.split("|")[2]  # type: ignore[attr-defined]


def test_an_empty_destinations_share_goes_to_the_others_by_weight() -> None:
    _, action = compiled()
    manager = ClusterManager()
    # every value of one period: v3 (no endpoint, weight 50) gets nothing, v1:v2 stay 20:30
    counts = {"v1": 0, "v2": 0, "v3": 0}
    moved = 0
    for value in range(100):
        dest, was_moved = shift.pick(action, manager, value, None)
        counts[subset(dest)] += 1
        moved += was_moved
    assert counts == {"v1": 20 + 20, "v2": 30 + 30, "v3": 0}
    assert moved == 50


def test_fail_mode_keeps_the_empty_destination() -> None:
    _, action = compiled("{shiftproxy.io/empty-destination: fail}")
    assert action.empty_fail
    manager = ClusterManager()
    picked = [subset(shift.pick(action, manager, value, None)[0]) for value in range(100)]
    assert picked.count("v3") == 50


def test_a_destination_whose_endpoints_all_fail_to_connect_is_empty_for_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, action = compiled()
    manager = ClusterManager()
    v2 = action.destinations[1]
    assert v2.cluster is not None and manager.has_endpoint(v2.cluster)
    now = [1000.0]
    monkeypatch.setattr("proxy.upstream.cluster.time.monotonic", lambda: now[0])
    assert manager.connect_failed(v2.cluster, v2.cluster.endpoints[0]) is True
    assert not manager.has_endpoint(v2.cluster)
    assert shift.empty_indexes(action, manager) == {1, 2}
    assert all(subset(shift.pick(action, manager, value, None)[0]) == "v1" for value in range(100))
    now[0] += 2.5  # the mark expires: the next request tries v2 again
    assert manager.has_endpoint(v2.cluster)


def test_sticky_keys_of_an_empty_destination_move_and_the_others_stay() -> None:
    _, action = compiled('{shiftproxy.io/sticky: "header=x-user"}')
    assert action.sticky is not None and action.sticky.describe == "header x-user"
    manager = ClusterManager()
    keys = [hash64(b"u%d" % i) for i in range(2000)]
    # v3 is empty: compare with the same destinations where v3 has an endpoint (sticky index alone)
    for key in keys:
        dest, moved = shift.pick(action, manager, 0, key)
        alone = action.destinations[action.sticky.pick(key)]
        assert subset(dest) != "v3"
        assert moved == (subset(alone) == "v3")
        if not moved:
            assert dest is alone


def test_every_destination_empty_is_not_moved() -> None:
    _, action = compiled()
    manager = ClusterManager()
    for dest in action.destinations[:2]:
        assert dest.cluster is not None
        manager.connect_failed(dest.cluster, dest.cluster.endpoints[0])
    dest, moved = shift.pick(action, manager, 70, None)
    assert subset(dest) == "v3" and not moved  # the caller answers 503 UH
    assert shift.reroute(action, manager, dest, 70, None) is None


def test_compile_warns_and_explain_says_where_the_share_goes() -> None:
    snapshot, action = compiled()
    assert any("destination outbound|9080|v3|reviews.default.svc.cluster.local has no endpoints at config time "
               "(no endpoint has the subset's labels): its share goes to the other destinations (flag ED)" in n
               for n in snapshot.notices)
    explained = {subset(type("D", (), {"cluster_name": d["cluster"]})()): d for d in destinations(action)}
    assert explained["v3"]["problem"].endswith("its share goes to the other destinations (flag ED)")
    assert explained["v3"]["effective_probability"] == 0.0
    assert explained["v1"]["effective_probability"] == pytest.approx(0.4)


@pytest.mark.parametrize(("annotations", "reason"), [
    ("{shiftproxy.io/empty-destination: drop}", "'drop' is not a mode: use fail"),
    ('{shiftproxy.io/sticky: "cookie="}', "cookie name '' is not a valid cookie name"),
])
def test_bad_annotation_values_are_errors(annotations: str, reason: str) -> None:
    loaded = load_text(CONFIG.replace("{ANNOTATIONS}", annotations), "reviews.yaml")
    errors, _ = validate(loaded.objects)
    assert len(errors) == 1 and reason in str(errors[0])
    assert str(errors[0]).startswith("reviews.yaml:26: metadata.annotations.shiftproxy.io/")
