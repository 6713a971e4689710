"""Misbehaving HTTP/1.1 upstreams for the resilience tests, and a reader of the proxy's /metrics.

`Backend` answers by its `mode`: "ok" (200), "503" (always 503), "500" (always 500), "fail:N" (503 for
its first N requests, then 200), "hang" (reads the request and never answers), "gate" (answers 200
once `gate` is set). It records each request's `x-envoy-attempt-count` and body size.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import ProxyProcess, read_body


@dataclass
class Seen:
    path: str
    attempt: str | None
    body: int


@dataclass
class Backend:
    version: str
    mode: str = "ok"
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    answered: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.AbstractServer | None = None

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.gate.set()

    def status(self) -> int:
        mode = self.mode
        if mode.startswith("fail:"):
            return 503 if len(self.requests) <= int(mode[5:]) else 200
        return {"503": 503, "500": 500}.get(mode, 200)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                target = lines[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                size = await read_body(reader, headers)
                self.requests.append(Seen(target, headers.get("x-envoy-attempt-count"), size))
                status = self.status()
                if self.mode == "hang":
                    await reader.read()  # until the proxy gives up on this connection
                    return
                if self.mode == "gate":
                    await self.gate.wait()
                body = json.dumps({"version": self.version, "received": size}).encode()
                writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                             % (status, len(body)) + body)
                await writer.drain()
                self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


def scrape(proxy: ProxyProcess) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"{proxy.admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def requests_by_code_and_flags(proxy: ProxyProcess, service: str) -> Counter[tuple[str, str]]:
    """istio_requests_total of `service` by (response_code, response_flags)."""
    counts: Counter[tuple[str, str]] = Counter()
    for name, labels, value in scrape(proxy):
        if name == "istio_requests_total" and labels.get("destination_service_name") == service:
            counts[(labels["response_code"], labels["response_flags"])] += int(value)
    return +counts


def cluster_stat(proxy: ProxyProcess, name: str, cluster: str) -> float:
    return sum(v for n, labels, v in scrape(proxy) if n == name and labels.get("cluster_name") == cluster)


def service_entry(name: str, backends: list[Backend], port: int = 9080, protocol: str = "HTTP") -> str:
    eps = "\n".join(f"  - {{address: 127.0.0.1, ports: {{http: {b.port}}}, labels: {{app: {name}, "
                    f"version: {b.version}}}}}" for b in backends)
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  ports: [{{number: {port}, name: http, protocol: {protocol}}}]
  resolution: STATIC
  endpoints:
{eps}
"""
