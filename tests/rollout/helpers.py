"""Build Rollout objects and specs for the unit tests."""

from __future__ import annotations

from typing import Any

import yaml

from proxy.config.load import RawObject, load_text
from proxy.rollout.spec import RolloutSpec, parse

BASE: dict[str, Any] = {
    "virtualService": "reviews", "route": {"http": 0}, "stable": {"subset": "v1"}, "canary": {"subset": "v2"},
    "steps": [{"setWeight": 10}, {"setWeight": 50}, {"setWeight": 100}],
    "analysis": {"interval": "1s", "minRequests": 10, "successRate": {"min": 99}, "failureLimit": 2},
}


def rollout_object(spec: dict[str, Any] | None = None, **changes: Any) -> RawObject:
    body = {"apiVersion": "shiftproxy.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "ro"},
            "spec": {**BASE, **changes} if spec is None else spec}
    loaded = load_text(yaml.safe_dump(body, sort_keys=False), "ro.yaml")
    assert not loaded.errors, loaded.errors
    return loaded.objects[0]


def make_spec(**changes: Any) -> RolloutSpec:
    spec, errors = parse(rollout_object(**changes))
    assert spec is not None, errors
    return spec
