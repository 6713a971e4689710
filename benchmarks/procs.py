"""Processes of a benchmark run: start pinned to CPUs, wait for readiness, read CPU time and RSS, stop.

CPU time and RSS come straight from /proc and cover a process and all its descendants (nginx runs a
master and a worker), every thread included (Envoy's workers, Python's executor threads).
"""

from __future__ import annotations

import os
import random
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Pinning:
    load_cpus: frozenset[int] | None  # load generators and backends
    proxy_cpus: frozenset[int] | None  # the proxy under test
    note: str


def plan_pinning() -> Pinning:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Pinning(None, None, f"{len(cpus)} CPU available: nothing pinned, proxies share the CPU with the load")
    load, proxy = cpus[0], cpus[1]
    note = f"{len(cpus)} CPUs: proxy under test pinned to CPU {proxy}; load generators and backends to CPU {load}"
    if len(cpus) > 2:
        note += f"; CPUs {cpus[2:]} unused"
    return Pinning(frozenset({load}), frozenset({proxy}), note)


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard limit (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_ports(count: int) -> list[int]:
    """Ports that are free now, chosen below the kernel's ephemeral range.

    Outgoing connections (10,000 idle ones among them) take their source ports from the ephemeral range;
    a listening port picked from there could be taken by a client between choosing and binding it.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    ports: list[int] = []
    candidate = random.randrange(10000, low - 2000) if low > 12000 else 0
    while len(ports) < count and candidate < low:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
                ports.append(sock.getsockname()[1])
            except OSError:
                pass
        candidate += 1 if candidate else 0
    if len(ports) < count:
        raise RuntimeError("not enough free ports below the ephemeral range")
    return ports


class Process:
    """A child process with its output in a log file, optionally pinned to CPUs before exec."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, cpus: frozenset[int] | None = None,
                 env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.cpus = cpus
        self.env = env
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        cpus = self.cpus

        def pin() -> None:
            # Before exec, so every thread the program creates inherits the mask.
            if cpus:
                os.sched_setaffinity(0, cpus)

        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=pin, start_new_session=True, env=self.env, cwd=self.cwd)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        # Our own child, started in its own session: signal its process group (nginx workers, envoy).
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes (all threads), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return ticks / CLK_TCK


def rss_bytes(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def wait_port(port: int, timeout: float, process: Process | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.05)
    return False


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore HTTP_PROXY here


def wait_http_ok(url: str, timeout: float, process: Process | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            return False
        try:
            with _NO_PROXY_OPENER.open(url, timeout=1.0) as response:
                if response.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    return False
