"""The Rollout kind's names. Constants only, so the config loader can recognise it without a cycle."""

from __future__ import annotations

GROUP = "shiftproxy.io"
VERSIONS = ("v1alpha1",)
KIND = "Rollout"
