"""`run --workers 2`: a change made by any means is live in every worker once it is reported live.

For each way to change the config (a file write, SIGHUP, `POST /reload`, `POST /apply`) the route of
reviews flips between v1 and v3; as soon as the change returns (the answer, or worker 0's config
version moving on), requests on fresh connections, which the kernel spreads over both workers, must all
see the new version. SIGHUP and `POST /reload` run with `--no-watch`, so nothing else reloads.

Rounds per method: $SHIFTPROXY_RELOAD_ROUNDS (default 10, to stay short on a small CI machine; run
with 100 for the full check).
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import Client, ProxyProcess, Upstream, service_entry, write_atomic
from tests.e2e.test_workers import requests_by_version
from tests.paths import BOOKINFO_NET

ROUNDS = int(os.environ.get("SHIFTPROXY_RELOAD_ROUNDS", "10"))
PER_ROUND = 4  # requests, each on its own connection, after every change
V1 = (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text().replace("subset: v3", "subset: v1")


def route_to(version: str) -> str:
    return V1.replace("subset: v1", f"subset: {version}")


@pytest.fixture
def config_dir(tmp_path: Path, reviews: dict[str, Upstream]) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "reviews-service-entry.yaml").write_text(
        service_entry("reviews", 9080, [(u.port, v) for v, u in reviews.items()]))
    (d / "destination-rule.yaml").write_text((BOOKINFO_NET / "destination-rule-all.yaml").read_text())
    (d / "reviews-vs.yaml").write_text(V1)
    return d


def post(proxy: ProxyProcess, path: str, body: bytes = b"") -> dict[str, object]:
    request = urllib.request.Request(f"{proxy.admin}{path}", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def wait_past(proxy: ProxyProcess, version: int) -> None:
    """Until worker 0 reports a version above `version` (bounded)."""
    deadline = time.monotonic() + 20
    while proxy.version() <= version:
        assert time.monotonic() < deadline, f"no reload after version {version}:\n{proxy.log()[-3000:]}"
        time.sleep(0.01)


async def stale_after_each(proxy: ProxyProcess, change: Callable[[str], None]) -> Counter[str]:
    """ROUNDS changes alternating v3 / v1; after each returns, PER_ROUND requests on fresh connections.
    Returns the versions seen that were not the one just made live."""
    stale: Counter[str] = Counter()
    for i in range(ROUNDS):
        want = "v3" if i % 2 == 0 else "v1"
        change(want)
        for _ in range(PER_ROUND):
            client = Client(proxy.mesh_port)
            resp = await client.request("GET", "http://reviews:9080/reviews/0", "reviews:9080")
            await client.close()
            got = resp.json()["version"] if resp.status == 200 else f"status {resp.status}"
            if got != want:
                stale[f"{want}: got {got}"] += 1
    return stale


async def test_every_reload_method_is_live_in_every_worker_when_it_returns(config_dir: Path) -> None:
    vs = config_dir / "reviews-vs.yaml"
    watching = ProxyProcess(config_dir, ["--workers", "2", "--access-log", "off"]).start()
    try:
        def file_write(version: str) -> None:
            before = watching.version()
            write_atomic(vs, route_to(version))
            wait_past(watching, before)

        def apply(version: str) -> None:
            answer = post(watching, "/apply", route_to(version).encode())
            assert answer["changed"] is True and not answer["warnings"], answer

        assert await stale_after_each(watching, file_write) == Counter()
        assert await stale_after_each(watching, apply) == Counter()
        # both workers took part (all on one worker: probability 2^-(2 * ROUNDS * PER_ROUND - 1))
        local, total = requests_by_version(watching, "/metrics?local=1"), requests_by_version(watching)
        assert 0 < sum(local.values()) < sum(total.values()) == 2 * ROUNDS * PER_ROUND
    finally:
        assert watching.stop() == 0
    write_atomic(vs, V1)

    # a state directory of its own: the objects applied above would hide the file's route
    quiet = ProxyProcess(config_dir, ["--workers", "2", "--access-log", "off", "--no-watch",
                                      "--state-dir", str(config_dir.parent / "quiet-state")]).start()
    assert quiet.proc is not None
    try:
        def sighup(version: str) -> None:
            before = quiet.version()
            write_atomic(vs, route_to(version))
            os.kill(quiet.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
            wait_past(quiet, before)

        def reload(version: str) -> None:
            write_atomic(vs, route_to(version))
            answer = post(quiet, "/reload")
            assert answer["changed"] is True and not answer["warnings"], answer

        assert await stale_after_each(quiet, sighup) == Counter()
        assert await stale_after_each(quiet, reload) == Counter()
        local, total = requests_by_version(quiet, "/metrics?local=1"), requests_by_version(quiet)
        assert 0 < sum(local.values()) < sum(total.values())
    finally:
        assert quiet.stop() == 0
