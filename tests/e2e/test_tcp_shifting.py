"""The seed's TCP task end to end: real tcp-echo servers (`one`, `two`), the real proxy process, the seed's
tcp-echo-all-v1.yaml then tcp-echo-20-v2.yaml verbatim, per-connection choice, no restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import ProxyProcess, free_port, write_atomic
from tests.paths import TCP_ECHO
from tests.stats import binomial_interval

GATEWAY_PORT = 31400  # the port tcp-echo-all-v1.yaml's Gateway and VirtualService use



class EchoServer:
    """tcp-echo: every newline-terminated line comes back as `<prefix> <line>`; EOF closes."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.encode()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.open = 0

    async def start(self) -> EchoServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            while line := await reader.readline():
                if not line.endswith(b"\n"):
                    break  # a trailing partial line at EOF is dropped, as the Go server does
                writer.write(self.prefix + b" " + line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.open -= 1
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def service_entry(v1: int, v2: int) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: tcp-echo
spec:
  hosts: [tcp-echo]
  ports:
  - {{number: 9000, name: tcp, protocol: TCP}}
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {v1}}}, labels: {{app: tcp-echo, version: v1}}}}
  - {{address: 127.0.0.1, ports: {{tcp: {v2}}}, labels: {{app: tcp-echo, version: v2}}}}
"""


@pytest.fixture
async def echoes() -> AsyncIterator[tuple[EchoServer, EchoServer]]:
    one, two = await EchoServer("one").start(), await EchoServer("two").start()
    yield one, two
    one.close()
    two.close()


@pytest.fixture
def config_dir(tmp_path: Path, echoes: tuple[EchoServer, EchoServer]) -> Path:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", GATEWAY_PORT)) == 0:
            pytest.skip(f"port {GATEWAY_PORT} (the tcp-echo Gateway's port) is in use on this machine")
    d = tmp_path / "config"
    d.mkdir()
    (d / "tcp-echo-service-entry.yaml").write_text(service_entry(echoes[0].port, echoes[1].port))
    return d


async def echo_once(line: bytes = b"hello\n") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", GATEWAY_PORT)
    writer.write(line)
    reply = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return reply


async def prefixes(n: int, concurrency: int = 20) -> Counter[str]:
    seen: Counter[str] = Counter()

    async def worker(count: int) -> None:
        for _ in range(count):
            seen[(await echo_once()).split(b" ", 1)[0].decode()] += 1

    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return seen


def start_gateway(config_dir: Path) -> ProxyProcess:
    return ProxyProcess(config_dir, ["--role", "gateway", "--access-log", "off"]).start()


async def test_seed_tcp_task(config_dir: Path) -> None:
    shutil.copy(TCP_ECHO / "tcp-echo-all-v1.yaml", config_dir / "tcp-echo.yaml")
    proxy = start_gateway(config_dir)
    try:
        assert await prefixes(200) == Counter(one=200)
        if shutil.which("nc"):
            # OpenBSD netcat (Debian's) half-closes on stdin EOF only with -N; busybox nc always does
            usage = subprocess.run(["nc", "-h"], capture_output=True, text=True).stderr
            flag = "-N " if "-N" in usage else ""
            command = f"(date; sleep 1) | nc {flag}127.0.0.1 {GATEWAY_PORT}"
            out = await asyncio.to_thread(subprocess.run, ["sh", "-c", command], capture_output=True, text=True,
                                          timeout=15)
            assert out.stdout.startswith("one ") and len(out.stdout.split()) > 3, out
        version = proxy.version()
        # tcp-echo-20-v2.yaml holds only the VirtualService; like `kubectl apply`, it replaces that one
        # object and the Gateway and DestinationRule from all-v1 stay
        kept = [doc for doc in (TCP_ECHO / "tcp-echo-all-v1.yaml").read_text().split("\n---\n")
                if "kind: VirtualService" not in doc]
        write_atomic(config_dir / "tcp-echo.yaml",
                     "\n---\n".join([*kept, (TCP_ECHO / "tcp-echo-20-v2.yaml").read_text()]))
        proxy.wait_version(version)
        n = 2000
        seen = await prefixes(n)
        lo, hi = binomial_interval(n, 0.2)
        assert seen["one"] + seen["two"] == n
        assert lo <= seen["two"] <= hi, (seen, (lo, hi))
    finally:
        assert proxy.stop() == 0


async def test_established_connection_keeps_destination_across_shift(config_dir: Path) -> None:
    shutil.copy(TCP_ECHO / "tcp-echo-all-v1.yaml", config_dir / "tcp-echo.yaml")
    proxy = start_gateway(config_dir)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", GATEWAY_PORT)
        writer.write(b"before\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"one before\n"
        version = proxy.version()
        # everything to v2 now
        text = (config_dir / "tcp-echo.yaml").read_text().replace("subset: v1", "subset: v2")
        write_atomic(config_dir / "tcp-echo.yaml", text)
        proxy.wait_version(version)
        assert await echo_once() == b"two hello\n"  # new connections use the new weights
        writer.write(b"after\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"one after\n"  # the old one stays on v1
        # half-close: our EOF reaches the server, which answers what it had and closes
        writer.write(b"last\n")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"one last\n"
        writer.close()
    finally:
        proxy.stop()


async def test_drain_on_shift_annotation_closes_moved_connections(config_dir: Path) -> None:
    text = (TCP_ECHO / "tcp-echo-all-v1.yaml").read_text().replace(
        "  name: tcp-echo\nspec:", "  name: tcp-echo\n  annotations:\n    shiftproxy.io/tcp-drain-on-shift: 500ms\n"
                                   "spec:")
    assert "tcp-drain-on-shift" in text
    (config_dir / "tcp-echo.yaml").write_text(text)
    proxy = start_gateway(config_dir)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", GATEWAY_PORT)
        writer.write(b"x\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"one x\n"
        version = proxy.version()
        write_atomic(config_dir / "tcp-echo.yaml", text.replace("subset: v1", "subset: v2"))
        proxy.wait_version(version)
        # v1 lost its weight: the connection is closed after the 500 ms grace, not before
        writer.write(b"y\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"one y\n"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        proxy.stop()


async def test_upstream_down_closes_promptly_with_uf(config_dir: Path, echoes: tuple[EchoServer, EchoServer]
                                                     ) -> None:
    dead = free_port()  # nothing listens here
    (config_dir / "tcp-echo-service-entry.yaml").write_text(service_entry(dead, dead))
    shutil.copy(TCP_ECHO / "tcp-echo-all-v1.yaml", config_dir / "tcp-echo.yaml")
    proxy = ProxyProcess(config_dir, ["--role", "gateway"]).start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        reader, writer = await asyncio.open_connection("127.0.0.1", GATEWAY_PORT)
        writer.write(b"hello\n")
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        except ConnectionResetError:
            pass  # closing with our unread bytes still queued makes Linux send a reset: closed all the same
        assert loop.time() - start < 2.0
        writer.close()
    finally:
        proxy.stop()
    assert " UF " in proxy.log()


async def test_no_descriptor_leak_after_10000_connections(config_dir: Path) -> None:
    shutil.copy(TCP_ECHO / "tcp-echo-all-v1.yaml", config_dir / "tcp-echo.yaml")
    proxy = start_gateway(config_dir)
    assert proxy.proc is not None
    fd_dir = f"/proc/{proxy.proc.pid}/fd"
    try:
        await prefixes(100)
        before = len(os.listdir(fd_dir))
        seen = await prefixes(10_000, concurrency=50)
        assert seen == Counter(one=10_000)
        await asyncio.sleep(0.5)
        after = len(os.listdir(fd_dir))
        assert after <= before + 2, (before, after)
    finally:
        proxy.stop()


async def test_gigabyte_through_relay_with_bounded_memory(config_dir: Path, tmp_path: Path) -> None:
    sink_total = 0
    done = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sink_total
        while data := await reader.read(1 << 20):
            sink_total += len(data)
        writer.write(b"%d\n" % sink_total)
        await writer.drain()
        writer.close()
        done.set()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    (config_dir / "tcp-echo-service-entry.yaml").write_text(service_entry(port, port))
    shutil.copy(TCP_ECHO / "tcp-echo-all-v1.yaml", config_dir / "tcp-echo.yaml")
    proxy = start_gateway(config_dir)
    try:
        base = peak = proxy.rss_bytes()
        reader, writer = await asyncio.open_connection("127.0.0.1", GATEWAY_PORT)
        chunk = b"t" * (1 << 20)
        for i in range(1024):
            writer.write(chunk)
            await writer.drain()
            if i % 64 == 0:
                peak = max(peak, proxy.rss_bytes())
        writer.write_eof()
        reply = await asyncio.wait_for(reader.readline(), 60)
        assert reply == b"%d\n" % (1 << 30)
        writer.close()
        assert peak - base < 100 * 1024 * 1024, f"RSS grew {(peak - base) / 1e6:.0f} MB"
    finally:
        proxy.stop()
        server.close()
