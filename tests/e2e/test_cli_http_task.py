"""The seed's HTTP traffic-shifting task through the CLI, exactly as a user types it.

A real `shiftproxy run` process, three real reviews versions, and `python -m proxy apply|get|explain|delete`
run as subprocesses against its admin API with the seed's files. After every step the split the client
observed and `istio_requests_total` by `destination_version` (the delta since the previous step) agree
exactly, and the config version the CLI printed is the one serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Client, ProxyProcess, Upstream, service_entry
from tests.paths import BOOKINFO_NET, ROOT
from tests.stats import binomial_interval

N = 1000  # requests for the weighted step


def start_proxy(config_dir: Path) -> ProxyProcess:
    return ProxyProcess(config_dir, ["--access-log", "off"]).start()


@dataclass
class Run:
    code: int
    out: str
    err: str


def sample(name: str) -> str:
    """The seed's file as a user in the repository names it: ../shared/istio-samples/…"""
    return os.path.relpath(BOOKINFO_NET / name, ROOT)


async def shiftproxy(proxy: ProxyProcess, *args: str) -> Run:
    env = {**os.environ, "SHIFTPROXY_ADMIN": f"127.0.0.1:{proxy.admin_port}"}
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy", *args, cwd=ROOT, env=env,
                                                stdout=pipe, stderr=pipe)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def requests_by_version(proxy: ProxyProcess) -> Counter[str]:
    with urllib.request.urlopen(f"{proxy.admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "istio_requests_total" and s.labels["destination_service_name"] == "reviews":
                counts[s.labels["destination_version"]] += int(s.value)
    return counts


async def metrics_delta(proxy: ProxyProcess, before: Counter[str], sent: int) -> Counter[str]:
    """istio_requests_total by version minus `before`, once all `sent` requests are counted (bounded wait)."""
    for _ in range(100):
        now = requests_by_version(proxy)
        delta = Counter({v: now[v] - before[v] for v in now if now[v] - before[v]})
        if sum(delta.values()) >= sent:
            return delta
        await asyncio.sleep(0.05)
    return delta


async def split(port: int, n: int) -> Counter[str]:
    """n requests over one keep-alive connection to the sidecar: `GET http://reviews:9080/reviews/0`."""
    client = Client(port)
    seen: Counter[str] = Counter()
    for _ in range(n):
        resp = await client.request("GET", "http://reviews:9080/reviews/0", "reviews:9080")
        seen[resp.json()["version"] if resp.status == 200 else f"status {resp.status}"] += 1
    await client.close()
    return seen


@pytest.fixture
def config_dir(tmp_path: Path, reviews: dict[str, Upstream]) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "reviews-service-entry.yaml").write_text(
        service_entry("reviews", 9080, [(u.port, v) for v, u in reviews.items()]))
    shutil.copy(BOOKINFO_NET / "destination-rule-all.yaml", d)
    return d


async def test_seed_http_task_with_the_cli(config_dir: Path, tmp_path: Path) -> None:
    proxy = start_proxy(config_dir)
    try:
        start_version = proxy.version()
        counted = requests_by_version(proxy)

        async def step(n: int) -> Counter[str]:
            """Traffic, then the metric delta; they must agree exactly."""
            nonlocal counted
            seen = await split(proxy.mesh_port, n)
            delta = await metrics_delta(proxy, counted, n)
            assert delta == seen, (seen, delta)
            counted = requests_by_version(proxy)
            return seen

        # 1. everything to v1
        run = await shiftproxy(proxy, "apply", "-f", sample("virtual-service-all-v1.yaml"))
        assert run.code == 0, run.err
        lines = run.out.splitlines()
        assert lines[:4] == [f"virtualservice.networking.istio.io/{name} created"
                             for name in ("productpage", "reviews", "ratings", "details")]
        assert lines[4] == f"serving config version {start_version + 1}"
        assert proxy.version() == start_version + 1  # live when the command returned
        assert await step(200) == Counter(v1=200)

        # 2. half to v3
        run = await shiftproxy(proxy, "apply", "-f", sample("virtual-service-reviews-50-v3.yaml"))
        assert run.code == 0, run.err
        assert run.out.splitlines() == ["virtualservice.networking.istio.io/reviews configured",
                                        f"serving config version {start_version + 2}"]
        run = await shiftproxy(proxy, "get", "virtualservice", "reviews", "-o", "yaml")
        assert run.code == 0, run.err
        shown = yaml.safe_load(run.out)
        seed = yaml.safe_load((BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml").read_text())
        assert shown == {**seed, "metadata": {**seed["metadata"], "namespace": "default"}}

        request = ("--authority", "reviews:9080", "--path", "/reviews/0")
        run = await shiftproxy(proxy, "explain", *request, "-o", "json")
        assert run.code == 0, run.err
        shares = {d["subset"]: d["probability"] for d in json.loads(run.out)["route"]["destinations"]}
        assert shares == {"v1": 0.5, "v3": 0.5}
        text = await shiftproxy(proxy, "explain", *request)
        assert " 50.0%  reviews.default.svc.cluster.local:9080 subset v1" in text.out
        assert " 50.0%  reviews.default.svc.cluster.local:9080 subset v3" in text.out

        seen = await step(N)
        assert set(seen) == {"v1", "v3"}
        lo, hi = binomial_interval(N, shares["v3"])  # fails with probability < 1e-6 at the explained share
        assert lo <= seen["v3"] <= hi, (seen, (lo, hi))

        # an invalid change: every error printed, exit 1, nothing changes
        bad = tmp_path / "reviews-negative.yaml"
        bad.write_text((BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml").read_text()
                       .replace("weight: 50", "weight: -50"))
        weight_lines = [i for i, line in enumerate(bad.read_text().splitlines(), 1) if "weight:" in line]
        version = proxy.version()
        run = await shiftproxy(proxy, "apply", "-f", str(bad))
        assert run.code == 1
        assert run.err.splitlines()[:2] == [
            f"{bad}:{weight_lines[0]}: spec.http[0].route[0].weight: weight -50 < 0",
            f"{bad}:{weight_lines[1]}: spec.http[0].route[1].weight: weight -50 < 0"]
        assert f"still serving config version {version}" in run.err
        assert run.out == "" and proxy.version() == version
        still = await shiftproxy(proxy, "get", "vs", "reviews", "-o", "yaml")
        assert yaml.safe_load(still.out)["spec"] == seed["spec"]

        # 3. everything to v3
        run = await shiftproxy(proxy, "apply", "-f", sample("virtual-service-reviews-v3.yaml"))
        assert run.code == 0, run.err
        assert run.out.splitlines()[0] == "virtualservice.networking.istio.io/reviews configured"
        assert await step(200) == Counter(v3=200)

        # 4. delete: no VirtualService for reviews, so the default route reaches every version
        run = await shiftproxy(proxy, "delete", "-f", sample("virtual-service-all-v1.yaml"))
        assert run.code == 0, run.err
        assert run.out.splitlines() == [f"virtualservice.networking.istio.io/{name} deleted"
                                        for name in ("productpage", "reviews", "ratings", "details")] + [
            f"serving config version {start_version + 4}"]
        # each request picks one of 3 endpoints uniformly; P(a version unseen in 300) <= 3 * (2/3)^300 < 1e-6
        seen = await step(300)
        assert set(seen) == {"v1", "v2", "v3"}, seen
        run = await shiftproxy(proxy, "get", "vs")
        assert (run.code, run.out, run.err) == (0, "", "No resources found in default namespace.\n")

        # the file watcher saw every write above; identical content never made another version
        assert proxy.version() == start_version + 4
        assert sorted(os.listdir(config_dir)) == ["destination-rule-all.yaml", "reviews-service-entry.yaml"]
        assert proxy.stop() == 0
    finally:
        proxy.stop()


async def test_cli_says_when_no_proxy_is_running(tmp_path: Path) -> None:
    proxy = ProxyProcess(tmp_path)  # never started: nothing listens on its admin port
    run = await shiftproxy(proxy, "get", "vs")
    assert run.code == 1 and run.out == ""
    assert run.err.startswith("error: cannot reach the shiftproxy admin API at "
                              f"127.0.0.1:{proxy.admin_port}: is `shiftproxy run` running?")
    assert len(run.err.splitlines()) == 1
