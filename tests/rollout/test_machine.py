"""The rollout state machine with injected verdicts: table-driven, no clock, no network."""

from __future__ import annotations

import pytest

from proxy.rollout import machine
from proxy.rollout.machine import Verdict
from tests.rollout.helpers import make_spec

PASS, FAIL, WAIT = Verdict("pass", "ok"), Verdict("fail", "successRate 70% < min 99%"), Verdict("wait", "few")


def drive(spec_changes: dict, verdicts: list[Verdict | None]) -> tuple[machine.RolloutState, list[int]]:  # type: ignore[type-arg]
    """Run the machine one due tick per verdict (None: a rollback tick); the weights after each tick."""
    spec = make_spec(**spec_changes)
    state = machine.start(spec, 0.0)
    now, seen = 0.0, [state.weight]
    for verdict in verdicts:
        now = max(now, state.next_at)
        assert machine.due(state, now)
        state = machine.tick(spec, state, verdict, now)
        seen.append(state.weight)
    return state, seen


@pytest.mark.parametrize(("name", "changes", "verdicts", "phase", "weights"), [
    ("every gate passes", {}, [PASS, PASS, PASS], machine.SUCCEEDED, [10, 50, 100, 100]),
    ("waits neither pass nor fail", {}, [WAIT, WAIT, PASS, WAIT, PASS, PASS], machine.SUCCEEDED,
     [10, 10, 10, 50, 50, 100, 100]),
    ("one failure under the limit holds the step", {}, [PASS, FAIL, PASS, PASS], machine.SUCCEEDED,
     [10, 50, 50, 100, 100]),
    ("failureLimit failures roll back along the steps", {}, [PASS, FAIL, FAIL, None, None],
     machine.ROLLED_BACK, [10, 50, 50, 50, 10, 0]),
    ("failures count over the rollout, not in a row", {}, [PASS, FAIL, PASS, FAIL, None],
     machine.ROLLING_BACK, [10, 50, 50, 100, 100, 50]),
    ("rollback by stepWeight", {"rollback": {"stepWeight": 20}}, [PASS, FAIL, FAIL, None, None, None],
     machine.ROLLED_BACK, [10, 50, 50, 50, 30, 10, 0]),
    ("failureLimit 1 rolls back at once", {"analysis": {"interval": "1s", "failureLimit": 1}}, [FAIL, None],
     machine.ROLLED_BACK, [10, 10, 0]),
])
def test_transitions(name: str, changes: dict, verdicts: list[Verdict | None], phase: str,  # type: ignore[type-arg]
                     weights: list[int]) -> None:
    state, seen = drive(changes, verdicts)
    assert (state.phase, seen) == (phase, weights), name


def test_history_keeps_the_values_behind_each_decision() -> None:
    failing = Verdict("fail", "successRate 70% < min 99%",
                      [{"gate": "successRate", "value": 70.0, "min": 99, "ok": False}],
                      {"requests": 40, "failures": 12, "successRate": 70.0}, {"requests": 360, "failures": 0})
    state, _ = drive({}, [failing, failing])
    decided = [e for e in state.history if e["event"] == "analysis"]
    assert [e["decision"] for e in decided] == ["fail", "fail"]
    assert decided[0]["gates"][0]["value"] == 70.0 and decided[0]["canary"]["failures"] == 12
    assert decided[0]["stable"]["requests"] == 360
    assert state.phase == machine.ROLLING_BACK and state.history[-1]["event"] == "rollback"


@pytest.mark.parametrize(("step", "elapsed", "verdict", "advances"), [
    ({"pause": {"duration": "5s"}}, 2.0, PASS, False),
    ({"pause": {"duration": "5s"}}, 5.0, PASS, True),
    ({"pause": {"duration": "5s"}}, 5.0, WAIT, True),  # a timed pause ends on time when no gate failed
    ({"pause": {"duration": "5s"}}, 6.0, FAIL, False),
    ({"pause": {}}, 1000.0, PASS, False),  # until promoted
])
def test_pauses(step: dict, elapsed: float, verdict: Verdict, advances: bool) -> None:  # type: ignore[type-arg]
    spec = make_spec(steps=[step, {"setWeight": 100}])
    state = machine.start(spec, 0.0)
    state = machine.tick(spec, state, verdict, elapsed)
    assert (state.step == 1) is advances


def test_commands() -> None:
    spec = make_spec(steps=[{"setWeight": 10}, {"pause": {}}, {"setWeight": 60}])
    state = machine.tick(spec, machine.start(spec, 0.0), PASS, 1.0)
    assert (state.step, state.weight) == (1, 10)
    paused = machine.pause(spec, state, 2.0)
    assert paused.phase == machine.PAUSED and not machine.due(paused, 100.0)
    resumed = machine.resume(spec, paused, 3.0)
    assert resumed.phase == machine.PROGRESSING and resumed.next_at == 4.0
    promoted = machine.promote(spec, resumed, 4.0)
    assert (promoted.step, promoted.weight) == (2, 60)
    full = machine.promote(spec, resumed, 4.0, full=True)
    assert (full.phase, full.weight, full.route_form()) == (machine.SUCCEEDED, 100, "canary")
    aborted = machine.abort(spec, promoted, 5.0)
    assert aborted.phase == machine.ROLLING_BACK and aborted.rollback_plan == [10, 0]
    done = machine.tick(spec, machine.tick(spec, aborted, None, 5.0), None, 6.0)
    assert (done.phase, done.weight, done.route_form()) == (machine.ABORTED, 0, "stable")
    retried = machine.resume(spec, done, 7.0)  # resume retries an aborted rollout from its first step
    assert (retried.phase, retried.step, retried.weight) == (machine.PROGRESSING, 0, 10)
    with pytest.raises(machine.CommandError, match="cannot promote a rollout that is Aborted"):
        machine.promote(spec, done, 8.0)
    with pytest.raises(machine.CommandError, match="Succeeded"):
        machine.abort(spec, full, 8.0)
    with pytest.raises(machine.CommandError):
        machine.resume(spec, promoted, 8.0)


def test_state_round_trips_through_json() -> None:
    state, _ = drive({}, [PASS, FAIL])
    assert machine.RolloutState.from_json(state.to_json()) == state
