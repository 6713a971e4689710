"""Compile and check the VirtualService annotations of traffic shifting beyond Istio:
`shiftproxy.io/sticky` (proxy.routing.sticky) and `shiftproxy.io/empty-destination`
(proxy.upstream.shift). Pure functions, called by compile.py and validation. No I/O, no asyncio.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from proxy.config.load import RawObject
from proxy.config.schema import Report
from proxy.routing import sticky
from proxy.routing.snapshot import WeightedDestinations

EMPTY_ANNOTATION = "shiftproxy.io/empty-destination"
EMPTY_MODES = ("fail", "redistribute")


def _annotations(obj: RawObject) -> dict[str, Any]:
    meta = obj.body.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def check(obj: RawObject, report: Report) -> None:
    """Errors for annotation values that mean nothing (a typo must not silently turn a feature off)."""
    if obj.kind != "VirtualService":
        return
    annotations = _annotations(obj)
    if sticky.ANNOTATION in annotations:
        parsed = sticky.parse(str(annotations[sticky.ANNOTATION]))
        if isinstance(parsed, str):
            report.error(("metadata", "annotations", sticky.ANNOTATION), parsed)
    if EMPTY_ANNOTATION in annotations:
        mode = str(annotations[EMPTY_ANNOTATION]).strip().lower()
        if mode not in EMPTY_MODES:
            report.error(("metadata", "annotations", EMPTY_ANNOTATION),
                         f"{annotations[EMPTY_ANNOTATION]!r} is not a mode: use fail (503 UH, as Istio) or "
                         "redistribute (the default: its share goes to the other destinations)")


def apply(vs: RawObject, action: WeightedDestinations) -> WeightedDestinations:
    """The route's destinations with the VirtualService's sticky key and empty-destination mode."""
    annotations = _annotations(vs)
    if not annotations:
        return action
    empty_fail = str(annotations.get(EMPTY_ANNOTATION, "")).strip().lower() == "fail"
    policy = None
    if sticky.ANNOTATION in annotations and action.destinations:
        parsed = sticky.parse(str(annotations[sticky.ANNOTATION]))
        if not isinstance(parsed, str):  # validation rejects the others
            key, describe = parsed
            policy = sticky.build(key, describe, [d.cluster_name for d in action.destinations],
                                  [d.weight for d in action.destinations])
    if policy is None and not empty_fail:
        return action
    return replace(action, sticky=policy, empty_fail=empty_fail)


EMPTY_WARNING = "has no endpoints at config time"


def is_empty_warning(notice: str) -> bool:
    return EMPTY_WARNING in notice


def empty_warnings(vs: RawObject, action: WeightedDestinations) -> list[str]:
    """A line per destination that has no endpoint at config time (what happens to its share)."""
    if len(action.destinations) < 2:
        return []
    mode = "requests sent there get 503 UH (shiftproxy.io/empty-destination: fail)" if action.empty_fail else \
        "its share goes to the other destinations (flag ED)"
    out = []
    for dest in action.destinations:
        if dest.cluster is not None and dest.cluster.endpoints:
            continue
        why = "the subset does not exist" if dest.cluster is None else "no endpoint has the subset's labels"
        out.append(f"{vs.file}: VirtualService {vs.namespace}/{vs.name}: destination {dest.cluster_name} "
                   f"{EMPTY_WARNING} ({why}): {mode}")
    return out
