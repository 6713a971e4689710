"""`run --workers 2`: worker 0 runs the rollout, and its analysis counts every worker's traffic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import Client, ProxyProcess
from tests.e2e.rollout_harness import Backend, rollout_yaml, route_of, wait_for, weights, write_config
from tests.e2e.test_workers import requests_by_version

N = 200


@pytest.fixture
async def backends() -> AsyncIterator[tuple[Backend, Backend]]:
    v1, v2 = await Backend("v1").start(), await Backend("v2").start()
    yield v1, v2
    await v1.close()
    await v2.close()


def analysed(status: dict, version: str) -> int:  # type: ignore[type-arg]
    """Requests the rollout's analysis windows counted for `version` (canary v2, stable v1)."""
    side = "canary" if version == "v2" else "stable"
    return sum(e[side]["requests"] for e in status["history"] if e["event"] == "analysis")


async def test_analysis_counts_every_worker(tmp_path: Path, backends: tuple[Backend, Backend]) -> None:
    config = tmp_path / "config"
    write_config(config, *backends)
    steps = "  - setWeight: 50\n  - pause: {}"
    (config / "rollout.yaml").write_text(rollout_yaml("reviews-v2", steps, "    interval: 0.3s"))
    proxy = ProxyProcess(config, ["--workers", "2", "--access-log", "off", "--state-dir",
                                  str(tmp_path / "state")]).start()
    try:
        await wait_for(proxy, "reviews-v2", lambda s: s["canaryWeight"] == 50)
        assert weights(route_of(proxy)) == {"v1": 50, "v2": 50}
        for _ in range(N):  # each on its own connection, so the kernel spreads them over the workers
            client = Client(proxy.mesh_port)
            assert (await client.request("GET", "http://reviews:9080/", "reviews:9080")).status == 200
            await client.close()
        await asyncio.sleep(0.1)
        total = requests_by_version(proxy)
        local = requests_by_version(proxy, "/metrics?local=1")
        assert sum(total.values()) == N and 0 < sum(local.values()) < N  # both workers served some
        # the windows are contiguous from the start: once the last one closes they add up to every request
        final = await wait_for(proxy, "reviews-v2", lambda s: analysed(s, "v2") + analysed(s, "v1") >= N, timeout=20)
        assert (analysed(final, "v2"), analysed(final, "v1")) == (total["v2"], total["v1"])
    finally:
        proxy.stop()
