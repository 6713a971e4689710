"""HTTPRoute precedence as the Gateway API conformance tests expect it (not first-match).

Each case compiles real config (a Gateway, HTTPRoutes, ServiceEntries a–d) and asks the compiled route
table, through `explain`, where each request goes.
"""

from __future__ import annotations

import pytest

from tests.gatewayapi.support import BACKENDS, GATEWAY, compiled, route, winner


def rule(backend: str, match: str = "") -> str:
    matches = f"\n    matches: [{match}]" if match else ""
    return f"  - backendRefs: [{{name: {backend}, port: 9080}}]{matches}\n"


CASES: list[tuple[str, list[str], list[tuple[str, dict[str, str], str, str]]]] = [
    # (case, routes, [(path, headers, method, expected backend)])
    ("a shorter prefix declared first loses to a longer one declared later",
     [route("r", rule("a", "{path: {type: PathPrefix, value: /foo}}")
            + rule("b", "{path: {type: PathPrefix, value: /foo/bar}}"))],
     [("/foo/bar/x", {}, "GET", "b"), ("/foo/bar", {}, "GET", "b"), ("/foo/x", {}, "GET", "a"),
      ("/foo/barx", {}, "GET", "a"), ("/foobar", {}, "GET", "404")]),
    ("exact beats prefix of the same path",
     [route("r", rule("a", "{path: {type: PathPrefix, value: /foo}}")
            + rule("b", "{path: {type: Exact, value: /foo}}"))],
     [("/foo", {}, "GET", "b"), ("/foo/", {}, "GET", "a"), ("/foo/x", {}, "GET", "a")]),
    ("a trailing slash in a prefix is the same prefix",
     [route("r", rule("a", "{path: {type: PathPrefix, value: /foo/}}"))],
     [("/foo", {}, "GET", "a"), ("/foo/y", {}, "GET", "a"), ("/fooy", {}, "GET", "404")]),
    ("a header match beats no header match on the same path",
     [route("r", rule("a") + rule("b", "{headers: [{name: version, value: two}]}"))],
     [("/x", {"version": "two"}, "GET", "b"), ("/x", {}, "GET", "a"), ("/x", {"version": "one"}, "GET", "a")]),
    ("the longer path wins over more headers",
     [route("r", rule("a", "{path: {type: PathPrefix, value: /}, headers: [{name: h1, value: x}]}")
            + rule("b", "{path: {type: PathPrefix, value: /v2}}"))],
     [("/v2/y", {"h1": "x"}, "GET", "b"), ("/y", {"h1": "x"}, "GET", "a")]),
    ("a method match beats header matches",
     [route("r", rule("a", "{headers: [{name: h1, value: x}, {name: h2, value: y}]}")
            + rule("b", "{method: GET}"))],
     [("/", {"h1": "x", "h2": "y"}, "GET", "b"), ("/", {"h1": "x", "h2": "y"}, "POST", "a")]),
    ("more header matches win",
     [route("r", rule("a", "{headers: [{name: h1, value: x}]}")
            + rule("b", "{headers: [{name: h1, value: x}, {name: h2, value: y}]}"))],
     [("/", {"h1": "x", "h2": "y"}, "GET", "b"), ("/", {"h1": "x"}, "GET", "a")]),
    ("then more query parameter matches",
     [route("r", rule("a", "{queryParams: [{name: q1, value: x}]}")
            + rule("b", "{queryParams: [{name: q1, value: x}, {name: q2, value: y}]}"))],
     [("/?q1=x&q2=y", {}, "GET", "b"), ("/?q1=x", {}, "GET", "a"), ("/", {}, "GET", "404")]),
    ("two routes on one parent, same match: the older route wins whatever its name",
     [route("a-newer", rule("a"), created="2024-02-01T00:00:00Z"),
      route("z-older", rule("b"), created="2024-01-01T00:00:00Z")],
     [("/", {}, "GET", "b")]),
    ("two routes created at the same time: namespace/name order",
     [route("r2", rule("b"), created="2024-01-01T00:00:00Z"),
      route("r1", rule("a"), created="2024-01-01T00:00:00Z")],
     [("/", {}, "GET", "a")]),
    ("specificity across routes beats age",
     [route("old", rule("a", "{path: {type: PathPrefix, value: /api}}"), created="2020-01-01T00:00:00Z"),
      route("new", rule("b", "{path: {type: PathPrefix, value: /api/v2}}"), created="2024-01-01T00:00:00Z")],
     [("/api/v2/x", {}, "GET", "b"), ("/api/v1", {}, "GET", "a")]),
    ("within one route a tie goes to the first rule",
     [route("r", rule("a", "{path: {type: PathPrefix, value: /p}}") + rule("b", "{path: {type: PathPrefix, "
                                                                                 "value: /p}}"))],
     [("/p", {}, "GET", "a")]),
    ("a regular expression ranks between exact and prefix (Istio's order)",
     [route("r", rule("a", "{path: {type: PathPrefix, value: /items/long-prefix}}")
            + rule("b", "{path: {type: RegularExpression, value: '/items/.*'}}")
            + rule("c", "{path: {type: Exact, value: /items/long-prefix}}"))],
     [("/items/long-prefix/1", {}, "GET", "b"), ("/items/long-prefix", {}, "GET", "c"), ("/other", {}, "GET",
                                                                                          "404")]),
]


@pytest.mark.parametrize(("routes", "requests"), [(r, q) for _, r, q in CASES], ids=[c for c, _, _ in CASES])
def test_precedence(routes: list[str], requests: list[tuple[str, dict[str, str], str, str]]) -> None:
    snapshot = compiled(GATEWAY, BACKENDS, *routes)
    got = [(path, headers, method, winner(snapshot, path, headers, method)) for path, headers, method, _ in requests]
    assert got == requests


def test_routes_on_different_hostnames_do_not_compete() -> None:
    snapshot = compiled(GATEWAY, BACKENDS,
                        route("one", rule("a", "{path: {type: PathPrefix, value: /}}"), hostnames="[a.example.com]"),
                        route("two", rule("b", "{path: {type: Exact, value: /x}}"), hostnames="['*.example.com']"))
    assert winner(snapshot, "/x", authority="a.example.com") == "a"
    assert winner(snapshot, "/x", authority="b.example.com") == "b"
    assert winner(snapshot, "/x", authority="example.org") == "404"
