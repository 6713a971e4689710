"""The route a rollout writes into its VirtualService."""

from __future__ import annotations

import pytest

from proxy.config.load import load_text
from proxy.rollout.route import canary_weight, destination_key, shifted_body, shifted_route
from tests.rollout.helpers import make_spec

V1 = {"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}}
V2 = {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}}


@pytest.mark.parametrize(("form", "weight", "expected"), [
    ("both", 10, [{**V1, "weight": 90}, {**V2, "weight": 10}]),  # the canary entry copies host and port
    ("both", 100, [V2]),  # 0 and 100 name one destination: no weight-0 entry
    ("both", 0, [V1]),
    ("canary", 40, [V2]),
    ("stable", 40, [V1]),
])
def test_shifted_route(form: str, weight: int, expected: list[dict]) -> None:  # type: ignore[type-arg]
    assert shifted_route(make_spec(), [V1], form, weight) == expected


def test_body_and_weights_of_a_virtual_service() -> None:
    vs = load_text("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 3}
    - {destination: {host: reviews, subset: v2}, weight: 1}
""", "vs.yaml").objects[0]
    spec = make_spec()
    assert canary_weight(spec, vs) == 25
    body = shifted_body(spec, vs, "both", 50)
    assert body is not None and [e["weight"] for e in body["spec"]["http"][0]["route"]] == [50, 50]
    assert vs.body["spec"]["http"][0]["route"][0]["weight"] == 3  # the served object is not changed
    assert shifted_body(spec, vs, "both", 25) is not None  # 3:1 is 25 %, but written as 75/25
    assert destination_key(spec, vs, spec.canary) == ("reviews.default.svc.cluster.local", None)
