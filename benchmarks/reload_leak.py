"""Memory per config reload: N reloads of a real `shiftproxy run`, half unchanged, half changed.

    python -m benchmarks.reload_leak [--reloads 1000] [--limit-mib 5]

The proxy runs with `--no-watch` on the benchmark's Istio config (a Gateway with HTTP and TCP servers,
ServiceEntries, DestinationRules, a weighted VirtualService). Even reloads are `POST /reload` with the
files untouched (nothing to swap); odd ones first flip the weights in the file, so a new snapshot is
built and swapped. RSS (VmRSS) is read after a warm-up and at the end; the growth must stay under
--limit-mib (exit status 1 otherwise). No traffic: this isolates what a load keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.istio_config import BackendPorts, ListenerPorts, bench_istio_yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def admin_call(admin: str, path: str, method: str = "GET") -> dict[str, object]:
    request = urllib.request.Request(f"http://{admin}{path}", method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def start_proxy(config_dir: Path, state_dir: Path, admin: str, python: str, root: Path,
                extra: list[str]) -> subprocess.Popen[bytes]:
    log = open(config_dir.parent / "proxy.log", "wb")  # noqa: SIM115 - lives as long as the process
    # gateway role only: the sidecar role would also bind the services' own ports (9000, 5201)
    proc = subprocess.Popen([python, "-m", "proxy", "run", "--config", str(config_dir), "--bind", "127.0.0.1",
                             "--role", "gateway",
                             "--mesh-port", str(free_port()), "--admin", admin, "--access-log", "off",
                             *extra],
                            stdout=log, stderr=subprocess.STDOUT, cwd=root,
                            env={**os.environ, "SHIFTPROXY_STATE_DIR": str(state_dir)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited: {(config_dir.parent / 'proxy.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://{admin}/ready", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("proxy not ready after 30 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reload_leak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reloads", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50, help="reloads before the first RSS reading")
    parser.add_argument("--limit-mib", type=float, default=5.0)
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the proxy")
    parser.add_argument("--proxy-root", type=Path, default=ROOT, help="checkout whose proxy runs (to compare)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="shiftproxy-reload-leak-"))
    config_dir = work / "config"
    config_dir.mkdir()
    listeners = ListenerPorts(free_port(), free_port(), free_port())
    backends = BackendPorts(*(free_port() for _ in range(5)))  # never contacted: no traffic here
    config = config_dir / "bench.yaml"

    def write(flip: bool) -> None:
        weights = (30, 70) if flip else (70, 30)
        tmp = config_dir / ".bench.yaml.tmp"
        tmp.write_text(bench_istio_yaml(listeners, backends, http_weights=weights, tcp_weights=weights))
        os.replace(tmp, config)

    write(False)
    admin = f"127.0.0.1:{free_port()}"
    proc = start_proxy(config_dir, work / "state", admin, args.python, args.proxy_root, ["--no-watch"])
    flip = False
    changed = unchanged = 0

    def reload(i: int) -> None:
        nonlocal flip, changed, unchanged
        if i % 2:
            flip = not flip
            write(flip)
        answer = admin_call(admin, "/reload", "POST")
        if not answer.get("ok"):
            raise RuntimeError(f"reload {i} failed: {answer}")
        if answer.get("changed"):
            changed += 1
        else:
            unchanged += 1

    try:
        for i in range(args.warmup):
            reload(i)
        before = rss_mib(proc.pid)
        started = time.monotonic()
        for i in range(args.reloads):
            reload(args.warmup + i)
        elapsed = time.monotonic() - started
        after = rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    grown = after - before
    print(f"reloads: {args.reloads} ({changed - args.warmup // 2} changed, {unchanged - (args.warmup + 1) // 2} "
          f"unchanged) in {elapsed:.1f} s after {args.warmup} warm-up reloads")
    print(f"RSS: {before:.1f} MiB -> {after:.1f} MiB: {grown:+.2f} MiB "
          f"({grown * 1024 / max(args.reloads, 1):+.2f} KiB per reload); limit {args.limit_mib} MiB")
    ok = grown < args.limit_mib
    print("PASS" if ok else "FAIL")
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"proxy log: {work / 'proxy.log'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
