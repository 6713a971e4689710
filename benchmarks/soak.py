"""Soak: steady mixed HTTP + TCP traffic through a real `shiftproxy run`, a config change every 10 s,
RSS sampled throughout; first, a big file written into the config directory under traffic.

    python -m benchmarks.soak [--duration 600] [--change-every 10] [--big-file-mib 50]

1. Big file (skipped with --big-file-mib 0): while one keep-alive HTTP client measures every request,
   a file of that size is written into the watched config directory. The proxy must refuse it by its
   size limit (--max-config-bytes, default 8 MiB) and keep serving: p50/p99/max latency are printed,
   and the run fails if any request fails or takes over 1 s.
2. Soak: --http-conns keep-alive HTTP clients and --tcp-conns TCP clients (each connection: version
   probe, a few echoes, close) at a bounded pace; the weights flip in the config file every
   --change-every seconds (watched, as an operator's edit). RSS every 5 s; the least-squares slope of
   RSS after the first fifth of the run is printed in MiB per minute.
Backends are `python -m benchmarks.backend` processes on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.istio_config import BackendPorts, ListenerPorts, bench_istio_yaml
from benchmarks.reload_leak import ROOT, free_port, rss_mib, start_proxy

SAMPLE_EVERY = 5.0


class Config:
    def __init__(self, directory: Path, listeners: ListenerPorts, backends: BackendPorts) -> None:
        self.directory, self.listeners, self.backends = directory, listeners, backends
        self.flip = False
        self.changes = 0

    def write(self) -> None:
        weights = (30, 70) if self.flip else (70, 30)
        tmp = self.directory / ".bench.yaml.tmp"
        tmp.write_text(bench_istio_yaml(self.listeners, self.backends, http_weights=weights, tcp_weights=weights))
        os.replace(tmp, self.directory / "bench.yaml")

    def change(self) -> None:
        self.flip = not self.flip
        self.changes += 1
        self.write()


async def http_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    writer.write(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


class Counts:
    def __init__(self) -> None:
        self.http_ok = self.http_failed = self.tcp_ok = self.tcp_failed = 0


async def http_client(port: int, stop: asyncio.Event, counts: Counts, pause: float) -> None:
    reader = writer = None
    while not stop.is_set():
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            status = await asyncio.wait_for(http_request(reader, writer), 10)
            if status == 200:
                counts.http_ok += 1
            else:
                counts.http_failed += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            counts.http_failed += 1
            if writer is not None:
                writer.close()
            reader = writer = None
        await asyncio.sleep(pause)
    if writer is not None:
        writer.close()


async def tcp_client(port: int, stop: asyncio.Event, counts: Counts, pause: float) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"?version\n")
            version = await asyncio.wait_for(reader.readline(), 10)
            for i in range(3):
                line = f"hello {i}\n".encode()
                writer.write(line)
                if await asyncio.wait_for(reader.readexactly(len(line)), 10) != line:
                    raise OSError("echo mismatch")
            writer.close()
            if version.strip() in (b"v1", b"v2"):
                counts.tcp_ok += 1
            else:
                counts.tcp_failed += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            counts.tcp_failed += 1
        await asyncio.sleep(pause)


def last_error(admin: str) -> dict[str, object] | None:
    with urllib.request.urlopen(f"http://{admin}/config_dump", timeout=30) as resp:
        return json.loads(resp.read()).get("last_reload_error")  # type: ignore[no-any-return]


async def big_file_phase(config: Config, admin: str, mib: int) -> bool:
    """Write a `mib` MiB file under traffic; True when it was refused and no request failed or took > 1 s."""
    latencies: list[float] = []
    failures = 0
    done = asyncio.Event()

    async def probe() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", config.listeners.http)
        while not done.is_set():
            started = time.perf_counter()
            try:
                status = await asyncio.wait_for(http_request(reader, writer), 10)
                failures += status != 200
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                failures += 1
                reader, writer = await asyncio.open_connection("127.0.0.1", config.listeners.http)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.002)
        writer.close()

    task = asyncio.create_task(probe())
    await asyncio.sleep(1.0)
    big = config.directory / "big.yaml"
    chunk = ("# " + "x" * 1021 + "\n") * 1024  # 1 MiB of YAML comments

    def write() -> None:
        with open(big, "w") as fh:
            for _ in range(mib):
                fh.write(chunk)

    written_at = time.monotonic()
    await asyncio.to_thread(write)
    refused = ""
    for _ in range(300):  # up to ~30 s for the watcher to see it
        error = await asyncio.to_thread(last_error, admin)
        if error and any(str(big) in e for e in error.get("errors", [])):  # type: ignore[union-attr]
            refused = next(e for e in error["errors"] if str(big) in e)  # type: ignore[index]
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    done.set()
    await task
    big.unlink()
    latencies.sort()
    p = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000) if latencies else None
    print(f"big file: {mib} MiB written in {time.monotonic() - written_at:.1f} s (until refused) under traffic")
    print(f"  refused: {refused or 'NO'}")
    if p is not None:
        print(f"  requests: {len(latencies)}, failed {failures}; latency p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, "
              f"max {latencies[-1] * 1000:.2f} ms")
    ok = bool(refused) and failures == 0 and bool(latencies) and latencies[-1] < 1.0
    print(f"  {'PASS' if ok else 'FAIL'} (refused, no failed request, none over 1 s)")
    return ok


async def soak_phase(config: Config, pid: int, args: argparse.Namespace) -> float:
    stop = asyncio.Event()
    counts = Counts()
    clients = [asyncio.create_task(http_client(config.listeners.http, stop, counts, args.pause))
               for _ in range(args.http_conns)]
    clients += [asyncio.create_task(tcp_client(config.listeners.tcp, stop, counts, args.pause * 5))
                for _ in range(args.tcp_conns)]
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    next_change = started + args.change_every
    next_sample = started
    while (now := time.monotonic()) < started + args.duration:
        if now >= next_sample:
            samples.append((now - started, rss_mib(pid)))
            next_sample += SAMPLE_EVERY
        if now >= next_change:
            config.change()
            next_change += args.change_every
        await asyncio.sleep(0.1)
    samples.append((time.monotonic() - started, rss_mib(pid)))
    stop.set()
    await asyncio.gather(*clients)
    steady = [s for s in samples if s[0] >= args.duration / 5] or samples
    slope = _slope(steady) * 60
    print(f"soak: {args.duration:.0f} s, {config.changes} config changes, HTTP {counts.http_ok} ok / "
          f"{counts.http_failed} failed, TCP connections {counts.tcp_ok} ok / {counts.tcp_failed} failed")
    print(f"  RSS: start {samples[0][1]:.1f} MiB, after warm-up {steady[0][1]:.1f} MiB, end {samples[-1][1]:.1f} MiB, "
          f"max {max(r for _, r in samples):.1f} MiB")
    noise = statistics.pstdev([r for _, r in steady]) if len(steady) > 1 else 0.0
    print(f"  RSS slope after the first fifth: {slope:+.3f} MiB/min over {len(steady)} samples "
          f"(spread {noise:.2f} MiB)")
    return slope


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_r = sum(r for _, r in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (r - mean_r) for t, r in points) / var if var else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="soak seconds (default 600)")
    parser.add_argument("--change-every", type=float, default=10.0, help="seconds between config changes")
    parser.add_argument("--big-file-mib", type=int, default=50, help="big file phase size; 0 skips it")
    parser.add_argument("--http-conns", type=int, default=4)
    parser.add_argument("--tcp-conns", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.005, help="seconds between an HTTP client's requests")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the proxy")
    parser.add_argument("--proxy-root", type=Path, default=ROOT, help="checkout whose proxy runs (to compare)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="shiftproxy-soak-"))
    config_dir = work / "config"
    config_dir.mkdir()
    listeners = ListenerPorts(free_port(), free_port(), free_port())
    backends = BackendPorts(*(free_port() for _ in range(5)))
    config = Config(config_dir, listeners, backends)
    config.write()
    procs = [
        subprocess.Popen([sys.executable, "-m", "benchmarks.backend", "http", f"{backends.http_v1}=v1",
                          f"{backends.http_v2}=v2"], cwd=ROOT),
        subprocess.Popen([sys.executable, "-m", "benchmarks.backend", "echo", f"{backends.tcp_v1}=v1",
                          f"{backends.tcp_v2}=v2"], cwd=ROOT),
    ]
    admin = f"127.0.0.1:{free_port()}"
    ok = True
    try:
        time.sleep(0.5)
        proxy = start_proxy(config_dir, work / "state", admin, args.python, args.proxy_root, [])
        procs.append(proxy)
        if args.big_file_mib > 0:
            ok = asyncio.run(big_file_phase(config, admin, args.big_file_mib))
        if args.duration > 0:
            asyncio.run(soak_phase(config, proxy.pid, args))
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"proxy log: {work / 'proxy.log'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
