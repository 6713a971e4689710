"""One measurement against one target: the loads of a round, RSS with idle connections, weight accuracy.

Every function charges the proxy for what it did during the measurement: CPU time of its process tree
(from /proc) before and after, divided by the requests, round trips or GiB the client saw served.
"""

from __future__ import annotations

import json
import select
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import loads
from benchmarks.istio_config import HTTP_WEIGHTS, TCP_WEIGHTS
from benchmarks.procs import Pinning, cpu_seconds, rss_bytes
from benchmarks.report import Metric, WeightCheck
from benchmarks.targets import Target

MIB = 1024 * 1024


@dataclass
class Context:
    duration: float
    pinning: Pinning
    use_iperf3: bool
    samples: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    problems: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))

    def record(self, target: Target, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.samples[(key, target.name)].append(value)


LoadFn = Callable[[Target, Context], dict[str, float]]


def http_load(prefix: str, conns: int, close: bool, percentile: int, https: bool = False) -> LoadFn:
    """wrk against the target's HTTP listener (or, `https`, its TLS listener with the same route)."""
    def run(target: Target, ctx: Context) -> dict[str, float]:
        cpu_before = cpu_seconds(target.pids())
        port = target.https_port if https else target.http_port
        result = loads.run_wrk(port, conns, ctx.duration, close=close, https=https)
        cpu = cpu_seconds(target.pids()) - cpu_before
        if result.socket_errors or result.non_2xx:
            ctx.problems[(prefix, target.name)].append(
                f"{result.socket_errors} socket errors, {result.non_2xx} non-2xx of {result.requests}")
        values = {f"{prefix}_rps": result.rps,
                  f"{prefix}_p{percentile}": result.latency_ms.get(percentile, 0.0) * 1000}  # µs
        if target.is_proxy and result.requests:
            values[f"{prefix}_cpu"] = cpu * 1e6 / result.requests
        return values

    return run


def _timed_loadgen(target: Target, ctx: Context, *args: str) -> tuple[dict[str, object], float]:
    """Run the Python load client for the load's duration: its result, and the proxy's CPU seconds meanwhile."""
    cpu_before = cpu_seconds(target.pids())
    result = loads.run_loadgen(*args, "--seconds", f"{ctx.duration:g}", timeout=ctx.duration + 60)
    return result, cpu_seconds(target.pids()) - cpu_before


def _tcp_load(load: str, mode: str, unit: str) -> LoadFn:
    """A TCP load of the load client's `mode` (50 connections, 64-byte messages): rate, and proxy CPU per
    `unit` (the result's count of round trips or connections)."""

    def run(target: Target, ctx: Context) -> dict[str, float]:
        result, cpu = _timed_loadgen(target, ctx, mode, "--port", str(target.tcp_port), "--conns", "50",
                                     "--size", "64")
        if result["errors"]:
            ctx.problems[(load, target.name)].append(f"{result['errors']} connections failed")
        values = {f"{load}_rate": float(result["rate"])}  # type: ignore[arg-type]
        if target.is_proxy and result[unit]:
            values[f"{load}_cpu"] = cpu * 1e6 / float(result[unit])  # type: ignore[arg-type]
        return values

    return run


tcp_rr_load = _tcp_load("tcp_rr", "pingpong", "round_trips")  # request/response on open connections
tcp_connect_load = _tcp_load("tcp_connect", "connect", "connections")  # each echoes 64 bytes once and closes


def tls_handshake_load(target: Target, ctx: Context) -> dict[str, float]:
    """New TLS connections through the HTTPS listener: each a full handshake (no session offered), one
    `Connection: close` request, then the close."""
    result, cpu = _timed_loadgen(target, ctx, "tls-handshake", "--port", str(target.https_port), "--conns", "50")
    problems = []
    if result["errors"]:
        problems.append(f"{result['errors']} connections failed")
    if result["resumed"]:
        problems.append(f"{result['resumed']} handshakes resumed a session")
    if result.get("server_resumes") is False:
        problems.append("refuses session resumption, so its HTTPS `Connection: close` row is full handshakes too")
    versions: dict[str, int] = result["versions"]  # type: ignore[assignment]
    if set(versions) - {"TLSv1.3"}:
        problems.append(f"TLS versions negotiated: {versions}")
    if problems:
        ctx.problems[("tls_handshake", target.name)].append("; ".join(problems))
    values = {"tls_handshake_rate": float(result["rate"]),  # type: ignore[arg-type]
              "tls_handshake_client_cpu": float(result["client_cpu"]) * 1e6}  # type: ignore[arg-type]
    if target.is_proxy and result["connections"]:
        values["tls_handshake_cpu"] = cpu * 1e6 / float(result["connections"])  # type: ignore[arg-type]
    return values


def record_tls_cost(ctx: Context, target: Target) -> None:
    """TLS termination's CPU per keep-alive request: HTTPS minus HTTP, round by round (both loads ran once per
    round over the same route). Left out when either load failed in some round: the pairs would not match."""
    pair = ("http_c50", "https_c50")
    if any(p.startswith("failed") for load in pair for p in ctx.problems.get((load, target.name), [])):
        return
    plain, tls = (ctx.samples.get((f"{load}_cpu", target.name), []) for load in pair)
    if plain and len(plain) == len(tls):
        ctx.samples[("tls_cost_cpu", target.name)] = [b - a for a, b in zip(plain, tls, strict=True)]


def bulk_load(target: Target, ctx: Context) -> dict[str, float]:
    cpu_before = cpu_seconds(target.pids())
    if ctx.use_iperf3:
        bps, received = loads.run_iperf3(target.bulk_port, ctx.duration)
    else:
        result = loads.run_loadgen("bulk", "--port", str(target.bulk_port), "--seconds", f"{ctx.duration:g}",
                                   timeout=ctx.duration + 60)
        bps, received = float(result["bits_per_second"]), int(result["bytes"])  # type: ignore[arg-type]
    cpu = cpu_seconds(target.pids()) - cpu_before
    values = {"bulk_gbps": bps / 1e9}
    if target.is_proxy and received:
        values["bulk_cpu"] = cpu * 1000 / (received / 2**30)
    return values


def build_metrics(idle_http: int, idle_tcp: int, use_iperf3: bool) -> list[Metric]:
    bulk = "iperf3" if use_iperf3 else "Python sender"
    return [
        Metric("http_c50_rps", "HTTP keep-alive, 50 conns", "req/s", True),
        Metric("http_c50_p99", "… p99 latency", "µs", False),
        Metric("http_c50_cpu", "… proxy CPU per request", "µs", False),
        Metric("http_c1_rps", "HTTP keep-alive, 1 conn", "req/s", True),
        Metric("http_c1_p50", "… p50 latency", "µs", False),
        Metric("http_c1_cpu", "… proxy CPU per request", "µs", False),
        Metric("http_close_rps", "HTTP `Connection: close`, 50 conns", "req/s", True),
        Metric("http_close_p99", "… p99 latency", "µs", False),
        Metric("http_close_cpu", "… proxy CPU per request", "µs", False),
        Metric("https_c50_rps", "HTTPS keep-alive, 50 conns (TLS 1.3)", "req/s", True),
        Metric("https_c50_p99", "… p99 latency", "µs", False),
        Metric("https_c50_cpu", "… proxy CPU per request", "µs", False),
        Metric("tls_cost_cpu", "… TLS termination's share (HTTPS − HTTP keep-alive, same round)", "µs", False),
        Metric("https_close_rps", "HTTPS `Connection: close`, 50 conns (wrk: resumed sessions)", "req/s", True),
        Metric("https_close_p99", "… p99 latency", "µs", False),
        Metric("https_close_cpu", "… proxy CPU per request (resumed handshake + request)", "µs", False),
        Metric("tls_handshake_rate", "New TLS connections, full handshake + 1 request, 50 at a time", "conns/s",
               True),
        Metric("tls_handshake_cpu", "… proxy CPU per handshake (+ request)", "µs", False),
        Metric("tls_handshake_client_cpu", "… load client's CPU per handshake (its limit: 1 s ÷ this)", "µs", False),
        Metric("tcp_rr_rate", "TCP request/response, 50 conns × 64 B", "round trips/s", True),
        Metric("tcp_rr_cpu", "… proxy CPU per round trip", "µs", False),
        Metric("tcp_connect_rate", "New TCP connections, 50 at a time × 64 B echoed once", "conns/s", True),
        Metric("tcp_connect_cpu", "… proxy CPU per connection", "µs", False),
        Metric("bulk_gbps", f"TCP bulk, 1 conn ({bulk})", "Gbit/s", True),
        Metric("bulk_cpu", "… proxy CPU per GiB", "ms", False),
        Metric("rss_start", "RSS after start", "MiB", False),
        Metric("rss_after_load", "RSS after the loads", "MiB", False),
        Metric("rss_idle_http", f"RSS, fresh process + {idle_http:,} idle HTTP conns", "MiB", False),
        Metric("idle_http_per_conn", "… per idle HTTP conn", "KiB", False),
        Metric("rss_idle_tcp", f"RSS, fresh process + {idle_tcp:,} idle TCP conns (relayed)", "MiB", False),
        Metric("idle_tcp_per_conn", "… per idle TCP conn", "KiB", False),
    ]


def measure_idle(target: Target, mode: str, count: int, ctx: Context) -> None:
    """Open `count` connections (one exchange each, then idle) and read the proxy's RSS while they are held.

    The proxy is restarted first: memory freed by earlier loads but kept by the allocator would otherwise
    absorb part of the new connections and make the per-connection cost depend on what ran before.
    """
    reason = target.restart()
    if reason:
        raise RuntimeError(f"restart failed: {reason}")
    port = target.http_port if mode == "http" else target.tcp_port
    before = rss_bytes(target.pids())
    argv = loads.loadgen_argv("idle", "--port", str(port), "--count", str(count), "--mode", mode)
    with tempfile.TemporaryFile() as errors:
        holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                  cwd=str(Path(__file__).resolve().parents[1]))
        try:
            assert holder.stdout is not None and holder.stdin is not None
            ready, _, _ = select.select([holder.stdout], [], [], 180.0)
            line = holder.stdout.readline() if ready else b""
            if line:
                time.sleep(1.0)  # let the proxy finish upstream connects and settle its buffers
                after = rss_bytes(target.pids())
                holder.stdin.close()
                holder.wait(60)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
        if not line:
            errors.seek(0)
            last = errors.read().decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"idle client gave no result: {last[0][:300]}")
    info = json.loads(line)
    if info["failed"]:
        ctx.problems[(f"idle_{mode}", target.name)].append(
            f"{info['failed']} of {count} idle connections failed ({info['error']})")
    ctx.record(target, {f"rss_idle_{mode}": after / MIB})
    if info["opened"]:
        ctx.record(target, {f"idle_{mode}_per_conn": (after - before) / info["opened"] / 1024})


def measure_weights(target: Target, ctx: Context, requests: int, connections: int,
                    checks: dict[tuple[str, str], WeightCheck]) -> None:
    result = loads.run_loadgen("weights-http", "--port", str(target.http_port), "--requests", str(requests),
                               timeout=120)
    counts: dict[str, int] = result["counts"]  # type: ignore[assignment]
    checks[("HTTP 50/50", target.name)] = WeightCheck(counts.get("v1", 0), int(result["total"]),  # type: ignore
                                                      HTTP_WEIGHTS[0] / sum(HTTP_WEIGHTS))
    if target.serves_tcp:
        result = loads.run_loadgen("weights-tcp", "--port", str(target.tcp_port), "--connections",
                                   str(connections), timeout=120)
        counts = result["counts"]  # type: ignore[assignment]
        checks[("TCP 80/20", target.name)] = WeightCheck(counts.get("v1", 0), int(result["total"]),  # type: ignore
                                                         TCP_WEIGHTS[0] / sum(TCP_WEIGHTS))
