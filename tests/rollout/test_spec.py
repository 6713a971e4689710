"""Rollout parsing and validation: every error names file, line and YAML path; the route is cross-checked."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config.load import load_text
from proxy.config.validate import validate
from proxy.rollout.spec import parse
from tests.rollout.helpers import BASE, make_spec, rollout_object

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: main
    route:
    - destination: {host: reviews, subset: v1}
"""


@pytest.mark.parametrize(("changes", "path", "reason"), [
    ({"virtualService": None}, "spec.virtualService", "virtualService is required"),
    ({"route": {"http": 0, "tcp": 0}}, "spec.route", "exactly one of http or tcp"),
    ({"route": {"http": -1}}, "spec.route.http", "rule index"),
    ({"stable": {"subset": "v2"}}, "spec.canary", "canary must differ from stable"),
    ({"canary": {"host": "reviews"}}, "spec.canary.subset", "subset is required"),
    ({"steps": []}, "spec.steps", "steps is required"),
    ({"steps": [{"setWeight": 101}]}, "spec.steps[0].setWeight", "between 0 and 100"),
    ({"steps": [{"setWeight": 10, "pause": {}}]}, "spec.steps[0]", "exactly one of setWeight"),
    ({"steps": [{"pause": {"duration": "soon"}}]}, "spec.steps[0].pause.duration", "invalid duration"),
    ({"steps": [{"wait": 3}]}, "spec.steps[0].wait", 'unknown field "wait"'),
    ({"analysis": {"interval": "0s"}}, "spec.analysis.interval", "must be positive"),
    ({"analysis": {"minRequests": 1.5}}, "spec.analysis.minRequests", "must be an integer"),
    ({"analysis": {"successRate": {"min": 120}}}, "spec.analysis.successRate.min", "between 0 and 100"),
    ({"analysis": {"latency": {"percentile": 99}}}, "spec.analysis.latency", "needs maxMs"),
    ({"analysis": {"failureLimit": 0}}, "spec.analysis.failureLimit", "at least 1"),
    ({"route": {"tcp": 0}, "analysis": {"latency": {"maxMs": 5}}}, "spec.analysis.latency",
     "latency applies to HTTP routes"),
    ({"rollback": {"stepWeight": 0}}, "spec.rollback.stepWeight", "between 1 and 100"),
    ({"surprise": 1}, "spec.surprise", 'unknown field "surprise"'),
])
def test_each_error_names_its_path_and_line(changes: dict[str, Any], path: str, reason: str) -> None:
    spec, errors = parse(rollout_object(**changes))
    assert spec is None
    matching = [e for e in errors if e.path == path and reason in e.reason]
    assert matching, [str(e) for e in errors]
    assert matching[0].file == "ro.yaml" and matching[0].line > 1


def test_defaults_and_rollback_plan() -> None:
    spec = make_spec(steps=[{"setWeight": 10}, {"pause": {}}, {"setWeight": 40}, {"pause": {"duration": "1m"}}])
    assert (spec.protocol, spec.rule, spec.rollback_interval) == ("http", 0, 1.0)
    assert spec.rollback_weights(40) == [10, 0]
    assert make_spec(rollback={"stepWeight": 15}).rollback_weights(40) == [25, 10, 0]
    assert [s.describe() for s in spec.steps] == ["setWeight 10", "pause until promoted", "setWeight 40", "pause 60s"]
    assert make_spec().digest != make_spec(steps=[{"setWeight": 20}]).digest


def test_loaded_and_validated_with_the_istio_kinds() -> None:
    text = VS + "---\n" + """apiVersion: shiftproxy.io/v1alpha1
kind: Rollout
metadata: {name: ro}
spec:
  virtualService: reviews
  route: {http: main}
  stable: {subset: v1}
  canary: {subset: v3}
  steps:
  - setWeight: 500
"""
    loaded = load_text(text, "all.yaml")
    assert [o.kind for o in loaded.objects] == ["VirtualService", "Rollout"] and not loaded.errors
    errors, _ = validate(loaded.objects)
    assert [str(e) for e in errors] == ["all.yaml:20: spec.steps[0].setWeight: must be between 0 and 100, got 500"]


@pytest.mark.parametrize(("route", "warning"), [
    ({"http": 0}, ""),
    ({"http": "main"}, ""),
    ({"http": 3}, "has no http rule 3"),
    ({"http": "other"}, "no http rule named 'other'"),
    ({"tcp": 0}, "has no tcp rule 0"),
])
def test_route_cross_check_is_a_warning(route: dict[str, Any], warning: str) -> None:
    objects = load_text(VS, "vs.yaml").objects + [rollout_object(route=route)]
    errors, warnings = validate(objects)
    assert not errors
    mine = [str(w) for w in warnings if w.file == "ro.yaml"]
    assert (warning in mine[0]) if warning else not mine, mine


def test_missing_virtual_service_and_foreign_destination_are_warnings() -> None:
    errors, warnings = validate([rollout_object()])
    assert not errors and "VirtualService default/reviews does not exist" in str(warnings[-1])
    three = VS + "    - destination: {host: reviews, subset: v3}\n"
    errors, warnings = validate(load_text(three, "vs.yaml").objects + [rollout_object()])
    assert "also routes to subset v3" in str(warnings[-1])


def test_two_rollouts_on_one_route_is_an_error() -> None:
    a = rollout_object()
    b = rollout_object()
    b.name = "other"
    errors, _ = validate(load_text(VS, "vs.yaml").objects + [a, b])
    assert any("already rolled out by Rollout ro" in str(e) for e in errors)


def test_base_is_valid() -> None:
    assert make_spec().steps and BASE["virtualService"] == "reviews"
