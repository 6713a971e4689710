"""Parse and validate a `Rollout` object into a frozen `RolloutSpec`. Pure functions, no asyncio.

    apiVersion: shiftproxy.io/v1alpha1
    kind: Rollout
    metadata: {name: reviews-v3}
    spec:
      virtualService: reviews          # in the Rollout's namespace
      route: {http: 0}                 # rule index or name; {tcp: 0} for a TCP route
      stable: {subset: v1}             # host: optional, defaults to the route's host
      canary: {subset: v3}
      steps:
      - setWeight: 10
      - pause: {duration: 30s}
      - setWeight: 50
      - pause: {}                      # until `shiftproxy rollout promote`
      analysis:
        interval: 30s
        minRequests: 50                # fewer in an interval: wait, neither pass nor fail
        successRate: {min: 99}         # % non-5xx (TCP: % connections that reached the canary)
        latency: {percentile: 99, maxMs: 500}
        failureLimit: 2                # failed intervals (in a row) before rolling back
      rollback:
        stepWeight: 20                 # canary weight taken back per interval (default: the steps in reverse)
        interval: 10s

Every error is a Diagnostic naming file, line and YAML path. Cross-object checks (the VirtualService and
its route exist) are warnings: the route may come later, and the controller reports it while waiting.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from proxy.config.diagnostics import Diagnostic
from proxy.config.duration import parse_duration
from proxy.config.hosts import fqdn
from proxy.config.load import RawObject
from proxy.rollout import kind as rollout_kind

SPEC_FIELDS = ("virtualService", "route", "stable", "canary", "steps", "analysis", "rollback")
DEFAULT_INTERVAL = 30.0
DEFAULT_FAILURE_LIMIT = 1


@dataclass(frozen=True, slots=True)
class Destination:
    subset: str
    host: str = ""  # "" = the route's host


@dataclass(frozen=True, slots=True)
class Step:
    set_weight: int | None = None  # a setWeight step
    pause: float | None = None  # seconds of a timed pause
    until_promoted: bool = False  # `pause: {}`

    def describe(self) -> str:
        if self.set_weight is not None:
            return f"setWeight {self.set_weight}"
        if self.until_promoted:
            return "pause until promoted"
        return f"pause {self.pause:g}s"


@dataclass(frozen=True, slots=True)
class Analysis:
    interval: float = DEFAULT_INTERVAL
    min_requests: int = 0
    success_rate_min: float | None = None  # percent
    latency_percentile: float = 99.0
    latency_max_ms: float | None = None
    failure_limit: int = DEFAULT_FAILURE_LIMIT


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    name: str
    namespace: str
    virtual_service: str
    protocol: str  # "http" | "tcp"
    rule: int | str  # index or name of the rule in that list
    stable: Destination
    canary: Destination
    steps: tuple[Step, ...]
    analysis: Analysis
    rollback_step_weight: int | None
    rollback_interval: float
    digest: str  # of the spec: a changed spec starts the rollout over

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def route_text(self) -> str:
        return f"{self.protocol}[{self.rule}]" if isinstance(self.rule, int) else f"{self.protocol} {self.rule!r}"

    def host_of(self, dest: Destination) -> str:
        return fqdn(dest.host, self.namespace) if dest.host else ""

    def rollback_weights(self, current: int) -> list[int]:
        """The canary weights a rollback walks through from `current` down to 0."""
        if self.rollback_step_weight:
            out, w = [], current
            while w > 0:
                w = max(0, w - self.rollback_step_weight)
                out.append(w)
            return out
        lower = sorted({s.set_weight for s in self.steps if s.set_weight is not None and s.set_weight < current},
                       reverse=True)
        return [w for w in lower if w > 0] + [0]


def parse(obj: RawObject) -> tuple[RolloutSpec | None, list[Diagnostic]]:
    """The spec, or None with every error found."""
    p = _Parser(obj)
    spec = p.run()
    return (spec if not p.errors else None), p.errors


class _Parser:
    def __init__(self, obj: RawObject) -> None:
        self.obj = obj
        self.errors: list[Diagnostic] = []

    def error(self, path: tuple[Any, ...], reason: str) -> None:
        self.errors.append(self.obj.at(path, reason))

    def mapping(self, value: Any, path: tuple[Any, ...], fields: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, got {_type(value)}")
            return {}
        for key in value:
            if key not in fields:
                self.error((*path, key), f'unknown field "{key}" (expected one of {", ".join(fields)})')
        return value

    def number(self, value: Any, path: tuple[Any, ...], low: float, high: float | None, integer: bool = False
               ) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            self.error(path, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
            return None
        if value < low or (high is not None and value > high):
            bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            self.error(path, f"must be {bound}, got {value!r}")
            return None
        return value

    def duration(self, value: Any, path: tuple[Any, ...]) -> float | None:
        if not isinstance(value, str):
            self.error(path, f"must be a duration string such as 30s or 1m, got {value!r}")
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(path, f"invalid duration {value!r}: {exc}")
            return None
        if seconds <= 0:
            self.error(path, f"must be positive, got {value!r}")
            return None
        return seconds

    def run(self) -> RolloutSpec | None:
        obj = self.obj
        spec = self.mapping(obj.body.get("spec"), ("spec",), SPEC_FIELDS)
        if obj.body.get("spec") is None:
            self.error(("spec",), "spec is required")
        vs = spec.get("virtualService")
        if not isinstance(vs, str) or not vs:
            self.error(("spec", "virtualService"), "virtualService is required: the name of a VirtualService "
                                                    "in this namespace")
        protocol, rule = self.route(spec.get("route"))
        stable = self.destination(spec.get("stable"), ("spec", "stable"))
        canary = self.destination(spec.get("canary"), ("spec", "canary"))
        if stable and canary and stable == canary:
            self.error(("spec", "canary"), "canary must differ from stable")
        steps = self.steps(spec.get("steps"))
        analysis = self.analysis(spec.get("analysis"), protocol)
        rb = self.mapping(spec.get("rollback"), ("spec", "rollback"), ("stepWeight", "interval"))
        step_weight = None
        if "stepWeight" in rb:
            n = self.number(rb["stepWeight"], ("spec", "rollback", "stepWeight"), 1, 100, integer=True)
            step_weight = int(n) if n is not None else None
        rb_interval = analysis.interval
        if "interval" in rb:
            rb_interval = self.duration(rb["interval"], ("spec", "rollback", "interval")) or rb_interval
        if self.errors or stable is None or canary is None or not isinstance(vs, str):
            return None
        digest = hashlib.sha256(json.dumps(obj.body.get("spec"), sort_keys=True, default=str).encode()).hexdigest()
        return RolloutSpec(obj.name, obj.namespace, vs, protocol, rule, stable, canary, tuple(steps), analysis,
                           step_weight, rb_interval, digest[:16])

    def route(self, value: Any) -> tuple[str, int | str]:
        path = ("spec", "route")
        if value is None:
            return "http", 0
        route = self.mapping(value, path, ("http", "tcp"))
        given = [k for k in ("http", "tcp") if k in route]
        if len(given) != 1:
            if isinstance(value, dict):
                self.error(path, "route needs exactly one of http or tcp (a rule index or name)")
            return "http", 0
        protocol = given[0]
        rule = route[protocol]
        if isinstance(rule, bool) or not isinstance(rule, (int, str)) or (isinstance(rule, int) and rule < 0) or \
                rule == "":
            self.error((*path, protocol), f"must be a rule index (0, 1, ...) or a rule name, got {rule!r}")
            return protocol, 0
        return protocol, rule

    def destination(self, value: Any, path: tuple[Any, ...]) -> Destination | None:
        if value is None:
            self.error(path, f"{path[-1]} is required: {{subset: NAME}}")
            return None
        dest = self.mapping(value, path, ("subset", "host"))
        subset, host = dest.get("subset"), dest.get("host", "")
        ok = True
        if not isinstance(subset, str) or not subset:
            self.error((*path, "subset"), "subset is required: a subset of the route's DestinationRule")
            ok = False
        if not isinstance(host, str):
            self.error((*path, "host"), f"must be a host name, got {host!r}")
            ok = False
        return Destination(subset, host) if ok and isinstance(subset, str) and isinstance(host, str) else None

    def steps(self, value: Any) -> list[Step]:
        path: tuple[Any, ...] = ("spec", "steps")
        if not isinstance(value, list) or not value:
            self.error(path, "steps is required: a list of setWeight and pause steps")
            return []
        out: list[Step] = []
        for i, item in enumerate(value):
            here = (*path, i)
            step = self.mapping(item, here, ("setWeight", "pause"))
            if len(step) != 1 or not isinstance(item, dict):
                if isinstance(item, dict):
                    self.error(here, "a step is exactly one of setWeight: N or pause: {duration: D} / pause: {}")
                continue
            if "setWeight" in step:
                n = self.number(step["setWeight"], (*here, "setWeight"), 0, 100, integer=True)
                if n is not None:
                    out.append(Step(set_weight=int(n)))
                continue
            if "pause" not in step:
                continue  # an unknown field, reported above
            pause = self.mapping(step["pause"], (*here, "pause"), ("duration",))
            if "duration" in pause:
                seconds = self.duration(pause["duration"], (*here, "pause", "duration"))
                if seconds is not None:
                    out.append(Step(pause=seconds))
            else:
                out.append(Step(until_promoted=True))
        return out

    def analysis(self, value: Any, protocol: str) -> Analysis:
        path: tuple[Any, ...] = ("spec", "analysis")
        a = self.mapping(value, path, ("interval", "minRequests", "successRate", "latency", "failureLimit"))
        interval = self.duration(a["interval"], (*path, "interval")) if "interval" in a else DEFAULT_INTERVAL
        min_requests = self.number(a.get("minRequests", 0), (*path, "minRequests"), 0, None, integer=True)
        limit = self.number(a.get("failureLimit", DEFAULT_FAILURE_LIMIT), (*path, "failureLimit"), 1, None,
                            integer=True)
        success = None
        if "successRate" in a:
            sr = self.mapping(a["successRate"], (*path, "successRate"), ("min",))
            if "min" not in sr:
                self.error((*path, "successRate"), "successRate needs min: a percentage (e.g. 99)")
            else:
                success = self.number(sr["min"], (*path, "successRate", "min"), 0, 100)
        percentile, max_ms = 99.0, None
        if "latency" in a:
            lat = self.mapping(a["latency"], (*path, "latency"), ("percentile", "maxMs"))
            if protocol == "tcp":
                self.error((*path, "latency"), "latency applies to HTTP routes: a TCP route has no request "
                                               "duration (use successRate)")
            if "maxMs" not in lat:
                self.error((*path, "latency"), "latency needs maxMs: the highest allowed percentile in ms")
            else:
                max_ms = self.number(lat["maxMs"], (*path, "latency", "maxMs"), 0, None)
            if "percentile" in lat:
                p = self.number(lat["percentile"], (*path, "latency", "percentile"), 1, 100)
                percentile = float(p) if p is not None else percentile
        return Analysis(interval or DEFAULT_INTERVAL, int(min_requests or 0), success, percentile, max_ms,
                        int(limit or DEFAULT_FAILURE_LIMIT))


def _type(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), type(value).__name__)


# validation over the whole config --------------------------------------------------------------------


def validate(objects: list[RawObject]) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """(errors, warnings) of every Rollout among `objects`: its own fields (errors) and its route (warnings)."""
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    services = {(o.namespace, o.name): o for o in objects if o.kind == "VirtualService"}
    owners: dict[tuple[str, str, str, str], RawObject] = {}
    for obj in (o for o in objects if o.kind == rollout_kind.KIND):
        try:
            spec, errs = parse(obj)
        except Exception as exc:  # a bug in a rule costs this object, never the reload
            spec, errs = None, [obj.at((), f"internal error while validating this Rollout: {exc!r}")]
        errors.extend(errs)
        if spec is None:
            continue
        target = (spec.namespace, spec.virtual_service, spec.protocol, str(spec.rule))
        first = owners.setdefault(target, obj)
        if first is not obj:
            errors.append(obj.at(("spec", "route"), f"VirtualService {spec.virtual_service} {spec.route_text} is "
                                                    f"already rolled out by Rollout {first.name} "
                                                    f"({first.file}:{first.line})"))
        vs = services.get((spec.namespace, spec.virtual_service))
        problem = route_problem(spec, vs) if vs is not None else \
            f"VirtualService {spec.namespace}/{spec.virtual_service} does not exist (the rollout waits for it)"
        if problem:
            warnings.append(obj.at(("spec", "virtualService"), problem, "warning"))
    return errors, warnings


def find_rule(spec: RolloutSpec, vs: RawObject) -> tuple[int, dict[str, Any]] | str:
    """(index, rule) of the route the rollout drives in `vs`, or why there is none."""
    rules = (vs.spec or {}).get(spec.protocol)
    rules = rules if isinstance(rules, list) else []
    if isinstance(spec.rule, int):
        if spec.rule < len(rules) and isinstance(rules[spec.rule], dict):
            return spec.rule, rules[spec.rule]
        return f"VirtualService {vs.name} has no {spec.protocol} rule {spec.rule} ({len(rules)} rule(s))"
    for i, rule in enumerate(rules):
        if isinstance(rule, dict) and rule.get("name") == spec.rule:
            return i, rule
    return f"VirtualService {vs.name} has no {spec.protocol} rule named {spec.rule!r}"


def route_problem(spec: RolloutSpec, vs: RawObject) -> str:
    """Why the controller cannot drive this route, or ""."""
    found = find_rule(spec, vs)
    if isinstance(found, str):
        return found
    _, rule = found
    route = rule.get("route")
    if not isinstance(route, list) or not route:
        return f"VirtualService {vs.name} {spec.route_text} has no route destinations to shift"
    subsets = {spec.stable.subset, spec.canary.subset}
    for entry in route:
        dest = (entry or {}).get("destination") if isinstance(entry, dict) else None
        if not isinstance(dest, dict) or dest.get("subset") not in subsets:
            subset = dest.get("subset") if isinstance(dest, dict) else None
            return (f"VirtualService {vs.name} {spec.route_text} also routes to subset {subset or '<none>'}: a "
                    f"rollout shifts between {spec.stable.subset} and {spec.canary.subset} only")
    return ""
