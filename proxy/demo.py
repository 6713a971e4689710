"""`shiftproxy demo`: the two Istio traffic-shifting tasks on this machine, as plain processes.

Starts the sample apps (`python -m proxy.samples all`), the ingress gateway (8080 HTTP, 31400 TCP, admin 15000)
and productpage's sidecar (15001, admin 15002), all reading one working copy of config/. Interactive mode
prints the URLs and the steps and waits for Ctrl-C; `--scripted` walks both tasks and prints the split
observed after each step. Children die with the demo (PR_SET_PDEATHSIG), so nothing is left behind.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GATEWAY_ADMIN = "127.0.0.1:15000"
SIDECAR_ADMIN = "127.0.0.1:15002"
# both proxies read one config directory: a change goes to the first and waits until the second serves it
ADMINS = f"{GATEWAY_ADMIN},{SIDECAR_ADMIN}"
PORTS = {"gateway HTTP": 8080, "gateway TCP": 31400, "gateway admin": 15000, "sidecar HTTP": 15001,
         "sidecar admin": 15002, "productpage": 9080, "details": 9081, "reviews v1": 9091, "reviews v2": 9092,
         "reviews v3": 9093, "ratings": 9095, "tcp-echo v1": 19001, "tcp-echo v2": 19002}
RED = "gap-x-1 text-red-500"  # v3's star block (not bare text-red-500: error paragraphs use it too)
BLACK = "gap-x-1 text-black-500"  # v2's

HTTP_STEPS = ("virtual-service-all-v1.yaml", "virtual-service-reviews-50-v3.yaml", "virtual-service-reviews-v3.yaml")
TCP_STEPS = ("tcp-echo-all-v1.yaml", "tcp-echo-20-v2.yaml")


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="run the Bookinfo and tcp-echo traffic-shifting tasks locally")
    demo.add_argument("--scripted", action="store_true", help="walk both tasks and print the observed splits")
    demo.add_argument("--requests", type=int, default=100, help="requests / connections per step (default 100)")
    demo.add_argument("--istio-samples", type=Path, metavar="DIR", default=None,
                      help="the samples/ directory of an Istio checkout: apply its step files "
                           "(default $ISTIO_SAMPLES; without either, this project's config/steps)")
    demo.add_argument("--steps", type=Path, metavar="DIR", default=None,
                      help="one directory holding all five step files (overrides --istio-samples)")
    demo.set_defaults(func=run_demo)


def step_files(steps: Path | None = None, istio_samples: Path | None = None) -> tuple[Path, Path]:
    """(HTTP steps dir, TCP steps dir): --steps, else an Istio checkout's samples/ (--istio-samples or
    $ISTIO_SAMPLES), else config/steps. ValueError when a directory given lacks the step files."""
    if steps is not None:
        dirs = (steps, steps)
    else:
        istio = istio_samples or (Path(os.environ["ISTIO_SAMPLES"]) if os.environ.get("ISTIO_SAMPLES") else None)
        if istio is None:
            return REPO / "config" / "steps", REPO / "config" / "steps"
        dirs = (istio / "bookinfo" / "networking", istio / "tcp-echo")
    missing = [str(d / name) for d, names in zip(dirs, (HTTP_STEPS, TCP_STEPS), strict=True) for name in names
               if not (d / name).is_file()]
    if missing:
        raise ValueError("step files not found: " + ", ".join(missing))
    return dirs


def shown(path: Path) -> str:
    """A path as the user types it: relative to the current directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --- processes ----------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Runs in each child before exec: get SIGTERM when the demo process dies, however it dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                preexec_fn=_die_with_parent)
        self.children.append((name, proc))

    def check(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                log = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{log}")

    def stop(self) -> None:
        for _, proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in self.children:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def busy_ports() -> list[str]:
    busy = []
    for what, port in PORTS.items():
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(f"{port} ({what})")
    return busy


def wait_until(check: Callable[[], bool], what: str, procs: Processes, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check()
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def admin_get(admin: str, path: str) -> bytes:
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=3) as resp:
        return resp.read()  # type: ignore[no-any-return]


def start_all(workdir: Path) -> Processes:
    config = workdir / "config"
    shutil.copytree(REPO / "config" / "bookinfo", config / "bookinfo")
    shutil.copytree(REPO / "config" / "tcp-echo", config / "tcp-echo")
    procs = Processes(workdir)
    procs.start("apps", ["-m", "proxy.samples", "all", "--proxy", "http://127.0.0.1:15001"])
    common = ["-m", "proxy", "run", "--config", str(config), "--state-dir", str(workdir / "state")]
    procs.start("gateway", [*common, "--role", "gateway", "--bind", "127.0.0.1", "--admin", GATEWAY_ADMIN])
    procs.start("sidecar", [*common, "--role", "mesh", "--mesh-port", "15001", "--admin", SIDECAR_ADMIN])
    for admin in (GATEWAY_ADMIN, SIDECAR_ADMIN):
        wait_until(lambda a=admin: admin_get(a, "/ready").startswith(b"LIVE"), f"proxy admin {admin}", procs)
    wait_until(lambda: _connects(9080) and _connects(19002), "sample apps", procs)
    return procs


def _connects(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- the walkthrough ----------------------------------------------------------------------------------


def apply(path: Path) -> str:
    """`shiftproxy apply -f` as a user runs it: to the gateway, then waiting for the sidecar too."""
    out = subprocess.run([sys.executable, "-m", "proxy", "apply", "-f", str(path)], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "SHIFTPROXY_ADMIN": ADMINS})
    if out.returncode != 0:
        raise RuntimeError(f"apply -f {path} failed:\n{out.stdout}{out.stderr}")
    return out.stdout.strip()


def productpage_split(n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        with urllib.request.urlopen("http://127.0.0.1:8080/productpage", timeout=10) as resp:
            page = resp.read().decode()
        seen["red stars (v3)" if RED in page else "black stars (v2)" if BLACK in page else "no stars (v1)"] += 1
    return seen


def tcp_split(n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", 31400), timeout=10) as s:
            s.sendall(time.strftime("%a %b %d %H:%M:%S UTC %Y\n", time.gmtime()).encode())
            reply = s.makefile("rb").readline().decode()
        seen[reply.split(" ", 1)[0] or "(closed)"] += 1
    return seen


def table(title: str, seen: Counter[str], n: int) -> str:
    lines = [f"  {title}", "  | result | count | share |", "  |---|---:|---:|"]
    for key, count in sorted(seen.items()):
        lines.append(f"  | {key} | {count} | {100 * count / n:.0f} % |")
    return "\n".join(lines)


def scripted(procs: Processes, n: int, steps: tuple[Path, Path]) -> None:
    http_dir, tcp_dir = steps
    print(f"\nHTTP traffic shifting: {n} requests to http://127.0.0.1:8080/productpage after each step")
    for name in HTTP_STEPS:
        print(f"\n$ shiftproxy apply -f {shown(http_dir / name)}\n{apply(http_dir / name)}")
        print(table(f"after {name}", productpage_split(n), n), flush=True)
    print(f"\nTCP traffic shifting: {n} connections of `(date; sleep 1) | nc 127.0.0.1 31400` after each step")
    for name in TCP_STEPS:
        print(f"\n$ shiftproxy apply -f {shown(tcp_dir / name)}\n{apply(tcp_dir / name)}")
        print(table(f"after {name}", tcp_split(n), n), flush=True)


def guide(steps: tuple[Path, Path], workdir: Path) -> str:
    http_dir, tcp_dir = steps
    return f"""
shiftproxy demo is running (logs and live config in {workdir})

  Bookinfo            http://127.0.0.1:8080/productpage      (ingress gateway)
  tcp-echo            (date; sleep 1) | nc -N 127.0.0.1 31400   (ingress gateway, TCP)
  gateway admin       http://{GATEWAY_ADMIN}/config_dump   /metrics
  productpage sidecar http://127.0.0.1:15001 (HTTP_PROXY of productpage; admin http://{SIDECAR_ADMIN})

In another terminal (both proxies read one config directory; `apply` waits until both serve a change):
  export PATH={Path(sys.executable).parent}:$PATH SHIFTPROXY_ADMIN={ADMINS}

HTTP task (Istio: kubectl apply -f samples/bookinfo/networking/...):
  shiftproxy apply -f {shown(http_dir / HTTP_STEPS[0])}
  shiftproxy apply -f {shown(http_dir / HTTP_STEPS[1])}
  shiftproxy get virtualservice reviews -o yaml
  for i in $(seq 100); do curl -s http://127.0.0.1:8080/productpage | grep -c '{RED}'; done | sort | uniq -c
  shiftproxy apply -f {shown(http_dir / HTTP_STEPS[2])}

TCP task:
  shiftproxy apply -f {shown(tcp_dir / TCP_STEPS[0])}
  for i in $(seq 20); do (date; sleep 1) | nc -N 127.0.0.1 31400; done   # busybox nc: no -N
  shiftproxy apply -f {shown(tcp_dir / TCP_STEPS[1])}

Ctrl-C stops everything."""


def run_demo(args: argparse.Namespace) -> int:
    try:
        steps = step_files(args.steps, args.istio_samples)
    except ValueError as exc:
        print(f"shiftproxy demo: {exc}", file=sys.stderr)
        return 2
    busy = busy_ports()
    if busy:
        print("shiftproxy demo: these ports are in use: " + ", ".join(busy), file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="shiftproxy-demo-"))
    procs = Processes(workdir)
    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        procs = start_all(workdir)
        if args.scripted:
            scripted(procs, args.requests, steps)
            return 0
        print(guide(steps, workdir), flush=True)
        while not stop:
            procs.check()
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"shiftproxy demo: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop()
        print("demo stopped", file=sys.stderr)
