"""Never shift onto an empty version: a weighted destination with no healthy endpoint gives its share to
the route's other destinations (flag ED, a gauge per route), unless the VirtualService asks for Istio's
503 UH. The real proxy, real upstreams, one of them killed under load."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.harness import Client, ProxyProcess, Upstream, service_entry
from tests.stats import binomial_interval

ROUTE = "default/reviews#0"


@dataclass
class KillableUpstream(Upstream):
    """An upstream that can die: stop listening and reset every connection it has."""

    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await super()._serve(reader, writer)
        finally:
            self.writers.discard(writer)

    async def kill(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()


def destination_rule(v2_labels: str = "version: v2", outlier: bool = False) -> str:
    policy = ("  trafficPolicy:\n    outlierDetection: {consecutiveGatewayErrors: 1, interval: 1s, "
              "baseEjectionTime: 10m, maxEjectionPercent: 100}\n") if outlier else ""
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
{policy}  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{{v2_labels}}}}}
"""


def virtual_service(mode: str | None = None) -> str:
    annotations = f"\n  annotations: {{shiftproxy.io/empty-destination: {mode}}}" if mode else ""
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews{annotations}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: 50
    - destination: {{host: reviews, subset: v2}}
      weight: 50
"""


async def load(port: int, n: int, clients: int = 4) -> Counter[str]:
    seen: Counter[str] = Counter()

    async def worker(count: int) -> None:
        client = Client(port)
        for _ in range(count):
            resp = await client.request("GET", "http://reviews:9080/", "reviews:9080")
            seen[resp.json()["version"] if resp.status == 200 else f"{resp.status} {resp.body.decode()}"] += 1
        await client.close()

    await asyncio.gather(*(worker(n // clients) for _ in range(clients)))
    return seen


def metric(proxy: ProxyProcess, name: str) -> float:
    with urllib.request.urlopen(f"{proxy.admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(rf'^{name}{{route="{re.escape(ROUTE)}"}} (\S+)$', text, re.M)
    assert found, f"no {name} for {ROUTE}"
    return float(found.group(1))


def access_flags(proxy: ProxyProcess) -> Counter[str]:
    return Counter(json.loads(line)["response_flags"] for line in proxy.log().splitlines()
                   if line.startswith("{") and '"response_flags"' in line)


@pytest.fixture
async def upstreams() -> dict[str, KillableUpstream]:
    ups = {v: await KillableUpstream(v).start() for v in ("v1", "v2")}
    yield ups  # type: ignore[misc]
    for u in ups.values():
        await u.close()


def write_config(d: Path, ups: dict[str, KillableUpstream], dr: str, vs: str) -> Path:
    d.mkdir(exist_ok=True)
    (d / "se.yaml").write_text(service_entry("reviews", 9080, [(u.port, v) for v, u in ups.items()]))
    (d / "dr.yaml").write_text(dr)
    (d / "vs.yaml").write_text(vs)
    return d


@pytest.mark.parametrize("outlier", [False, True], ids=["connect-failing", "ejected"])
async def test_killing_every_v2_endpoint_fails_no_request(tmp_path: Path, upstreams: dict[str, KillableUpstream],
                                                          outlier: bool) -> None:
    config = write_config(tmp_path / "config", upstreams, destination_rule(outlier=outlier), virtual_service())
    proxy = ProxyProcess(config, ["--access-log", "json"]).start()
    try:
        before = await load(proxy.mesh_port, 400)
        lo, hi = binomial_interval(400, 0.5)
        assert sum(before.values()) == 400 and lo <= before["v2"] <= hi, before
        assert metric(proxy, "shiftproxy_route_empty_destinations") == 0
        await upstreams["v2"].kill()  # between requests: its pooled connections die with it
        after = await load(proxy.mesh_port, 400)
        assert after == Counter(v1=400), after  # 0 failed requests, all on v1
        moved = metric(proxy, "shiftproxy_route_empty_destination_moved_total")
        assert moved >= 1
        if outlier:  # ejected for 10 minutes: the gauge says so for as long
            assert metric(proxy, "shiftproxy_route_empty_destinations") == 1
        proxy.stop()
        flags = access_flags(proxy)
        assert flags["ED"] == moved and flags["-"] == 800 - moved, flags
    finally:
        proxy.stop()


async def test_a_subset_with_no_endpoints_gets_no_share(tmp_path: Path,
                                                        upstreams: dict[str, KillableUpstream]) -> None:
    config = write_config(tmp_path / "config", upstreams, destination_rule("version: v9"), virtual_service())
    out = subprocess.run([sys.executable, "-m", "proxy", "validate", str(config)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert ("destination outbound|9080|v2|reviews.default.svc.cluster.local has no endpoints at config time "
            "(no endpoint has the subset's labels): its share goes to the other destinations (flag ED)") in out.stdout
    proxy = ProxyProcess(config, ["--access-log", "off"]).start()
    try:
        assert await load(proxy.mesh_port, 200) == Counter(v1=200)
        assert metric(proxy, "shiftproxy_route_empty_destinations") == 1
        assert metric(proxy, "shiftproxy_route_empty_destination_moved_total") >= 1
    finally:
        proxy.stop()


async def test_fail_mode_keeps_istios_503_uh(tmp_path: Path, upstreams: dict[str, KillableUpstream]) -> None:
    config = write_config(tmp_path / "config", upstreams, destination_rule("version: v9"), virtual_service("fail"))
    proxy = ProxyProcess(config, ["--access-log", "json"]).start()
    try:
        seen = await load(proxy.mesh_port, 400)
        lo, hi = binomial_interval(400, 0.5)
        assert set(seen) == {"v1", "503 no healthy upstream"}, seen
        assert lo <= seen["v1"] <= hi, seen
        proxy.stop()
        assert access_flags(proxy)["UH"] == seen["503 no healthy upstream"]
    finally:
        proxy.stop()
