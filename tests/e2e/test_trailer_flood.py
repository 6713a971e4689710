"""A trailer flood against the real proxy process, the exact bytes of the report: `POST` chunked,
`0\\r\\n` (the last chunk), then `a:\\r\\n` repeated for 32 MiB, once and then from 16 connections at the same
time. The proxy answers 431 after 100 trailers and drops the rest unread into memory: its RSS stays
within 20 MiB of where it started, and a probe client on another connection is served throughout (its
p99 latency is printed, not asserted).
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.harness import ProxyProcess
from tests.e2e.security_harness import RawClient, RecordingBackend, edge_config, free_port

FLOOD = (b"POST /public/upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
         + b"a:\r\n" * (8 * 1024 * 1024))  # 32 MiB of trailers
RSS_MARGIN = 20 * 1024 * 1024


@pytest.fixture
def backend() -> Iterator[RecordingBackend]:
    server = RecordingBackend()
    yield server
    server.close()


def flood(port: int, statuses: list[int | str]) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        try:
            sock.sendall(FLOOD)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy closed after its answer: the rest was never going to be read
        try:
            head = sock.recv(4096)
            statuses.append(int(head.split(b" ")[1]) if head else "eof")
        except ConnectionResetError:
            statuses.append("reset")
    finally:
        sock.close()


class Probe(threading.Thread):
    """One keep-alive client asking for /public/probe again and again until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        client = RawClient(self.port)
        request = b"GET /public/probe HTTP/1.1\r\nHost: web\r\n\r\n"
        while not self.stop.is_set() and len(self.latencies) < 100_000:
            start = time.perf_counter()
            try:
                client.send(request)
                status = client.response().status
            except OSError as exc:
                self.failures.append(repr(exc))
                client.close()
                client = RawClient(self.port)
                continue
            self.latencies.append(time.perf_counter() - start)
            if status != 200:
                self.failures.append(f"status {status}")
        client.close()

    def p99_ms(self, since: int = 0) -> float:
        values = self.latencies[since:]
        return statistics.quantiles(values, n=100)[98] * 1000 if len(values) >= 2 else float("nan")


def rss(proc: psutil.Process) -> int:
    return int(proc.memory_info().rss)


def test_trailer_flood_leaves_memory_flat_and_others_served(tmp_path: Path, backend: RecordingBackend) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    port = free_port()
    edge_config(config_dir, backend.port, port)
    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    assert proxy.proc is not None
    proc = psutil.Process(proxy.proc.pid)
    probe = Probe(port)
    try:
        probe.start()
        while len(probe.latencies) < 300:  # warm up: imports, pools, caches all in place
            time.sleep(0.05)
            assert not probe.failures and probe.is_alive(), probe.failures
        start_rss = rss(proc)
        peak = start_rss
        for parallel in (1, 16):
            served_before = len(probe.latencies)
            statuses: list[int | str] = []
            floods = [threading.Thread(target=flood, args=(port, statuses)) for _ in range(parallel)]
            for t in floods:
                t.start()
            while any(t.is_alive() for t in floods):
                peak = max(peak, rss(proc))
                time.sleep(0.02)
            served = len(probe.latencies) - served_before
            print(f"\n{parallel} x 32 MiB trailer flood: answers {sorted(map(str, statuses))}; probe served "
                  f"{served} requests meanwhile, p99 {probe.p99_ms(served_before):.1f} ms; "
                  f"RSS start {start_rss >> 20} MiB, peak {peak >> 20} MiB")
            assert set(statuses) <= {431, "reset", "eof"} and 431 in statuses, statuses
            assert served > 0  # the probe got answers while the flood ran
        time.sleep(0.5)
        end_rss = rss(proc)
        print(f"RSS after the floods: {end_rss >> 20} MiB (start {start_rss >> 20} MiB)")
        assert not probe.failures, probe.failures[:5]
        assert peak - start_rss <= RSS_MARGIN, (start_rss, peak)
        assert end_rss - start_rss <= RSS_MARGIN, (start_rss, end_rss)
    finally:
        probe.stop.set()
        probe.join(10)
        proxy.stop()
