"""The rollout driver: an asyncio task in the admin worker (worker 0) that runs every served Rollout.

Each pass reads the Rollout objects being served, resumes or starts their state (persisted in the state
directory), runs the analyses that are due, and makes the route match the state. Weights change only
through the same path as `apply`: the VirtualService is validated against the whole config, written to
the state directory's applied/ objects, and served as a new config version, so `get vs -o yaml`,
`/config_dump` and a restarted proxy all show the live weights.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from proxy import workers
from proxy.config import store
from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.diagnostics import ConfigError
from proxy.config.load import LoadResult, RawObject, load_text
from proxy.rollout import analysis, machine, persist
from proxy.rollout import kind as rollout_kind
from proxy.rollout.analysis import Counts
from proxy.rollout.route import canary_weight, destination_key, shifted_body
from proxy.rollout.spec import RolloutSpec, parse, route_problem
from proxy.routing.snapshot import Snapshot
from proxy.state import ReloadResult, ServerState

log = logging.getLogger("shiftproxy.rollout")
WAITING = "Waiting"  # a Rollout this proxy does not (yet) drive: no VirtualService, or another proxy's
MAX_SLEEP = 0.25  # seconds between passes: picks up new Rollouts and hand-edited routes soon enough


class RolloutServer(Protocol):
    """What the controller needs of proxy.server.Server."""

    state: ServerState | None
    objects: list[RawObject]

    @property
    def compile_options(self) -> CompileOptions: ...

    def load(self, config: LoadResult | None = None) -> store.Loaded: ...

    async def change(self, reason: str, build: Callable[[int], tuple[Snapshot, store.Loaded]]) -> ReloadResult: ...


@dataclass(slots=True)
class _Run:
    spec: RolloutSpec
    state: machine.RolloutState
    baseline: tuple[Counts, Counts] | None = None  # (canary, stable) at the start of the window
    problem: str = ""
    decisions: dict[str, int] = field(default_factory=lambda: {"pass": 0, "fail": 0, "wait": 0})


class RolloutController:
    def __init__(self, server: RolloutServer, state_dir: str) -> None:
        self.server = server
        self.state_dir = state_dir
        self.runs: dict[tuple[str, str], _Run] = {}
        self.errors: dict[tuple[str, str], str] = {}  # Rollouts whose spec does not parse
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one pass or command at a time
        self._task: asyncio.Task[None] | None = None
        self._locks: dict[tuple[str, str], int] = {}  # rollouts this process drives
        self.clock: Callable[[], float] = time.time

    # lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for fd in self._locks.values():
            persist.unlock(fd)
        self._locks.clear()

    async def _loop(self) -> None:
        while True:
            try:
                async with self._lock:
                    await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one pass must not end rollouts, nor the process
                log.exception("rollout controller pass failed")
            now = self.clock()
            due = [r.state.next_at for r in self.runs.values() if r.state.phase not in machine.TERMINAL]
            delay = min([MAX_SLEEP, *(max(0.01, d - now) for d in due)])
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    # one pass -----------------------------------------------------------------------------------

    def _specs(self) -> dict[tuple[str, str], RolloutSpec]:
        specs: dict[tuple[str, str], RolloutSpec] = {}
        self.errors = {}
        for obj in self.server.objects:
            if obj.kind == rollout_kind.KIND:
                spec, errors = parse(obj)
                if spec is not None:
                    specs[spec.key] = spec
                else:
                    self.errors[(obj.namespace, obj.name)] = "; ".join(str(e) for e in errors)
        return specs

    def _vs(self, spec: RolloutSpec) -> RawObject | None:
        return next((o for o in self.server.objects if o.kind == "VirtualService" and o.namespace == spec.namespace
                     and o.name == spec.virtual_service), None)

    async def _pass(self) -> None:
        specs = self._specs()
        for key in [k for k in self.runs if k not in specs]:  # the Rollout was deleted
            del self.runs[key]
            if key in self._locks:
                persist.unlock(self._locks.pop(key))
                persist.remove(self.state_dir, *key)
        for key, spec in specs.items():
            await self._drive(key, spec)

    async def _drive(self, key: tuple[str, str], spec: RolloutSpec) -> None:
        now = self.clock()
        vs = self._vs(spec)
        problem = route_problem(spec, vs) if vs is not None else \
            f"waiting for VirtualService {spec.namespace}/{spec.virtual_service}"
        problem = problem or self._not_here(key, spec)
        run = self.runs.get(key)
        if run is None or run.state.digest != spec.digest or run.state.phase == WAITING:
            if problem:  # nothing to start on yet
                placeholder = machine.RolloutState(spec.digest, phase=WAITING, message=problem)
                self.runs[key] = _Run(spec, placeholder, problem=problem)
                return
            resumable = run is None or run.state.phase == WAITING  # not a changed spec: resume what was saved
            run = self._begin(key, spec, vs, now, resumable)  # type: ignore[arg-type]
        run.spec = spec
        run.problem = problem
        if problem or vs is None:
            self.runs[key] = run
            return
        if run.baseline is None:  # a window starts: at the start, a resume or a command
            run.baseline = await self._read(spec, vs)
        state = run.state
        if machine.due(state, now):
            verdict = None
            if state.phase == machine.PROGRESSING:
                verdict = await self._analyse(run, vs)
                run.decisions[verdict.result] += 1
            state = machine.tick(spec, state, verdict, now)
            self._save(key, run, state)
        # a running rollout owns its route; a finished one leaves later changes alone
        if state is not run.state or state.phase in (machine.PROGRESSING, machine.ROLLING_BACK):
            await self._converge(run, vs, state)
        run.state = state  # published once the route is set: a status never runs ahead of the weights
        self.runs[key] = run

    def _not_here(self, key: tuple[str, str], spec: RolloutSpec) -> str:
        """Why another proxy runs this rollout, or "": a proxy drives only routes it serves (its analysis
        sees their traffic), and of proxies sharing a state directory only the one holding the lock."""
        assert self.server.state is not None
        vs_key = f"{spec.namespace}/{spec.virtual_service}"
        if not serves(self.server.state.snapshot, vs_key, spec.protocol):
            return (f"this proxy does not serve VirtualService {vs_key} (not bound to its gateways or mesh "
                    "role): the proxy that serves it runs the rollout")
        if key not in self._locks:
            fd = persist.try_lock(self.state_dir, *key)
            if fd is None:
                return "driven by another proxy sharing this state directory"
            self._locks[key] = fd
        return ""

    def _begin(self, key: tuple[str, str], spec: RolloutSpec, vs: RawObject, now: float, resumable: bool) -> _Run:
        saved = persist.load(self.state_dir, *key) if resumable else None
        if saved is not None and saved.digest == spec.digest:
            if saved.phase not in machine.TERMINAL:
                saved.next_at = now + (spec.rollback_interval if saved.phase == machine.ROLLING_BACK
                                       else spec.analysis.interval)  # the counters restarted: a fresh window
                saved.history.append({"at": round(now, 3), "event": "resume", "phase": saved.phase,
                                      "step": saved.step, "weight": saved.weight,
                                      "message": "resumed after a proxy restart"})
            run = _Run(spec, saved)
            log.info("rollout %s/%s resumed: %s, step %d, canary weight %d", *key, saved.phase, saved.step + 1,
                     saved.weight)
        else:
            run = _Run(spec, machine.start(spec, now, canary_weight(spec, vs)))
            log.info("rollout %s/%s started: %s → %s on VirtualService %s %s", *key, spec.stable.subset,
                     spec.canary.subset, spec.virtual_service, spec.route_text)
        self._save(key, run)
        return run  # published by the caller once the route is set

    def _save(self, key: tuple[str, str], run: _Run, state: machine.RolloutState | None = None) -> None:
        try:
            persist.save(self.state_dir, *key, state or run.state)
        except OSError as exc:
            log.error("cannot persist rollout %s/%s in %s: %s", *key, self.state_dir, exc.strerror or exc)

    # analysis -----------------------------------------------------------------------------------

    async def _analyse(self, run: _Run, vs: RawObject) -> machine.Verdict:
        current = await self._read(run.spec, vs)
        base = run.baseline or current
        run.baseline = current
        return analysis.evaluate(run.spec.analysis, current[0].minus(base[0]), current[1].minus(base[1]),
                                 run.spec.protocol, self._canary_empty(run.spec, vs))

    def _canary_empty(self, spec: RolloutSpec, vs: RawObject) -> bool:
        """Whether every cluster of the canary has no endpoint to send to now (this process's view)."""
        state = self.server.state
        assert state is not None
        host, port = destination_key(spec, vs, spec.canary)
        prefix, suffix = analysis.cluster_matcher(host, spec.canary.subset, port)
        clusters = [c for name, c in state.snapshot.clusters.items()
                    if name.startswith(prefix) and name.endswith(suffix)]
        return bool(clusters) and not any(state.cluster_manager.has_endpoint(c) for c in clusters)

    async def _read(self, spec: RolloutSpec, vs: RawObject) -> tuple[Counts, Counts]:
        out = []
        for dest in (spec.canary, spec.stable):
            host, port = destination_key(spec, vs, dest)
            prefix, suffix = analysis.cluster_matcher(host, dest.subset, port)
            out.append(self.local_counts(spec.protocol, prefix, suffix))
            siblings = workers.sibling_admins()
            if siblings:  # --workers: every worker's traffic, not worker 0's sample
                texts = await asyncio.gather(*(asyncio.to_thread(_fetch_counts, a, spec.protocol, prefix, suffix)
                                               for a in siblings))
                for counts in texts:
                    if counts is not None:
                        out[-1].add(counts)
        return out[0], out[1]

    def local_counts(self, protocol: str, prefix: str, suffix: str) -> Counts:
        assert self.server.state is not None
        return analysis.read_counts(self.server.state.metrics, protocol, prefix, suffix)

    # the route ----------------------------------------------------------------------------------

    async def _converge(self, run: _Run, vs: RawObject, state: machine.RolloutState) -> None:
        """Make the VirtualService's route what `state` wants (while the rollout is not paused)."""
        spec = run.spec
        if state.phase == machine.PAUSED:
            return
        body = shifted_body(spec, vs, state.route_form(), state.weight)
        if body is None:
            return
        try:
            await self._apply(spec, body)
        except (ConfigError, store.StoreError) as exc:
            errors = [str(e) for e in exc.errors] if isinstance(exc, ConfigError) else [str(exc)]
            run.problem = "cannot set the route: " + "; ".join(errors)
            log.error("rollout %s/%s: %s", spec.namespace, spec.name, run.problem)

    async def _apply(self, spec: RolloutSpec, body: dict[str, Any]) -> None:
        from proxy.config.validate import validate

        filename = f"rollout {spec.namespace}/{spec.name}"
        obj = load_text(yaml.safe_dump(body, sort_keys=False), filename, default_namespace=spec.namespace).objects[0]
        server = self.server

        def build(version: int) -> tuple[Snapshot, store.Loaded]:  # in a worker thread, as apply's
            loaded = server.load()
            if loaded.served.errors:
                raise ConfigError(loaded.served.errors)
            plan = store.plan_apply(loaded, [obj])
            errors, warnings = validate(plan.objects)
            if errors:
                raise ConfigError(errors)
            snapshot = compile_snapshot(plan.stored, server.compile_options, version,
                                        warnings=[str(w) for w in warnings], notices=loaded.served.notices)
            if not plan.changed:
                return snapshot, loaded
            store.commit(plan.changes, loaded.state.directory)
            return snapshot, server.load(config=loaded.config)

        result = await server.change(f"rollout {spec.namespace}/{spec.name}", build)
        log.info("rollout %s/%s: VirtualService %s %s set (config version %d)", spec.namespace, spec.name,
                 spec.virtual_service, spec.route_text, result.version)

    # commands and status ------------------------------------------------------------------------

    async def command(self, namespace: str, name: str, verb: str, full: bool = False) -> dict[str, Any]:
        """promote | pause | resume | abort; KeyError if unknown, machine.CommandError if not now."""
        async with self._lock:
            run = self.runs.get((namespace, name))
            if run is None or run.state.phase == WAITING:
                raise KeyError(run.problem if run is not None else f"rollout {namespace}/{name} not found")
            now = self.clock()
            if verb == "promote":
                state = machine.promote(run.spec, run.state, now, full)
            else:
                state = machine.COMMANDS[verb](run.spec, run.state, now)
            run.baseline = None
            self._save((namespace, name), run, state)
            vs = self._vs(run.spec)
            if vs is not None:
                await self._converge(run, vs, state)
            run.state = state
        self._wake.set()
        return self.status(namespace, name)

    def status(self, namespace: str, name: str, history: bool = True) -> dict[str, Any]:
        run = self.runs.get((namespace, name))
        if run is None:
            raise KeyError(self.errors.get((namespace, name)) or f"rollout {namespace}/{name} not found")
        spec, state = run.spec, run.state
        out: dict[str, Any] = {
            "name": spec.name, "namespace": spec.namespace, "virtualService": spec.virtual_service,
            "route": spec.route_text, "stable": spec.stable.subset, "canary": spec.canary.subset,
            "phase": state.phase, "step": state.step, "steps": [s.describe() for s in spec.steps],
            "canaryWeight": state.weight, "failures": state.failures,
            "failureLimit": spec.analysis.failure_limit, "message": state.message, "problem": run.problem,
            "lastVerdict": state.last_verdict, "startedAt": state.started_at,
            "analysis": {"interval": spec.analysis.interval, "minRequests": spec.analysis.min_requests,
                         "successRateMin": spec.analysis.success_rate_min,
                         "latencyPercentile": spec.analysis.latency_percentile,
                         "latencyMaxMs": spec.analysis.latency_max_ms},
        }
        if history:
            out["history"] = state.history
        return out

    def list(self) -> list[dict[str, Any]]:
        out = [self.status(ns, n, history=False) for ns, n in sorted(self.runs)]
        out += [{"namespace": ns, "name": n, "phase": "Invalid", "problem": e} for (ns, n), e in self.errors.items()]
        return out

    # metrics ------------------------------------------------------------------------------------

    def collect(self) -> Iterator[object]:
        labels = ["rollout", "namespace"]
        step = GaugeMetricFamily("shiftproxy_rollout_step", "Current step of the rollout (1-based; steps+1 when "
                                 "complete)", labels=labels)
        weight = GaugeMetricFamily("shiftproxy_rollout_canary_weight", "Canary weight the rollout sets (0-100)",
                                   labels=labels)
        phase = GaugeMetricFamily("shiftproxy_rollout_phase", "1 for the rollout's current phase",
                                  labels=[*labels, "phase"])
        decisions = CounterMetricFamily("shiftproxy_rollout_decisions", "Analysis intervals by decision "
                                        "(pass, fail, wait: fewer requests than minRequests)",
                                        labels=[*labels, "decision"])
        for (ns, name), run in list(self.runs.items()):
            step.add_metric([name, ns], run.state.step + 1)
            weight.add_metric([name, ns], run.state.weight)
            phase.add_metric([name, ns, run.state.phase], 1)
            for decision, n in run.decisions.items():
                decisions.add_metric([name, ns, decision], n)
        yield from (step, weight, phase, decisions)


def serves(snapshot: Snapshot, virtual_service: str, protocol: str) -> bool:
    """Whether any listener of `snapshot` routes by the VirtualService "namespace/name"."""
    if protocol == "tcp":
        return any(r.virtual_service == virtual_service for li in snapshot.tcp_listeners.values() for r in li.routes)
    for li in snapshot.http_listeners.values():
        table = li.route_table
        hosts = [*table.exact.values(), *(vh for _, vh in table.suffixes), *filter(None, [table.catch_all])]
        if any(r.virtual_service == virtual_service for vh in hosts for r in vh.routes):
            return True
    return False


def _fetch_counts(address: str, protocol: str, prefix: str, suffix: str) -> Counts | None:
    from urllib.parse import urlencode

    query = urlencode({"protocol": protocol, "prefix": prefix, "suffix": suffix})
    try:
        return Counts.from_json(json.loads(workers.fetch(address, f"/rollouts/counts?{query}", timeout=2.0)))
    except (OSError, ValueError) as exc:
        log.warning("rollout analysis: no counts from the worker at %s (%s): its traffic is left out", address, exc)
        return None
