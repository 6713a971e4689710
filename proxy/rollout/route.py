"""The route a rollout wants in its VirtualService: pure functions over the object's body."""

from __future__ import annotations

import copy
from typing import Any

from proxy.config.hosts import fqdn
from proxy.config.load import RawObject
from proxy.rollout.spec import Destination, RolloutSpec, find_rule


def _entry_for(route: list[dict[str, Any]], dest: Destination, other: Destination) -> dict[str, Any]:
    """The route entry of `dest`, or one made from `other`'s entry (same host and port, dest's subset)."""
    for entry in route:
        if (entry.get("destination") or {}).get("subset") == dest.subset:
            return copy.deepcopy(entry)
    template = next(e for e in route if (e.get("destination") or {}).get("subset") == other.subset)
    entry = {"destination": copy.deepcopy(template.get("destination") or {})}
    entry["destination"]["subset"] = dest.subset
    if dest.host:
        entry["destination"]["host"] = dest.host
    return entry


def shifted_route(spec: RolloutSpec, route: list[dict[str, Any]], form: str, weight: int) -> list[dict[str, Any]]:
    """`route` as the rollout wants it: both destinations weighted (stable 100-w, canary w), or one alone."""
    stable = _entry_for(route, spec.stable, spec.canary)
    canary = _entry_for(route, spec.canary, spec.stable)
    if form == "both" and weight in (0, 100):  # one destination: no weight-0 entry (validate warns of one)
        form = "canary" if weight == 100 else "stable"
    if form == "canary":
        canary.pop("weight", None)
        return [canary]
    if form == "stable":
        stable.pop("weight", None)
        return [stable]
    stable["weight"], canary["weight"] = 100 - weight, weight
    return [stable, canary]


def shifted_body(spec: RolloutSpec, vs: RawObject, form: str, weight: int) -> dict[str, Any] | None:
    """The VirtualService body with the rollout's route, or None when it already is so (or cannot be)."""
    found = find_rule(spec, vs)
    if isinstance(found, str):
        return None
    index, rule = found
    route = rule.get("route") or []
    wanted = shifted_route(spec, route, form, weight)
    if wanted == route:
        return None
    body = copy.deepcopy(vs.body)
    body["spec"][spec.protocol][index]["route"] = wanted
    return body


def canary_weight(spec: RolloutSpec, vs: RawObject) -> int:
    """The canary's share (of 100) that the route gives now, for a rollout starting on it."""
    found = find_rule(spec, vs)
    if isinstance(found, str):
        return 0
    route = [e for e in found[1].get("route") or [] if isinstance(e, dict)]
    subsets = [(e.get("destination") or {}).get("subset") for e in route]
    if len(route) == 1:
        return 100 if subsets[0] == spec.canary.subset else 0
    weights = [int(e.get("weight") or 0) for e in route]
    total = sum(weights)
    share = sum(w for w, s in zip(weights, subsets, strict=True) if s == spec.canary.subset)
    return round(100 * share / total) if total else 0


def destination_key(spec: RolloutSpec, vs: RawObject, dest: Destination) -> tuple[str, int | None]:
    """(fqdn, port or None) of a destination of the route, for finding its metrics."""
    found = find_rule(spec, vs)
    host, port = dest.host, None
    if not isinstance(found, str):
        for entry in found[1].get("route") or []:
            d = (entry or {}).get("destination") or {}
            if d.get("subset") in (spec.stable.subset, spec.canary.subset):
                host = host or d.get("host", "")
                number = (d.get("port") or {}).get("number")
                port = number if isinstance(number, int) else None
                if d.get("subset") == dest.subset:
                    break
    return fqdn(str(host), vs.namespace), port
