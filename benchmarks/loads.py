"""Running one load and reading its result: wrk (HTTP), iperf3 (bulk), and the Python load clients.

Each runner starts the client, waits with a hard timeout, and returns parsed numbers. Clients inherit the
harness's CPU affinity (the harness pins itself to the load CPU). Parsing is separate (`parse_wrk`,
`parse_iperf3`) so it can be checked against recorded output.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_COUNT_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    latency_ms: dict[int, float]  # percentile → milliseconds
    socket_errors: int
    non_2xx: int


def parse_wrk(text: str) -> WrkResult:
    """Parse `wrk --latency` output."""
    match = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", text, re.M)
    if match is None:
        raise ValueError(f"no request count in wrk output:\n{text}")
    requests = int(match.group(1))
    seconds = float(match.group(2)) * _UNITS[match.group(3)] / 1000.0
    rps_match = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    rps = float(rps_match.group(1)) if rps_match else requests / seconds
    latency = {int(p): float(v) * _UNITS[u]
               for p, v, u in re.findall(r"^\s*(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    socket_errors = sum(int(g) for g in errors.groups()) if errors else 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(requests, seconds, rps, latency, socket_errors, int(non_2xx.group(1)) if non_2xx else 0)


def parse_iperf3(text: str) -> tuple[float, int]:
    """Receiver-side (bits per second, bytes) from `iperf3 -J` output."""
    data = json.loads(text)
    if "error" in data:
        raise ValueError(f"iperf3: {data['error']}")
    received = data["end"]["sum_received"]
    return float(received["bits_per_second"]), int(received["bytes"])


def _run(argv: list[str], timeout: float) -> str:
    done = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          cwd=str(Path(__file__).resolve().parents[1]))
    if done.returncode != 0:
        output = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        tail = output[-1][:300] if output else "no output"  # a traceback's last line names the error
        raise RuntimeError(f"{' '.join(argv[:4])}… exited {done.returncode}: {tail}")
    return done.stdout.decode(errors="replace")


def run_wrk(port: int, conns: int, seconds: float, close: bool = False, https: bool = False) -> WrkResult:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"{'https' if https else 'http'}://127.0.0.1:{port}/")  # wrk does not verify certificates
    return parse_wrk(_run(argv, timeout=seconds + 30))


def run_iperf3(port: int, seconds: float) -> tuple[float, int]:
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", f"{seconds:g}", "-J"]
    # iperf3 -J reports failures as JSON too, with a non-zero exit status.
    done = subprocess.run(argv, capture_output=True, timeout=seconds + 30, stdin=subprocess.DEVNULL)
    return parse_iperf3(done.stdout.decode(errors="replace") or '{"error": "no output"}')


def loadgen_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.loadgen", *args]


def run_loadgen(*args: str, timeout: float) -> dict[str, object]:
    lines = _run(loadgen_argv(*args), timeout).strip().splitlines()
    return json.loads(lines[-1])
