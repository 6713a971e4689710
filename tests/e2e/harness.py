"""End-to-end harness: the real `shiftproxy run` process, real upstream servers, a small HTTP client.

Everything listens on 127.0.0.1 with ports the kernel hands out.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.paths import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the proxy process ------------------------------------------------------------------------------


@dataclass
class ProxyProcess:
    config_dir: Path
    extra_args: list[str] = field(default_factory=list)
    mesh_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log_file: Any = None

    def start(self, timeout: float = 15.0) -> ProxyProcess:
        self.log_path = self.config_dir.parent / f"proxy-{self.admin_port}.log"
        self._log_file = log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "run", "--config", str(self.config_dir), "--bind", "127.0.0.1",
             "--mesh-port", str(self.mesh_port), "--admin", f"127.0.0.1:{self.admin_port}", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.admin}/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"proxy not ready after {timeout}s:\n{self.log()}")

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def config_dump(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.admin}/config_dump", timeout=5) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def version(self) -> int:
        return int(self.config_dump()["version"])

    def wait_version(self, above: int, timeout: float = 10.0) -> int:
        """Wait until the serving config version is greater than `above` (a reload landed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.version()
            if v > above:
                return v
            time.sleep(0.05)
        raise AssertionError(f"config version stayed {above}; log:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode

    def rss_bytes(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


# --- upstream servers ---------------------------------------------------------------------------------

Handler = Callable[[str, str, dict[str, str], "asyncio.StreamReader", "asyncio.StreamWriter"], Awaitable[bool]]


@dataclass
class Upstream:
    """A tiny keep-alive HTTP/1.1 server answering its `version`; counts connections and requests."""

    version: str
    server: asyncio.AbstractServer | None = None
    port: int = 0
    connections: int = 0
    requests: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                self.requests += 1
                self.last_headers = headers
                received = await read_body(reader, headers)
                if target.startswith("/source/"):
                    await self._source(writer, int(target.rsplit("/", 1)[1]))
                    continue
                body = json.dumps({"version": self.version, "path": target, "received": received}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nx-version: %s\r\n\r\n" % (len(body), self.version.encode())
                             + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _source(self, writer: asyncio.StreamWriter, total: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        chunk = b"x" * (256 * 1024)
        sent = 0
        while sent < total:
            n = min(len(chunk), total - sent)
            writer.write(chunk[:n])
            sent += n
            await writer.drain()


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> int:
    """Read (and discard) a body framed by content-length or chunked; return its size."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return total
            await reader.readexactly(size + 2)
            total += size
    length = int(headers.get("content-length") or 0)
    remaining = length
    while remaining:
        data = await reader.read(min(remaining, 1 << 20))
        if not data:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(data)
    return length


# --- a keep-alive client ------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One keep-alive connection; `request` sends a request and reads one response (content-length/chunked)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, target: str, host: str, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> Response:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.writer.write(f"{method} {target} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
                          .encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                chunks.append((await self.reader.readexactly(size + 2))[:-2])
            data = b"".join(chunks)
        else:
            data = await self.reader.readexactly(int(hdrs.get("content-length") or 0))
        if hdrs.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, hdrs, data)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def service_entry(name: str, port: int, endpoints: list[tuple[int, str]], protocol: str = "HTTP",
                  port_name: str = "http") -> str:
    eps = "\n".join(
        f"  - {{address: 127.0.0.1, ports: {{{port_name}: {p}}}, labels: {{app: {name}, version: {v}}}}}"
        for p, v in endpoints
    )
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
spec:
  hosts: [{name}]
  ports: [{{number: {port}, name: {port_name}, protocol: {protocol}}}]
  resolution: STATIC
  endpoints:
{eps}
"""


def write_atomic(path: Path, text: str) -> None:
    """Write like an editor or `kubectl cp` does: a temp file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
