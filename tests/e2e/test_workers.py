"""`run --workers 2`: two processes share the listener; one admin answers for both."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Client, ProxyProcess, Upstream, service_entry
from tests.paths import BOOKINFO_NET, ROOT


async def fresh_connection_versions(port: int, n: int) -> Counter[str]:
    """n requests, each on its own connection, so the kernel spreads them over the workers."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        client = Client(port)
        resp = await client.request("GET", "http://reviews:9080/reviews/0", "reviews:9080")
        seen[resp.json()["version"]] += 1
        await client.close()
    return seen


def requests_by_version(proxy: ProxyProcess, path: str = "/metrics") -> Counter[str]:
    with urllib.request.urlopen(f"{proxy.admin}{path}", timeout=10) as resp:
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "istio_requests":
            for s in family.samples:
                if s.name == "istio_requests_total":
                    out[s.labels["destination_version"]] += int(s.value)
    return out


async def test_two_workers_share_listeners_metrics_and_changes(tmp_path: Path,
                                                               reviews: dict[str, Upstream]) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "se.yaml").write_text(service_entry("reviews", 9080, [(u.port, v) for v, u in reviews.items()]))
    shutil.copy(BOOKINFO_NET / "destination-rule-all.yaml", config)
    shutil.copy(BOOKINFO_NET / "virtual-service-all-v1.yaml", config)
    proxy = ProxyProcess(config, ["--workers", "2", "--access-log", "off"]).start()
    assert proxy.proc is not None
    try:
        workers = psutil.Process(proxy.proc.pid).children()
        assert len(workers) == 2
        assert await fresh_connection_versions(proxy.mesh_port, 200) == Counter(v1=200)
        # the kernel spread the connections (all 200 on one worker has probability 2^-199)
        first_worker = requests_by_version(proxy, "/metrics?local=1")["v1"]
        assert 0 < first_worker < 200
        assert requests_by_version(proxy) == Counter(v1=200)  # one scrape counts both workers

        env = {**os.environ, "SHIFTPROXY_ADMIN": f"127.0.0.1:{proxy.admin_port}"}
        out = subprocess.run([sys.executable, "-m", "proxy", "apply", "-f",
                              str(BOOKINFO_NET / "virtual-service-reviews-v3.yaml")],
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        # live in every worker when apply returned: no request may still see v1
        assert await fresh_connection_versions(proxy.mesh_port, 200) == Counter(v3=200)
        assert requests_by_version(proxy) == Counter(v1=200, v3=200)
    finally:
        assert proxy.stop() == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
