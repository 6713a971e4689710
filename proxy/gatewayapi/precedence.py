"""HTTPRoute match precedence (not first-match): which of the matches attached to one host wins.

The Gateway API orders every match of every rule of every route on a listener: an Exact path, then the
longest path prefix (Istio puts a RegularExpression between the two), then a method match, then the
most header matches, then the most query parameter matches; a remaining tie goes to the oldest route
(creationTimestamp, then namespace/name), then to the first rule and match in the route. Istio sorts
its generated routes the same way (`sortHTTPRoutes`); a sorted list then works as Istio's first-match
VirtualService rules.
"""

from __future__ import annotations

from typing import Any

from proxy.gatewayapi.resolve import as_dict, as_list, as_str

_PATH_RANK = {"Exact": 3, "RegularExpression": 2, "PathPrefix": 1}


def match_key(match: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """Sort key of one HTTPRouteMatch: smaller sorts first (wins)."""
    path = as_dict(match.get("path")) if "path" in match else {"type": "PathPrefix", "value": "/"}
    kind = as_str(path.get("type"), "PathPrefix")
    value = as_str(path.get("value"), "/")
    if kind == "PathPrefix" and value != "/":
        value = value.rstrip("/")  # "/foo/" and "/foo" are the same prefix
    headers = {as_str(as_dict(h).get("name")).lower() for h in as_list(match.get("headers"))}
    params = {as_str(as_dict(q).get("name")) for q in as_list(match.get("queryParams"))}
    return (-_PATH_RANK.get(kind, 0), -len(value), 0 if match.get("method") else 1, -len(headers), -len(params))


def route_matches(spec: dict[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
    """(rule index, match index, match) of every match of a route; a rule without matches has one that
    matches every request (PathPrefix /)."""
    out = []
    for r, rule in enumerate(as_list(spec.get("rules"))):
        matches = as_list(as_dict(rule).get("matches")) or [{}]
        out.extend((r, m, as_dict(match)) for m, match in enumerate(matches))
    return out
