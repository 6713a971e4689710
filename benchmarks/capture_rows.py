"""The transparent-capture rows of `benchmarks.run`: `benchmarks.capture` in a network namespace of its own.

Capture needs root (iptables or nft inside `unshare -n`), so this group runs only where those are at hand
and otherwise leaves a note saying what is missing. The proxy is pinned as in the main run; the loads are
`benchmarks.capture`'s (20 clients each), so compare its two paths with each other, not with the main table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = {
    "http-keepalive": ("HTTP keep-alive, 20 conns", "request"),
    "http-close": ("HTTP `Connection: close`, 20 conns", "request"),
    "tcp-connect": ("new TCP connections, 20 at a time × 64 B echoed", "connection"),
}


def unavailable() -> str | None:
    """Why the capture rows cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root (run `make bench` as root, or `make bench-capture`)"
    missing = [tool for tool in ("unshare", "ip", "setpriv") if shutil.which(tool) is None]
    if shutil.which("iptables") is None and shutil.which("nft") is None:
        missing.append("iptables or nft")
    return f"missing {', '.join(missing)}" if missing else None


def run(seconds: float, rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    """The capture benchmark's summary: load → {"cpu_us_per_op"|"ops_per_s": {"explicit"|"captured": value}}."""
    with tempfile.TemporaryDirectory(prefix="shiftproxy-bench-capture-out-") as tmp:
        out = Path(tmp) / "capture.json"
        argv = ["unshare", "-n", sys.executable, "-m", "benchmarks.capture", "--seconds", f"{seconds:g}",
                "--rounds", str(rounds), "--json", str(out)]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=seconds * rounds * 6 + 120,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0 or not out.exists():
            tail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"benchmarks.capture exited {done.returncode}: {tail[0][:300]}")
        summary: dict[str, dict[str, dict[str, float]]] = json.loads(out.read_text())["summary"]
        return summary


def section(summary: dict[str, dict[str, dict[str, float]]], seconds: float, rounds: int) -> str:
    """A markdown table: per load, proxy CPU per operation and rate through each path."""
    lines = ["", "Transparent capture (sidecar role, `--capture`, iptables REDIRECT in a private network namespace; "
             f"`benchmarks/capture.py`, {rounds} round(s) × {seconds:g} s per path, access logs off): the same "
             "proxy reached through its explicit listeners and through redirected connections to service VIPs.", "",
             "| load | explicit: proxy CPU | captured: proxy CPU | capture's share | explicit rate | captured rate |",
             "| --- | --- | --- | --- | --- | --- |"]
    for load, (label, unit) in LABELS.items():
        row = summary.get(load)
        if row is None:
            continue
        cpu, rate = row["cpu_us_per_op"], row["ops_per_s"]
        lines.append(f"| {label} | {cpu['explicit']:.1f} µs per {unit} | {cpu['captured']:.1f} µs | "
                     f"{cpu['captured'] - cpu['explicit']:+.1f} µs | {rate['explicit']:,.0f}/s | "
                     f"{rate['captured']:,.0f}/s |")
    return "\n".join(lines) + "\n"
