"""Property: every config the validator accepts compiles, and every route it compiles can serve a request.

Configs are generated from the schema tables themselves (every message, every field), with values drawn
from pools that mix valid and invalid Istio (RE2 and non-RE2 regexes, durations, hosts, subsets,
delegates), on top of a small registry so that routes have somewhere to go. Derandomized and bounded:
the same few hundred examples every run, in seconds.
"""

from __future__ import annotations

import base64
import copy
import functools
from collections import Counter
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.config import compile as compile_module
from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.diagnostics import ConfigError
from proxy.config.fields import ENUMS, FIELDS
from proxy.config.load import RawObject, load_text
from proxy.config.validate import validate
from proxy.l7.router import rewrite_path
from proxy.routing.match import RequestView
from proxy.routing.snapshot import Snapshot, WeightedDestinations
from tests.registry import REVIEWS_SE

KINDS = ("VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "WorkloadEntry")
EXAMPLES = 200

HOSTS = ["reviews", "reviews.default.svc.cluster.local", "ratings", "*.example.com", "www.example.com", "*", ""]
REGEXES = ["*", "*", "(?<x>a)", "(?P<x>a)", "[[:alpha:]]+", "/api/(v1", "a(?=b)", "^/a/(.*)$", ".*", "", "\\pL"]
STRINGS = ["v1", "v2", "/api", "/", "x-user", "jason", "GET", "http", "a b", "%", "10.0.0.1"]
POOLS: dict[str, list[Any]] = {  # by field name, before the generic pools by type
    "host": HOSTS, "hosts": [["reviews"], ["reviews", "ratings"], ["*.example.com"], ["*"], []], "regex": REGEXES,
    "subset": ["v1", "v2", "v9", ""], "gateways": [["mesh"], ["gw"], ["default/gw"], ["mesh", "gw"], []],
    "exact": ["/api", "/", "jason", ""], "prefix": ["/api", "/api/v1", "/", ""],
    "match": ["(?<x>a)", "[[:alpha:]]+$", "^/a/(.*)$", "*"], "rewrite": ["\\1b", "/b/\\1", "X", "\\2", "\\q"],
    "retryOn": ["connect-failure", "5xx,retriable-4xx", "bogus"], "protocol": ["HTTP", "TCP", "TLS", "HTTPS", "xyz"],
    "address": ["127.0.0.1", "10.0.0.1", "reviews.example.com", "unix:///tmp/s", ""],
    "name": ["v1", "v2", "http", "reviews-api", "Bad_Name"], "namespace": ["default", "team", ""],
    "destinationSubnets": [["10.0.0.0/8"], ["bad"]],
}
DURATIONS = ["1s", "0s", "100ms", "1.5s", "1h", "0.5ms"]


@functools.cache
def _value(type_spec: str, name: str, depth: int) -> st.SearchStrategy[Any]:
    if type_spec == "StringMatch":  # one kind at a time, mostly: the oneof is checked elsewhere
        return st.one_of(*(st.fixed_dictionaries({kind: st.sampled_from(POOLS[kind])})
                           for kind in ("exact", "prefix", "regex")), st.just({}))
    if name in POOLS and not type_spec.startswith("{") and type_spec not in FIELDS:
        return st.sampled_from(POOLS[name])
    if type_spec.startswith("["):
        return st.lists(_value(type_spec[1:-1], name, depth), max_size=2)
    if type_spec.startswith("{"):
        keys = st.sampled_from(["version", "app", "x-user", "http", "tcp"])
        return st.dictionaries(keys, _value(type_spec[1:-1], "", depth), max_size=2)
    if type_spec in FIELDS:
        return _message(type_spec, depth + 1)
    if type_spec == "string":
        return st.sampled_from(STRINGS)
    if type_spec == "bool":
        return st.booleans()
    if type_spec in ("int32", "uint32", "int64", "uint64"):
        return st.sampled_from([0, 1, 2, 80, 9080, 100, -1, 65536])
    if type_spec == "double":
        return st.sampled_from([0, 0.5, 50, 100, 101, -1])
    if type_spec == "duration":
        return st.sampled_from(DURATIONS)
    if type_spec == "bytes":
        return st.just(base64.b64encode(b"hi").decode())
    if type_spec.startswith("enum:"):
        return st.sampled_from(ENUMS[type_spec[5:]])
    return st.just({})  # opaque, timestamp: not worth varying here


@functools.cache
def _message(type_name: str, depth: int, most: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    """A few of the message's fields (small messages keep most of them valid), with values from the pools."""
    if depth > 6:
        return st.just({})
    fields = FIELDS[type_name]

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        names = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=most))
        return {name: draw(_value(fields[name], name, depth)) for name in names}

    return build()


# a valid object of each kind, which the generated fields are laid over
BASES: dict[str, dict[str, Any]] = {
    "VirtualService": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
    "DestinationRule": {"host": "reviews"},
    "Gateway": {"selector": {"istio": "ingressgateway"},
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]},
    "ServiceEntry": {"hosts": ["db.example.com"], "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                     "resolution": "STATIC", "endpoints": [{"address": "127.0.0.1"}]},
    "WorkloadEntry": {"address": "127.0.0.1", "labels": {"app": "reviews", "version": "v1"}},
}
DR_SUBSETS = {"host": "reviews", "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]}


@st.composite
def _spec(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    spec = {**copy.deepcopy(BASES[kind]), **draw(_message(kind, 0, most=2))}
    if kind == "VirtualService" and isinstance(spec.get("http"), list) and spec["http"]:
        rule = spec["http"][0]
        if isinstance(rule, dict):  # vary the rule most: matches, rewrites, delegates, retries…
            rule = {**rule, **draw(_message("HTTPRoute", 1, most=3))}
            if draw(st.booleans()):
                rule["match"] = draw(st.lists(_message("HTTPMatchRequest", 2, most=2), min_size=1, max_size=2))
            if "delegate" in rule and draw(st.booleans()):
                rule.pop("route", None)  # a root rule: its delegate's rules take its place
            spec["http"][0] = rule
    return spec


@st.composite
def configs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Manifests as parsed YAML (the loader's own tests cover the text; this property is about what follows)."""
    docs: list[dict[str, Any]] = [{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                                   "metadata": {"name": "subsets"}, "spec": DR_SUBSETS}]
    names: set[tuple[str, str, str]] = set()
    for n in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(KINDS))
        namespace = draw(st.sampled_from(["default", "team"]))
        name = draw(st.sampled_from(["reviews-api", "gw", "http"]))  # what delegates and gateways refer to
        name = name if (kind, namespace, name) not in names else f"obj{n}"
        names.add((kind, namespace, name))
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": kind,
                     "metadata": {"name": name, "namespace": namespace}, "spec": draw(_spec(kind))})
    return docs


@st.composite
def regex_configs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A VirtualService with a regex from the pool in one of the places Istio takes one, and maybe a
    uriRegexRewrite: the regex-everywhere corner of the space, which the schema-wide draw rarely reaches."""
    where = draw(st.sampled_from(["uri", "scheme", "method", "authority", "headers", "withoutHeaders",
                                  "queryParams"]))
    regex = {"regex": draw(st.sampled_from(REGEXES))}
    block = {where: {"x-user": regex} if where in ("headers", "withoutHeaders", "queryParams") else regex}
    rule: dict[str, Any] = {"match": [block], "route": [{"destination": {"host": "reviews"}}]}
    if draw(st.booleans()):
        rule["rewrite"] = {"uriRegexRewrite": {"match": draw(st.sampled_from(POOLS["match"] + REGEXES)),
                                               "rewrite": draw(st.sampled_from(POOLS["rewrite"]))}}
    return [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews"},
             "spec": {"hosts": ["reviews"], "http": [rule, {"route": [{"destination": {"host": "reviews"}}]}]}}]


@st.composite
def delegate_configs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A root VirtualService delegating to a hosts-less one (or to one that is missing or not a delegate),
    both with matches from the pools: the merge of root and delegate matches, conflicts included."""
    blocks = st.lists(_message("HTTPMatchRequest", 2, most=2), max_size=2)

    def vs(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}

    subset = st.sampled_from(["v1", "v2"])
    root = {"match": draw(blocks), "delegate": {"name": "reviews-api"}}
    if draw(st.booleans()):
        root["delegate"]["namespace"] = draw(st.sampled_from(["default", "team"]))
    if draw(st.booleans()):
        root["timeout"] = "2s"
    leaves = [{"match": draw(blocks),
               "route": [{"destination": {"host": "reviews.default.svc.cluster.local", "subset": draw(subset)}}]}
              for _ in range(draw(st.integers(1, 3)))]
    docs = [vs("reviews", "default", {"hosts": ["reviews"], "http": [root]})]
    if draw(st.booleans()):
        hosts = {"hosts": ["ratings"]} if draw(st.integers(0, 4)) == 0 else {}
        docs.append(vs("reviews-api", draw(st.sampled_from(["default", "team"])), {**hosts, "http": leaves}))
    return docs


REGISTRY = load_text(REVIEWS_SE, "registry.yaml").objects


def raw_objects(docs: list[dict[str, Any]]) -> list[RawObject]:
    return REGISTRY + [RawObject(d["kind"], d["apiVersion"], d["metadata"]["name"], d["metadata"]["namespace"]
                                 if "namespace" in d["metadata"] else "default", d, "generated.yaml", n + 1)
                       for n, d in enumerate(docs)]


REQUESTS = [RequestView(m, p, {"x-user": "jason"}, "reviews", "http", {"x-user": "jason"}, 9080)
            for m in ("GET", "POST") for p in ("/", "/api/v1/a", "/a/b")]


def serve_every_route(snap: Snapshot) -> None:
    """What the request path does with a route, for every route: match, rewrite, pick a destination."""
    for listener in snap.http_listeners.values():
        table = listener.route_table
        hosts = [*table.exact.values(), *(vh for _, vh in table.suffixes), *([table.catch_all] or [])]
        for vh in (h for h in hosts if h is not None):
            for req in REQUESTS:
                vh.route(req)
            for route in vh.routes:
                if isinstance(route.action, WeightedDestinations):
                    assert route.action.destinations and route.action.cumulative[-1] > 0, route
                    for r in (0, 1, 99, 12345):
                        route.action.pick(r)
                if route.rewrite is not None:
                    rewrite_path(route.rewrite, route.matches[0] if route.matches else True, b"/api/a/b?q=1")
    for tcp in snap.tcp_listeners.values():
        for route in tcp.routes:
            assert route.destinations.destinations and route.destinations.cumulative[-1] > 0, route
            route.destinations.pick(7)
        tcp.route("127.0.0.1")


ISSUE_EXAMPLES = [  # the configs that once crashed: a delegate rule, RE2-only rewrites, withoutHeaders `*`
    list(yaml.safe_load_all("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}}]
    delegate: {name: reviews-api}
  - match: [{withoutHeaders: {x: {regex: "*"}}}]
    rewrite: {uriRegexRewrite: {match: "(?<x>a)", rewrite: "\\\\1b"}}
    route: [{destination: {host: reviews}}]
  - rewrite: {uriRegexRewrite: {match: "[[:alpha:]]+", rewrite: "X"}}
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-api}
spec:
  http:
  - route: [{destination: {host: reviews}}]
""")),
    [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews"},
      "spec": {"hosts": ["reviews"], "http": [{"delegate": {}}]}}],  # found by this test: a delegate without a name
]


def test_every_accepted_config_compiles_and_serves() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.one_of(configs(), regex_configs(), delegate_configs()))
    @example(ISSUE_EXAMPLES[0])
    @example(ISSUE_EXAMPLES[1])
    def check(docs: list[dict[str, Any]]) -> None:
        objects = raw_objects(docs)
        errors, warnings = validate(objects)
        assert not [str(d) for d in errors + warnings if "internal error" in d.reason]  # no rule may raise
        if errors:
            seen["rejected"] += 1
            return
        seen["accepted"] += 1
        snap = compile_snapshot(objects, CompileOptions(), warnings=[str(w) for w in warnings])
        serve_every_route(snap)

    check()
    # the generator must reach the compiler often enough for the property to say something
    assert seen["accepted"] >= EXAMPLES // 10, seen


def test_a_compiler_bug_is_a_config_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise IndexError("tuple index out of range")

    monkeypatch.setattr(compile_module._Compiler, "run", broken)
    with pytest.raises(ConfigError, match=r"registry.yaml: internal error while compiling: IndexError"):
        compile_snapshot(REGISTRY, CompileOptions())
