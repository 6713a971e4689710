"""Rollouts end to end: the real proxy process, real v1/v2 backends, traffic through the sidecar, and the
rollout driven by the proxy's own metrics (short intervals, so each test takes seconds)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import ProxyProcess
from tests.e2e.rollout_harness import (
    ALL_V1,
    Backend,
    Load,
    admin,
    rollout_yaml,
    route_of,
    status,
    wait_for,
    weights,
    write_config,
)
from tests.paths import ROOT

STEPS = "  - setWeight: 10\n  - setWeight: 25\n  - setWeight: 50\n  - setWeight: 100"
GATES = """    interval: 0.4s
    minRequests: 10
    successRate: {min: 95}
    latency: {percentile: 99, maxMs: 2000}
    failureLimit: 2"""


@pytest.fixture
async def backends() -> AsyncIterator[tuple[Backend, Backend]]:
    v1, v2 = await Backend("v1").start(), await Backend("v2").start()
    yield v1, v2
    await v1.close()
    await v2.close()


def start_proxy(tmp_path: Path, backends: tuple[Backend, Backend], rollout: str) -> ProxyProcess:
    config = tmp_path / "config"
    write_config(config, *backends)
    (config / "rollout.yaml").write_text(rollout)
    return ProxyProcess(config, ["--access-log", "off", "--state-dir", str(tmp_path / "state")]).start()


def cli(proxy: ProxyProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", "rollout", *args, "--admin", f"127.0.0.1:{proxy.admin_port}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)


def events(s: dict, name: str) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in s["history"] if e["event"] == name]


async def test_healthy_canary_is_promoted_step_by_step(tmp_path: Path, backends: tuple[Backend, Backend]) -> None:
    proxy = start_proxy(tmp_path, backends, rollout_yaml("reviews-v2", STEPS, GATES))
    load = Load(proxy).start()
    try:
        final = await wait_for(proxy, "reviews-v2", lambda s: s["phase"] in ("Succeeded", "RolledBack"))
    finally:
        await load.stop()
    try:
        assert final["phase"] == "Succeeded", final
        assert [e["weight"] for e in events(final, "setWeight")] == [10, 25, 50, 100]
        passes = [e for e in events(final, "analysis") if e["decision"] == "pass"]
        assert len(passes) >= 4  # each setWeight waited for a passing interval
        for entry in passes:  # the values each decision used are kept
            assert entry["canary"]["requests"] >= 10
            assert entry["canary"]["successRate"] == 100.0
            assert {g["gate"] for g in entry["gates"]} == {"successRate", "latency p99"}
        # the live route went through the same path as apply: served, listed and persisted
        assert weights(route_of(proxy)) == {"v2": 100}
        dumped = [o for o in proxy.config_dump()["objects"] if o["kind"] == "VirtualService"]
        assert dumped[0]["spec"]["http"][0]["route"] == [{"destination": {"host": "reviews", "subset": "v2"}}]
        assert (tmp_path / "state" / "applied" / "virtualservice_default_reviews.yaml").exists()
        assert (tmp_path / "state" / "rollouts" / "rollout_default_reviews-v2.json").exists()
        assert set(load.statuses) == {200} and load.error is None
        # a finished rollout leaves later changes to its route alone
        code, _ = admin_apply(proxy, ALL_V1)
        assert code == 200
        await asyncio.sleep(1.2)  # three analysis intervals
        assert weights(route_of(proxy)) == {"v1": 100}
        metrics = scrape(proxy)
        assert 'shiftproxy_rollout_phase{namespace="default",phase="Succeeded",rollout="reviews-v2"} 1.0' in metrics
        assert 'shiftproxy_rollout_canary_weight{namespace="default",rollout="reviews-v2"} 100.0' in metrics
        listed = subprocess.run([sys.executable, "-m", "proxy", "get", "rollout", "--admin",
                                 f"127.0.0.1:{proxy.admin_port}"], capture_output=True, text=True, cwd=ROOT)
        assert listed.stdout.splitlines()[1].split()[:3] == ["reviews-v2", "reviews", "v1->v2"], listed.stderr
    finally:
        proxy.stop()


def admin_apply(proxy: ProxyProcess, text: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{proxy.admin}/apply", data=text.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        return resp.status, resp.read()


async def test_rollout_waits_for_its_virtual_service(tmp_path: Path, backends: tuple[Backend, Backend]) -> None:
    config = tmp_path / "config"
    write_config(config, *backends)
    (config / "reviews.yaml").write_text((config / "reviews.yaml").read_text().replace("---\n" + ALL_V1, ""))
    (config / "rollout.yaml").write_text(rollout_yaml("reviews-v2", STEPS, GATES))
    proxy = ProxyProcess(config, ["--access-log", "off", "--state-dir", str(tmp_path / "state")]).start()
    try:
        waiting = status(proxy, "reviews-v2")
        assert waiting["phase"] == "Waiting" and "waiting for VirtualService default/reviews" in waiting["problem"]
        assert admin_apply(proxy, ALL_V1)[0] == 200
        started = await wait_for(proxy, "reviews-v2", lambda s: s["canaryWeight"] == 10)
        assert started["phase"] == "Progressing"
        assert weights(route_of(proxy)) == {"v1": 90, "v2": 10}
    finally:
        proxy.stop()


def scrape(proxy: ProxyProcess) -> str:
    with urllib.request.urlopen(f"{proxy.admin}/metrics", timeout=5) as resp:
        return resp.read().decode()


async def test_canary_with_30_percent_5xx_rolls_back_in_steps(tmp_path: Path,
                                                              backends: tuple[Backend, Backend]) -> None:
    backends[1].fail_in_ten = 3
    rollback = "  rollback: {stepWeight: 4, interval: 0.3s}"
    proxy = start_proxy(tmp_path, backends, rollout_yaml("reviews-v2", STEPS, GATES, rollback))
    load = Load(proxy).start()
    try:
        final = await wait_for(proxy, "reviews-v2", lambda s: s["phase"] in ("Succeeded", "RolledBack"))
        route = route_of(proxy)
    finally:
        await load.stop()
    try:
        assert final["phase"] == "RolledBack", final
        assert [e["weight"] for e in events(final, "setWeight")] == [10]  # never promoted past the first step
        failed = [e for e in events(final, "analysis") if e["decision"] == "fail"]
        assert len(failed) == 2 and final["failures"] == 2
        for entry in failed:
            canary = entry["canary"]
            assert canary["requests"] >= 10
            # exactly 3 of every 10 requests v2 gets fail: a window of n has 0.3n +- 3 failures
            assert abs(canary["failures"] - 0.3 * canary["requests"]) <= 3
            gate = next(g for g in entry["gates"] if g["gate"] == "successRate")
            assert gate["ok"] is False and gate["value"] < 95
            assert gate["value"] == round(100 * (canary["requests"] - canary["failures"]) / canary["requests"], 2)
        # ramped back in steps of 4 (10 -> 6 -> 2 -> 0), not snapped to the stable at once
        assert [e["weight"] for e in events(final, "rollbackStep")] == [6, 2, 0]
        assert weights(route) == {"v1": 100}
        assert "successRate" in final["lastVerdict"]["reason"]
        shown = cli(proxy, "status", "reviews-v2", "--history", "30")
        assert shown.returncode == 0, shown.stderr
        assert "RolledBack" in shown.stdout and "gate failed" in shown.stdout
        assert f"success {failed[-1]['canary']['successRate']:g}%" in shown.stdout
    finally:
        proxy.stop()


async def test_too_few_requests_waits_instead_of_deciding(tmp_path: Path,
                                                          backends: tuple[Backend, Backend]) -> None:
    gates = GATES.replace("minRequests: 10", "minRequests: 20")
    proxy = start_proxy(tmp_path, backends, rollout_yaml("reviews-v2", STEPS, gates))
    try:
        waiting = await wait_for(proxy, "reviews-v2", lambda s: len(
            [e for e in s["history"] if e.get("decision") == "wait"]) >= 3)
        assert waiting["phase"] == "Progressing" and waiting["canaryWeight"] == 10 and waiting["failures"] == 0
        assert all(e.get("decision") in (None, "wait") for e in waiting["history"])
        assert "fewer than minRequests 20" in waiting["lastVerdict"]["reason"]
        assert weights(route_of(proxy)) == {"v1": 90, "v2": 10}
        load = Load(proxy).start()
        try:  # with traffic, the same rollout decides and moves on
            moved = await wait_for(proxy, "reviews-v2", lambda s: s["canaryWeight"] >= 25)
        finally:
            await load.stop()
        assert any(e.get("decision") == "pass" for e in moved["history"])
    finally:
        proxy.stop()


async def test_restart_mid_rollout_resumes_it(tmp_path: Path, backends: tuple[Backend, Backend]) -> None:
    steps = "  - setWeight: 10\n  - pause: {}\n  - setWeight: 50\n  - setWeight: 100"
    proxy = start_proxy(tmp_path, backends, rollout_yaml("reviews-v2", steps, GATES))
    load = Load(proxy).start()
    try:
        await wait_for(proxy, "reviews-v2", lambda s: s["step"] == 1 and s["phase"] == "Progressing")
    finally:
        await load.stop()
    proxy.stop()
    restarted = ProxyProcess(proxy.config_dir, proxy.extra_args).start()
    try:
        resumed = status(restarted, "reviews-v2")
        assert (resumed["phase"], resumed["step"], resumed["canaryWeight"]) == ("Progressing", 1, 10)
        assert any(e["message"] == "resumed after a proxy restart" for e in resumed["history"])
        assert events(resumed, "start") and len(events(resumed, "start")) == 1  # not started over
        assert weights(route_of(restarted)) == {"v1": 90, "v2": 10}
        promoted = cli(restarted, "promote", "reviews-v2")
        assert promoted.returncode == 0, promoted.stderr
        assert "canary weight 50" in promoted.stdout
        load = Load(restarted).start()
        try:
            final = await wait_for(restarted, "reviews-v2", lambda s: s["phase"] in ("Succeeded", "RolledBack"))
        finally:
            await load.stop()
        assert final["phase"] == "Succeeded"
        assert [e["weight"] for e in events(final, "setWeight")] == [10, 50, 100]
    finally:
        restarted.stop()


async def test_pause_resume_abort(tmp_path: Path, backends: tuple[Backend, Backend]) -> None:
    steps = "  - setWeight: 10\n  - setWeight: 25\n  - pause: {}\n  - setWeight: 50\n  - setWeight: 100"
    proxy = start_proxy(tmp_path, backends, rollout_yaml("reviews-v2", steps, GATES,
                                                         "  rollback: {interval: 0.3s}"))
    load = Load(proxy).start()
    try:
        await wait_for(proxy, "reviews-v2", lambda s: s["step"] == 1)
        paused = cli(proxy, "pause", "reviews-v2")
        assert paused.returncode == 0, paused.stderr
        held = status(proxy, "reviews-v2")
        assert held["phase"] == "Paused"
        decisions = len(events(held, "analysis"))
        await asyncio.sleep(1.5)  # several intervals: a paused rollout holds its weight and decides nothing
        after = status(proxy, "reviews-v2")
        assert (after["phase"], after["step"], len(events(after, "analysis"))) == ("Paused", held["step"], decisions)
        assert weights(route_of(proxy)) == {"v1": 100 - held["canaryWeight"], "v2": held["canaryWeight"]}
        assert cli(proxy, "resume", "reviews-v2").returncode == 0
        at_pause = await wait_for(proxy, "reviews-v2", lambda s: s["step"] == 2)  # pause until promoted
        assert at_pause["phase"] == "Progressing" and at_pause["canaryWeight"] == 25
        aborted = cli(proxy, "abort", "reviews-v2")
        assert aborted.returncode == 0, aborted.stderr
        final = await wait_for(proxy, "reviews-v2", lambda s: s["phase"] == "Aborted")
        assert [e["weight"] for e in events(final, "rollbackStep")] == [10, 0]  # the steps in reverse
        assert weights(route_of(proxy)) == {"v1": 100}
        code, answer = admin(proxy, "POST", "/rollouts/promote", name="reviews-v2")
        assert code == 409 and "Aborted" in answer["error"]
        code, answer = admin(proxy, "POST", "/rollouts/abort", name="nope")
        assert code == 404
        again = cli(proxy, "promote", "nope")
        assert again.returncode == 1 and "not found" in again.stderr
    finally:
        await load.stop()
        proxy.stop()


async def test_the_proxy_serving_the_route_drives_it(tmp_path: Path, backends: tuple[Backend, Backend]) -> None:
    """A gateway and a sidecar on one config and state directory: the sidecar routes the mesh-bound
    reviews, so it runs the rollout; the gateway says why it does not, and the CLI finds the driver."""
    config = tmp_path / "config"
    write_config(config, *backends)
    (config / "rollout.yaml").write_text(rollout_yaml("reviews-v2", STEPS, GATES))
    state = ["--access-log", "off", "--state-dir", str(tmp_path / "state")]
    sidecar = ProxyProcess(config, ["--role", "mesh", *state]).start()
    gateway = ProxyProcess(config, ["--role", "gateway", *state]).start()
    try:
        driving = await wait_for(sidecar, "reviews-v2", lambda s: s["phase"] == "Progressing")
        assert driving["canaryWeight"] == 10
        idle = status(gateway, "reviews-v2")
        assert idle["phase"] == "Waiting" and "does not serve VirtualService default/reviews" in idle["problem"]
        shown = subprocess.run([sys.executable, "-m", "proxy", "rollout", "status", "reviews-v2", "--admin",
                                f"127.0.0.1:{gateway.admin_port},127.0.0.1:{sidecar.admin_port}"],
                               capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert "phase:    Progressing" in shown.stdout, shown.stdout + shown.stderr
    finally:
        gateway.stop()
        sidecar.stop()
