"""The Rollout kind's names. Constants only, so the config loader can recognise it without a cycle."""

from __future__ import annotations

GROUP = "shiftproxy.io"
VERSIONS = ("v1alpha1",)
KIND = "Rollout"
API_VERSION = f"{GROUP}/{VERSIONS[0]}"
PLURAL = "rollouts"
SHORT = "ro"


def is_rollout(api_version: str, kind: str) -> bool:
    return kind == KIND and api_version.rpartition("/")[0] == GROUP
