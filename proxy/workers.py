"""`shiftproxy run --workers N`: N proxy processes sharing every listener through SO_REUSEPORT.

The kernel spreads new connections over the workers. Each worker is a whole proxy that loads and
watches the same config paths. Worker 0 serves the admin API on the address asked for; the others bind
an ephemeral loopback admin port and note it in a shared run directory, so worker 0 can
- sum their metrics into one `/metrics` (counters and histograms add up; the config version is the
  lowest any worker serves, so a dashboard never claims a change that is not live everywhere);
- make every change live in every worker before it is live in worker 0: worker 0 alone watches the
  config and takes SIGHUP, `POST /reload` and `apply`; when its new config is valid and different it
  asks each other worker to reload and waits for them, then swaps its own. Whatever answers from
  worker 0 (the reload or apply answer, its config version) is then true of every worker.
The supervisor forwards SIGTERM/SIGINT to every worker and SIGHUP to worker 0, and restarts a worker
that dies unexpectedly.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("shiftproxy.workers")

WORKER_INDEX_ENV = "SHIFTPROXY_WORKER_INDEX"
WORKER_DIR_ENV = "SHIFTPROXY_WORKER_DIR"
WORKER_COUNT_ENV = "SHIFTPROXY_WORKERS"
MIN_GAUGES = frozenset({"shiftproxy_config_version"})


# --- inside a worker ----------------------------------------------------------------------------------


def worker_index() -> int:
    return int(os.environ.get(WORKER_INDEX_ENV, "0"))


def worker_dir() -> Path | None:
    value = os.environ.get(WORKER_DIR_ENV)
    return Path(value) if value else None


def missing_workers() -> int:
    """For worker 0: how many other workers have not bound their listeners yet (so /ready waits)."""
    if worker_index() != 0 or worker_dir() is None:
        return 0
    return max(0, int(os.environ.get(WORKER_COUNT_ENV, "1")) - 1 - len(sibling_admins()))


def announce_admin(port: int) -> None:
    """A secondary worker notes its admin port for worker 0 (written whole, then renamed into place)."""
    directory = worker_dir()
    if directory is None:
        return
    tmp = directory / f".worker-{worker_index()}.tmp"
    tmp.write_text(str(port))
    os.replace(tmp, directory / f"worker-{worker_index()}.port")


def sibling_admins() -> list[str]:
    """Admin addresses of the other workers (for worker 0)."""
    directory = worker_dir()
    if directory is None or worker_index() != 0:
        return []
    return [f"127.0.0.1:{p.read_text().strip()}" for p in sorted(directory.glob("worker-*.port"))]


def fetch(address: str, path: str, method: str = "GET", timeout: float = 10.0) -> bytes:
    request = urllib.request.Request(f"http://{address}{path}", method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return resp.read()  # type: ignore[no-any-return]


def reload_siblings() -> list[str]:
    """Ask every other worker to reload now, all at once (blocking; run it in a thread). Returns the
    failures."""
    addresses = sibling_admins()
    if not addresses:
        return []
    with ThreadPoolExecutor(max_workers=len(addresses)) as pool:
        answers = list(pool.map(_reload_one, addresses))
    return [a for a in answers if a]


def _reload_one(address: str) -> str:
    try:
        fetch(address, "/reload", "POST")
    except OSError as exc:  # urllib's HTTPError (a worker rejecting the config) is an OSError too
        return f"worker at {address}: {exc}"
    return ""


def merge_metrics(own: str, others: list[str]) -> Iterator[Metric]:
    """Families of several workers' exposition texts, samples with equal names and labels summed."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in (own, *others):
        for family in text_string_to_metric_families(text):
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            bucket = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key in bucket and family.name in MIN_GAUGES:
                    bucket[key] = min(bucket[key], sample.value)
                else:
                    bucket[key] = bucket.get(key, 0.0) + sample.value
    for name, metric in merged.items():
        for (sample_name, labels), value in values[name].items():
            metric.add_sample(sample_name, dict(labels), value)
        yield metric


# --- the supervisor -----------------------------------------------------------------------------------


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def supervise(argv: list[str], workers: int) -> int:
    """Run `argv` (a `run` command line without --workers) as `workers` processes until SIGTERM/SIGINT."""
    run_dir = Path(tempfile.mkdtemp(prefix="shiftproxy-workers-"))
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def start(index: int) -> None:
        env = {**os.environ, WORKER_INDEX_ENV: str(index), WORKER_DIR_ENV: str(run_dir),
               WORKER_COUNT_ENV: str(workers)}
        procs[index] = subprocess.Popen([sys.executable, "-m", "proxy", *argv], env=env, preexec_fn=_die_with_parent)

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        # SIGHUP to worker 0 only: it reloads every other worker before itself
        targets = [procs[0]] if signum == signal.SIGHUP and 0 in procs else list(procs.values())
        for proc in targets:
            if proc.poll() is None:
                proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    start(0)  # worker 0 first: a config or bind error shows once, and stops everything
    time.sleep(0.3)
    if procs[0].poll() is not None:
        return procs[0].returncode or 1
    for index in range(1, workers):
        start(index)
    restarts = 0
    while not stopping:
        time.sleep(0.2)
        for index, proc in list(procs.items()):
            if proc.poll() is not None and not stopping:
                restarts += 1
                if restarts > 10 * workers:
                    log.error("workers keep dying; stopping")
                    forward(signal.SIGTERM, None)
                    break
                log.error("worker %d exited with %s; restarting it", index, proc.returncode)
                start(index)
    codes = [proc.wait() for proc in procs.values()]
    for port_file in run_dir.glob("*"):
        port_file.unlink()
    run_dir.rmdir()
    return 0 if all(code == 0 for code in codes) else 1
