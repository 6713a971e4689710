"""A rollout of a TCP route at a gateway: per-connection weights, connection failures as the gate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import ProxyProcess, free_port
from tests.e2e.rollout_harness import status, wait_for
from tests.e2e.test_tcp_shifting import EchoServer, service_entry


def config(port: int) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tcp-gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: tcp-echo}}
spec:
  host: tcp-echo
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo}}
spec:
  hosts: ["*"]
  gateways: [tcp-gw]
  tcp:
  - match: [{{port: {port}}}]
    route:
    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}
---
apiVersion: shiftproxy.io/v1alpha1
kind: Rollout
metadata: {{name: tcp-echo-v2}}
spec:
  virtualService: tcp-echo
  route: {{tcp: 0}}
  stable: {{subset: v1}}
  canary: {{subset: v2}}
  steps:
  - setWeight: 20
  - setWeight: 60
  - setWeight: 100
  analysis: {{interval: 0.4s, minRequests: 5, successRate: {{min: 95}}, failureLimit: 2}}
  rollback: {{interval: 0.3s}}
"""


@pytest.fixture
async def echoes() -> AsyncIterator[tuple[EchoServer, EchoServer]]:
    one, two = await EchoServer("one").start(), await EchoServer("two").start()
    yield one, two
    one.close()
    two.close()


async def connections(port: int, stop: asyncio.Event, seen: dict[str, int], limit: int = 50_000) -> None:
    """One connection after another (bounded): send a line, note who answered (or that nobody did)."""
    for _ in range(limit):
        if stop.is_set():
            return
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"hi\n")
            reply = await asyncio.wait_for(reader.readline(), 5)
        except (ConnectionError, TimeoutError):  # the proxy resets a connection whose upstream failed
            reply = b""
        writer.close()
        key = reply.split(b" ", 1)[0].decode() or "failed"
        seen[key] = seen.get(key, 0) + 1


async def run_rollout(tmp_path: Path, v2_port: int, v1_port: int) -> tuple[dict, dict[str, int]]:  # type: ignore[type-arg]
    port = free_port()
    d = tmp_path / "config"
    d.mkdir()
    (d / "tcp.yaml").write_text(service_entry(v1_port, v2_port) + "---\n" + config(port))
    proxy = ProxyProcess(d, ["--role", "gateway", "--access-log", "off", "--drain-timeout", "2", "--state-dir",
                             str(tmp_path / "state")]).start()
    stop, seen = asyncio.Event(), {}  # type: ignore[var-annotated]
    load = asyncio.get_running_loop().create_task(connections(port, stop, seen))
    try:
        final = await wait_for(proxy, "tcp-echo-v2", lambda s: s["phase"] in ("Succeeded", "RolledBack"))
        assert status(proxy, "tcp-echo-v2")["phase"] == final["phase"]
    finally:
        stop.set()
        try:
            await load
        finally:
            proxy.stop()
    return final, seen


async def test_tcp_rollout_completes(tmp_path: Path, echoes: tuple[EchoServer, EchoServer]) -> None:
    final, seen = await run_rollout(tmp_path, echoes[1].port, echoes[0].port)
    assert final["phase"] == "Succeeded"
    assert [e["weight"] for e in final["history"] if e["event"] == "setWeight"] == [20, 60, 100]
    assert "failed" not in seen and seen.get("two", 0) > 0


async def test_tcp_connection_failures_roll_back(tmp_path: Path, echoes: tuple[EchoServer, EchoServer]) -> None:
    final, seen = await run_rollout(tmp_path, free_port(), echoes[0].port)  # nothing listens for v2
    assert final["phase"] == "RolledBack"
    failed = [e for e in final["history"] if e.get("decision") == "fail"]
    assert len(failed) == 2
    # a failed connect marks v2 empty, and the proxy then moves its share to v1 (never shifting onto an
    # empty version): an interval fails either on the connections v2 failed or on v2 having no healthy endpoint
    for entry in failed:
        gate = entry["gates"][0]
        assert gate["gate"] == "healthy endpoints" or (
            entry["canary"]["requests"] >= 5 and entry["canary"]["failures"] == entry["canary"]["requests"]
            and gate["value"] == 0.0), entry
    assert any(e["gates"][0]["gate"] == "healthy endpoints" for e in failed)
    assert [e["weight"] for e in final["history"] if e["event"] == "rollbackStep"] == [0]
    assert seen.get("one", 0) > 0
