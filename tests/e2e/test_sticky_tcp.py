"""TCP through the sidecar: `shiftproxy.io/sticky: source-ip` keeps each client address on one version
and weight increases only move addresses onto the raised version; a version whose endpoints all refuse
connections gets no connection (flag ED)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import ProxyProcess, free_port, write_atomic
from tests.e2e.test_tcp_shifting import EchoServer
from tests.stats import binomial_interval

SOURCES = [f"127.0.0.{i}" for i in range(2, 202)]  # every 127.0.0.0/8 address is this host's loopback


def config(port: int, one: int, two: int, v2: int) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tcp-echo}}
spec:
  hosts: [tcp-echo]
  ports: [{{number: {port}, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {one}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{tcp: {two}}}, labels: {{version: v2}}}}
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
metadata:
  name: tcp-echo
  annotations: {{shiftproxy.io/sticky: source-ip}}
spec:
  hosts: [tcp-echo]
  tcp:
  - route:
    - {{destination: {{host: tcp-echo, subset: v1}}, weight: {100 - v2}}}
    - {{destination: {{host: tcp-echo, subset: v2}}, weight: {v2}}}
"""


@pytest.fixture
async def echoes() -> AsyncIterator[tuple[EchoServer, EchoServer]]:
    one, two = await EchoServer("one").start(), await EchoServer("two").start()
    yield one, two
    one.close()
    two.close()


async def echo_from(source: str, port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(b"hi\n")
    reply = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return reply.split(b" ", 1)[0].decode() or "closed"


async def by_source(port: int) -> list[str]:
    out: list[str] = []
    for i in range(0, len(SOURCES), 20):
        out += await asyncio.gather(*(echo_from(s, port) for s in SOURCES[i:i + 20]))
    return out


async def test_source_ip_sticky_and_an_empty_version(tmp_path: Path, echoes: tuple[EchoServer, EchoServer]) -> None:
    one, two = echoes
    port = free_port()
    d = tmp_path / "config"
    d.mkdir()
    (d / "tcp-echo.yaml").write_text(config(port, one.port, two.port, 25))
    proxy = ProxyProcess(d, ["--role", "mesh", "--access-log", "json"]).start()
    try:
        first = await by_source(port)
        assert await by_source(port) == first  # same address, same version
        lo, hi = binomial_interval(len(SOURCES), 0.25)
        assert lo <= first.count("two") <= hi, first.count("two")
        version = proxy.version()
        write_atomic(d / "tcp-echo.yaml", config(port, one.port, two.port, 60))
        proxy.wait_version(version)
        second = await by_source(port)
        lo, hi = binomial_interval(len(SOURCES), 0.6)
        assert lo <= second.count("two") <= hi, second.count("two")
        assert [s for s, a, b in zip(SOURCES, first, second, strict=True) if a == "two" and b == "one"] == []
        two.close()  # v2 refuses new connections: its share goes to v1, nothing fails
        assert await by_source(port) == ["one"] * len(SOURCES)
        proxy.stop()
        flags = [json.loads(line)["response_flags"] for line in proxy.log().splitlines()
                 if line.startswith("{") and '"protocol": "tcp"' in line]
        assert flags.count("ED") == second.count("two")  # the addresses v2 had, moved, each once
    finally:
        proxy.stop()
