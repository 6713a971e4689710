"""Helpers for the rollout end-to-end tests: versioned backends that can fail a share of requests, a
bounded load loop through the sidecar, and admin calls."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.harness import Client, ProxyProcess, service_entry

DESTINATION_RULE = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
ALL_V1 = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""


def rollout_yaml(name: str, steps: str, analysis: str = "", rollback: str = "") -> str:
    return f"""apiVersion: shiftproxy.io/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  virtualService: reviews
  route: {{http: 0}}
  stable: {{subset: v1}}
  canary: {{subset: v2}}
  steps:
{steps}
  analysis:
{analysis or '    interval: 0.4s'}
{rollback}
"""


@dataclass
class Backend:
    """HTTP/1.1 keep-alive server answering its version; `fail_every` of each 10 requests get a 500."""

    version: str
    fail_in_ten: int = 0
    requests: int = 0
    server: asyncio.AbstractServer | None = None
    port: int = 0

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                failed = self.requests % 10 < self.fail_in_ten  # exactly fail_in_ten of every ten
                self.requests += 1
                body = self.version.encode()
                status = b"500 Internal Server Error" if failed else b"200 OK"
                writer.write(b"HTTP/1.1 %s\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def write_config(config_dir: Path, v1: Backend, v2: Backend) -> None:
    config_dir.mkdir(exist_ok=True)
    (config_dir / "reviews.yaml").write_text(
        service_entry("reviews", 9080, [(v1.port, "v1"), (v2.port, "v2")]) + "---\n" + DESTINATION_RULE
        + "---\n" + ALL_V1)


class Load:
    """Requests through the sidecar on one keep-alive connection until stopped (bounded)."""

    def __init__(self, proxy: ProxyProcess, limit: int = 200_000) -> None:
        self.proxy = proxy
        self.limit = limit
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    def start(self) -> Load:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        client = Client(self.proxy.mesh_port)
        try:
            while not self._stop.is_set() and self.sent < self.limit:
                self.sent += 1
                try:
                    resp = await client.request("GET", "http://reviews:9080/reviews/0", "reviews:9080")
                except (ConnectionError, asyncio.IncompleteReadError):
                    self.statuses[0] = self.statuses.get(0, 0) + 1  # noted; the next request reconnects
                    await client.close()
                    continue
                self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
                if self.sent % 50 == 0:
                    await asyncio.sleep(0)  # let the test's own polling run
        finally:
            await client.close()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:  # an unexpected error is kept, never left to skip stopping the proxy
            self.error = (await asyncio.gather(self._task, return_exceptions=True))[0]


def admin(proxy: ProxyProcess, method: str, path: str, **query: str) -> tuple[int, Any]:
    url = f"{proxy.admin}{path}" + ("?" + urllib.parse.urlencode(query) if query else "")
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def status(proxy: ProxyProcess, name: str) -> dict[str, Any]:
    code, payload = admin(proxy, "GET", "/rollouts", name=name)
    assert code == 200, payload
    return payload  # type: ignore[no-any-return]


async def wait_for(proxy: ProxyProcess, name: str, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
    """Poll the rollout's status until `predicate(status)`; fail with the status and log otherwise."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        code, payload = await asyncio.to_thread(admin, proxy, "GET", "/rollouts", name=name)
        if code == 200:
            last = payload
            if predicate(last):
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"rollout {name} never reached the expected state: {json.dumps(last, indent=1)[-4000:]}"
                         f"\nlog:\n{proxy.log()[-3000:]}")


def route_of(proxy: ProxyProcess) -> list[dict[str, Any]]:
    """The reviews route as the proxy serves it now (what `get vs reviews -o yaml` shows)."""
    code, payload = admin(proxy, "GET", "/objects", kind="VirtualService", name="reviews", namespace="default")
    assert code == 200
    return payload["objects"][0]["object"]["spec"]["http"][0]["route"]  # type: ignore[no-any-return]


def weights(route: list[dict[str, Any]]) -> dict[str, int]:
    if len(route) == 1:
        return {route[0]["destination"]["subset"]: 100}
    return {e["destination"]["subset"]: int(e.get("weight", 0)) for e in route}
