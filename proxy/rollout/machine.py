"""The rollout state machine: pure functions of (spec, state, gate verdict, now). No I/O, no asyncio.

Phases: Progressing → (Paused) → Succeeded, or → RollingBack → RolledBack (gates failed) / Aborted (user).
- A `setWeight` step sets the canary's weight, then waits for an analysis interval that passes; an interval
  with fewer requests than `minRequests` waits (neither passes nor fails).
- A timed pause holds the weight for its duration; `pause: {}` holds it until promoted. Analysis keeps
  running during pauses: a failing canary is rolled back whatever step it is on.
- `failureLimit` failed intervals over the rollout start a rollback that walks the canary's weight down
  in steps, one per rollback interval, rather than snapping all traffic back to a cold stable at once.
- After the last step the canary gets all the traffic and the route names it alone.
Every transition appends a history entry with the values the decision used.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from proxy.rollout.spec import RolloutSpec

PROGRESSING = "Progressing"
PAUSED = "Paused"
ROLLING_BACK = "RollingBack"
SUCCEEDED = "Succeeded"
ROLLED_BACK = "RolledBack"
ABORTED = "Aborted"
TERMINAL = frozenset({SUCCEEDED, ROLLED_BACK, ABORTED})
HISTORY_LIMIT = 1000


@dataclass(slots=True)
class Verdict:
    """One analysis interval's outcome: pass | fail | wait, and each gate with its value and threshold."""

    result: str
    reason: str
    gates: list[dict[str, Any]] = field(default_factory=list)
    canary: dict[str, Any] = field(default_factory=dict)  # the window's counts, for the history
    stable: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RolloutState:
    digest: str
    phase: str = PROGRESSING
    step: int = 0
    weight: int = 0  # the canary's weight wanted now (of 100)
    step_started: float = 0.0
    next_at: float = 0.0  # when the next analysis (or rollback step) is due
    failures: int = 0
    message: str = ""
    resume_phase: str = ""  # what `resume` returns to after a pause
    rollback_plan: list[int] = field(default_factory=list)
    rollback_end: str = ""  # RolledBack | Aborted
    started_at: float = 0.0
    last_verdict: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutState:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})

    def route_form(self) -> str:
        """How the route should look: "both" (weighted), "canary" or "stable" (one destination)."""
        if self.phase == SUCCEEDED:
            return "canary"
        if self.phase in (ROLLED_BACK, ABORTED):
            return "stable"
        return "both"


class CommandError(Exception):
    """A command that does not apply in the rollout's phase (the admin API's 409)."""


def _record(state: RolloutState, now: float, event: str, message: str, verdict: Verdict | None = None) -> None:
    entry: dict[str, Any] = {"at": round(now, 3), "event": event, "phase": state.phase, "step": state.step,
                             "weight": state.weight, "message": message}
    if verdict is not None:
        entry.update(decision=verdict.result, gates=verdict.gates, canary=verdict.canary, stable=verdict.stable)
    state.history.append(entry)
    del state.history[:-HISTORY_LIMIT]
    state.message = message


def start(spec: RolloutSpec, now: float, weight: int = 0) -> RolloutState:
    """A new rollout at its first step; `weight` is the canary's weight the route has now."""
    state = RolloutState(spec.digest, started_at=now, weight=weight)
    _record(state, now, "start", f"rollout of {spec.canary.subset} started ({len(spec.steps)} steps)")
    _enter(spec, state, 0, now)
    return state


def _enter(spec: RolloutSpec, state: RolloutState, index: int, now: float) -> None:
    state.step = index
    state.step_started = now
    state.next_at = now + spec.analysis.interval
    if index >= len(spec.steps):
        state.weight = 100
        state.phase = SUCCEEDED
        _record(state, now, "complete", f"promoted: {spec.canary.subset} takes all traffic")
        return
    step = spec.steps[index]
    if step.set_weight is not None:
        state.weight = step.set_weight
        _record(state, now, "setWeight", f"step {index + 1}/{len(spec.steps)}: canary weight {step.set_weight}")
    elif step.until_promoted:
        _record(state, now, "pause", f"step {index + 1}/{len(spec.steps)}: paused until promoted")
    else:
        _record(state, now, "pause", f"step {index + 1}/{len(spec.steps)}: pause {step.pause:g}s")


def _begin_rollback(spec: RolloutSpec, state: RolloutState, now: float, end: str, why: str) -> None:
    state.phase = ROLLING_BACK
    state.rollback_end = end
    state.rollback_plan = spec.rollback_weights(state.weight)
    state.resume_phase = ""
    _record(state, now, "rollback", f"{why}; rolling back in steps {state.rollback_plan}")
    state.next_at = now  # the first step back is due at once


def due(state: RolloutState, now: float) -> bool:
    return state.phase in (PROGRESSING, ROLLING_BACK) and now >= state.next_at


def tick(spec: RolloutSpec, state: RolloutState, verdict: Verdict | None, now: float) -> RolloutState:
    """Advance a due rollout. `verdict` is the analysis of the interval just ended (None while rolling back)."""
    state = copy.deepcopy(state)
    if state.phase == ROLLING_BACK:
        if state.rollback_plan:
            state.weight = state.rollback_plan.pop(0)
            _record(state, now, "rollbackStep", f"canary weight {state.weight}")
        if not state.rollback_plan:
            state.phase = state.rollback_end or ROLLED_BACK
            _record(state, now, "rolledBack", f"{spec.stable.subset} takes all traffic "
                                              f"({'aborted' if state.phase == ABORTED else 'gates failed'})")
        state.next_at = now + spec.rollback_interval
        return state
    if state.phase != PROGRESSING or verdict is None:
        return state
    state.next_at = now + spec.analysis.interval
    state.last_verdict = {"result": verdict.result, "reason": verdict.reason, "gates": verdict.gates, "at": now}
    step = spec.steps[state.step] if state.step < len(spec.steps) else None
    if verdict.result == "fail":
        state.failures += 1
        _record(state, now, "analysis", f"gate failed ({state.failures}/{spec.analysis.failure_limit}): "
                                        f"{verdict.reason}", verdict)
        if state.failures >= spec.analysis.failure_limit:
            _begin_rollback(spec, state, now, ROLLED_BACK, f"failureLimit {spec.analysis.failure_limit} reached")
        return state
    _record(state, now, "analysis", verdict.reason, verdict)
    if step is None:
        return state
    if step.set_weight is not None and verdict.result == "pass":
        _enter(spec, state, state.step + 1, now)
    elif step.pause is not None and now - state.step_started >= step.pause:
        _enter(spec, state, state.step + 1, now)
    return state


# commands ------------------------------------------------------------------------------------------


def promote(spec: RolloutSpec, state: RolloutState, now: float, full: bool = False) -> RolloutState:
    """Skip the current step (or, with `full`, every remaining one)."""
    if state.phase not in (PROGRESSING, PAUSED):
        raise CommandError(f"cannot promote a rollout that is {state.phase}")
    state = copy.deepcopy(state)
    state.phase = PROGRESSING
    _record(state, now, "promote", "promoted by user" + (" to full" if full else f" past step {state.step + 1}"))
    _enter(spec, state, len(spec.steps) if full else state.step + 1, now)
    return state


def pause(spec: RolloutSpec, state: RolloutState, now: float) -> RolloutState:
    if state.phase not in (PROGRESSING, ROLLING_BACK):
        raise CommandError(f"cannot pause a rollout that is {state.phase}")
    state = copy.deepcopy(state)
    state.resume_phase, state.phase = state.phase, PAUSED
    _record(state, now, "pause", "paused by user: weights held, no analysis decisions")
    return state


def resume(spec: RolloutSpec, state: RolloutState, now: float) -> RolloutState:
    """Continue a paused rollout; retry a rolled-back or aborted one from its first step."""
    if state.phase in (ROLLED_BACK, ABORTED):
        fresh = start(spec, now, state.weight)
        fresh.history = state.history + fresh.history[-2:]
        del fresh.history[:-HISTORY_LIMIT]
        return fresh
    if state.phase != PAUSED:
        raise CommandError(f"cannot resume a rollout that is {state.phase}")
    state = copy.deepcopy(state)
    state.phase = state.resume_phase or PROGRESSING
    state.resume_phase = ""
    state.next_at = now + (spec.rollback_interval if state.phase == ROLLING_BACK else spec.analysis.interval)
    _record(state, now, "resume", "resumed by user")
    return state


def abort(spec: RolloutSpec, state: RolloutState, now: float) -> RolloutState:
    if state.phase not in (PROGRESSING, PAUSED):
        raise CommandError(f"cannot abort a rollout that is {state.phase}")
    state = copy.deepcopy(state)
    _begin_rollback(spec, state, now, ABORTED, "aborted by user")
    return state


COMMANDS = {"promote": promote, "pause": pause, "resume": resume, "abort": abort}
