"""What transparent capture costs: the same loads through the sidecar's explicit listeners and through
iptables REDIRECT to service VIPs, in a private network namespace (Linux, root, iptables or nft).

    unshare -n python -m benchmarks.capture [--seconds 3] [--rounds 2] [--json FILE]

With two or more CPUs the proxy is pinned to one and the clients and backends to another, as in
`benchmarks.run` (which runs this in its `capture` group when it is root).

Loads (each for --seconds, per path, rounds alternate the order):
  http-keepalive  20 connections, requests one after another       → proxy CPU µs per request
  http-close      20 clients, one request per connection            → proxy CPU µs per request
  tcp-connect     20 clients, connect + 64-byte echo + close        → proxy CPU µs per connection
Explicit paths: HTTP to 127.0.0.1:15001 with `Host: bench-http:9080`, TCP to the sidecar's per-port
listener 127.0.0.1:9000. Captured paths: the application dials the VIPs 127.10.0.2:9080 / 127.10.0.3:9000.
The proxy runs as uid 1337 with --capture; its CPU time comes from /proc, the client's is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import uvloop

from benchmarks.procs import cpu_seconds, free_ports, plan_pinning

ROOT = Path(__file__).resolve().parents[1]
PROXY_UID = 1337
HTTP_VIP, TCP_VIP = "127.10.0.2", "127.10.0.3"
CONCURRENCY = 20
MESSAGE = b"m" * 63 + b"\n"


def config(http: tuple[int, int], echo: tuple[int, int]) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: bench-http}}
spec:
  hosts: [bench-http]
  addresses: [{HTTP_VIP}]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {http[0]}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {http[1]}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: bench-tcp}}
spec:
  hosts: [bench-tcp]
  addresses: [{TCP_VIP}]
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {echo[0]}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{tcp: {echo[1]}}}, labels: {{version: v2}}}}
"""


async def _response(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)


async def http_keepalive(host: str, port: int, authority: str, until: float) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET / HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()
    done = 0
    while time.monotonic() < until:
        writer.write(request)
        await _response(reader)
        done += 1
    writer.close()
    return done


async def http_close(host: str, port: int, authority: str, until: float) -> int:
    request = f"GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode()
    done = 0
    while time.monotonic() < until:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await _response(reader)
        writer.close()
        done += 1
    return done


async def tcp_connect(host: str, port: int, authority: str, until: float) -> int:
    done = 0
    while time.monotonic() < until:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(MESSAGE)
        await reader.readexactly(len(MESSAGE))
        writer.close()
        done += 1
    return done


LOADS = {
    "http-keepalive": (http_keepalive, {"explicit": ("127.0.0.1", 15001, "bench-http:9080"),
                                        "captured": (HTTP_VIP, 9080, f"{HTTP_VIP}:9080")}),
    "http-close": (http_close, {"explicit": ("127.0.0.1", 15001, "bench-http:9080"),
                                "captured": (HTTP_VIP, 9080, f"{HTTP_VIP}:9080")}),
    "tcp-connect": (tcp_connect, {"explicit": ("127.0.0.1", 9000, ""), "captured": (TCP_VIP, 9000, "")}),
}


async def measure(load: str, path: str, seconds: float, proxy_pid: int) -> tuple[int, float]:
    fn, paths = LOADS[load]
    host, port, authority = paths[path]
    cpu = cpu_seconds([proxy_pid])
    until = time.monotonic() + seconds
    counts = await asyncio.gather(*(fn(host, port, authority, until) for _ in range(CONCURRENCY)))
    return sum(counts), cpu_seconds([proxy_pid]) - cpu


def as_proxy_user() -> list[str]:
    base = ["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups"]
    if subprocess.run([*base, sys.executable, "-c", "import proxy"], cwd=ROOT, capture_output=True).returncode:
        base += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]  # interpreter under /root
    return base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capture")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the summary to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.capture: run as root inside a namespace: unshare -n python -m benchmarks.capture",
              file=sys.stderr)
        return 2
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    pinning = plan_pinning()
    proxy_cpus = pinning.proxy_cpus

    def pin_proxy() -> None:
        if proxy_cpus:
            os.sched_setaffinity(0, proxy_cpus)

    if pinning.load_cpus:
        os.sched_setaffinity(0, pinning.load_cpus)  # this harness, its clients and the backends
    ports = free_ports(4)
    workdir = Path(tempfile.mkdtemp(prefix="shiftproxy-bench-capture-"))
    workdir.chmod(0o755)
    config_dir = workdir / "config"
    config_dir.mkdir(mode=0o755)
    (config_dir / "bench.yaml").write_text(config((ports[0], ports[1]), (ports[2], ports[3])))
    (config_dir / "bench.yaml").chmod(0o644)
    state_dir = workdir / "state"  # the proxy's own user must be able to write it
    state_dir.mkdir()
    os.chown(state_dir, PROXY_UID, PROXY_UID)
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.backend", "http", f"{ports[0]}=v1", f"{ports[1]}=v2"],
                              cwd=ROOT),
             subprocess.Popen([sys.executable, "-m", "benchmarks.backend", "echo", f"{ports[2]}=v1", f"{ports[3]}=v2"],
                              cwd=ROOT)]
    proxy = subprocess.Popen([*as_proxy_user(), sys.executable, "-m", "proxy", "run", "--config", str(config_dir),
                              "--role", "mesh", "--capture", "--access-log", "off", "--log-level", "warning",
                              "--state-dir", str(state_dir)],
                             cwd=ROOT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, preexec_fn=pin_proxy)
    procs.append(proxy)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen("http://127.0.0.1:15000/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run([sys.executable, "-m", "proxy", "iptables"], cwd=ROOT, check=True, capture_output=True)
        results: dict[str, dict[str, list[float]]] = {}
        for round_ in range(args.rounds):
            for load in LOADS:
                order = ("explicit", "captured") if round_ % 2 == 0 else ("captured", "explicit")
                for path in order:
                    ops, cpu = uvloop.run(measure(load, path, args.seconds, proxy.pid))
                    row = results.setdefault(load, {}).setdefault(path, [0, 0.0])
                    row[0] += ops
                    row[1] += cpu
        print(f"{'load':16} {'explicit µs/op':>15} {'captured µs/op':>15} {'difference':>11} "
              f"{'explicit op/s':>14} {'captured op/s':>14}")
        summary = {}
        for load, paths in results.items():
            per_op = {p: paths[p][1] * 1e6 / max(paths[p][0], 1) for p in paths}
            rate = {p: paths[p][0] / (args.seconds * args.rounds) for p in paths}
            summary[load] = {"cpu_us_per_op": per_op, "ops_per_s": rate}
            print(f"{load:16} {per_op['explicit']:15.1f} {per_op['captured']:15.1f} "
                  f"{per_op['captured'] - per_op['explicit']:+11.1f} {rate['explicit']:14.0f} {rate['captured']:14.0f}")
        print(json.dumps(summary))
        if args.json is not None:
            args.json.write_text(json.dumps({"summary": summary, "pinning": pinning.note,
                                             "seconds": args.seconds, "rounds": args.rounds}) + "\n")
        return 0
    finally:
        subprocess.run([sys.executable, "-m", "proxy", "iptables", "--cleanup"], cwd=ROOT, capture_output=True)
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
