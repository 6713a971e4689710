"""The progress display of `shiftproxy rollout status`."""

from __future__ import annotations

from typing import Any

from proxy.rollout.cli import render_list, render_status

STATUS: dict[str, Any] = {
    "name": "reviews-v3", "namespace": "default", "virtualService": "reviews", "route": "http[0]",
    "stable": "v1", "canary": "v3", "phase": "RollingBack", "step": 1,
    "steps": ["setWeight 10", "setWeight 50", "setWeight 100"], "canaryWeight": 25, "failures": 2,
    "failureLimit": 2, "message": "canary weight 25", "problem": "", "startedAt": 100.0,
    "lastVerdict": {"result": "fail", "reason": "successRate 70% < min 99%"},
    "analysis": {"interval": 1.0, "minRequests": 20, "successRateMin": 99.0, "latencyPercentile": 99.0,
                 "latencyMaxMs": None},
    "history": [
        {"at": 100.0, "event": "setWeight", "weight": 10, "message": "step 1/3: canary weight 10"},
        {"at": 103.5, "event": "analysis", "weight": 50, "message": "gate failed (2/2): successRate 70% < min 99%",
         "decision": "fail", "canary": {"requests": 40, "failures": 12, "successRate": 70.0, "p99Ms": 12.5},
         "stable": {"requests": 40, "failures": 0, "successRate": 100.0, "p99Ms": None}},
    ],
}


def test_status_shows_traffic_steps_gates_and_the_values_behind_decisions() -> None:
    text = render_status(STATUS)
    assert "traffic:  v1  75%  [#####...............]  v3  25%" in text
    assert "    ✔ 1. setWeight 10\n    ▶ 2. setWeight 50\n      3. setWeight 100" in text
    assert "every 1s, minRequests 20, successRate >= 99%; failures 2/2" in text
    assert "last:     fail: successRate 70% < min 99%" in text
    assert "+3.5s  analysis" in text
    assert "canary 40 req, 12 failed, success 70%, p99 12.5 ms | stable 40 req, 0 failed, success 100%" in text
    assert "history" not in render_status(STATUS, history=0)


def test_list() -> None:
    text = render_list([STATUS, {"namespace": "default", "name": "other", "phase": "Waiting",
                                 "problem": "waiting for VirtualService default/x"}])
    lines = text.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "PHASE", "STEP", "CANARY", "WEIGHT", "MESSAGE"]
    assert lines[1].split()[:5] == ["default", "reviews-v3", "RollingBack", "2/3", "25"]
    assert lines[2].split()[:4] == ["default", "other", "Waiting", "-"] and lines[2].endswith("default/x")
    assert render_list([]) == "No rollouts.\n"
