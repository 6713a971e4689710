"""Memory under TLS full handshakes: rounds of `loadgen tls-handshake` against a real `shiftproxy run`.

    python -m benchmarks.tls_heap [--rounds 6] [--seconds 5] [--conns 50] [--env NAME=VALUE ...]

The proxy terminates TLS on an HTTPS Gateway server (the benchmark's Istio config, a trustme ECDSA
certificate) in front of the Python HTTP backends; each round opens new connections without a session to
resume, one `Connection: close` request each. RSS (VmRSS) is printed before the first round and after each
one, with the growth per handshake since the first round (the first one warms up caches and pools), and the
proxy's CPU time per handshake in each round.
`--env` sets variables for the proxy only, e.g. `SHIFTPROXY_HEAP_RELEASE=off` to see the heap without the
periodic release, or glibc's `MALLOC_MMAP_THRESHOLD_=131072`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.istio_config import BackendPorts, ListenerPorts, bench_istio_yaml
from benchmarks.procs import cpu_seconds, wait_port
from benchmarks.reload_leak import ROOT, free_port, rss_mib, start_proxy
from benchmarks.tls_setup import SERVER_NAME, make_tls_files


def handshake_round(port: int, conns: int, seconds: float) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", "tls-handshake", "--port", str(port),
                          "--conns", str(conns), "--seconds", str(seconds), "--server-name", SERVER_NAME],
                         capture_output=True, cwd=ROOT, timeout=seconds + 120, check=True)
    return json.loads(out.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tls_heap", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one round")
    parser.add_argument("--conns", type=int, default=50, help="concurrent handshaking clients")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait after each round before reading RSS (lets a periodic release run)")
    parser.add_argument("--access-log", choices=("text", "json", "off"), default="text")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="for the proxy only")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the proxy")
    parser.add_argument("--proxy-root", type=Path, default=ROOT, help="checkout whose proxy runs (to compare)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="shiftproxy-tls-heap-"))
    config_dir = work / "config"
    config_dir.mkdir()
    tls = make_tls_files(work / "tls")
    listeners = ListenerPorts(free_port(), free_port(), free_port(), https=free_port())
    backends = BackendPorts(*(free_port() for _ in range(5)))
    (config_dir / "bench.yaml").write_text(bench_istio_yaml(listeners, backends, tls=tls))
    backend = subprocess.Popen([sys.executable, "-m", "benchmarks.backend", "http", f"{backends.http_v1}=v1",
                                f"{backends.http_v2}=v2"], cwd=ROOT, stdout=subprocess.DEVNULL)
    saved = dict(os.environ)
    os.environ.update(item.split("=", 1) for item in args.env)  # start_proxy passes os.environ on
    proc = None
    try:
        if not wait_port(backends.http_v1, 30) or not wait_port(backends.http_v2, 30):
            raise RuntimeError("backends did not come up")
        proc = start_proxy(config_dir, work / "state", f"127.0.0.1:{free_port()}", args.python,
                           args.proxy_root, ["--no-watch", "--access-log", args.access_log])
        os.environ.clear()
        os.environ.update(saved)
        print(f"proxy env: {' '.join(args.env) or '(default)'}; {args.rounds} rounds of {args.seconds:g} s, "
              f"{args.conns} clients")
        print(f"round 0: RSS {rss_mib(proc.pid):.1f} MiB (started)")
        total = 0
        first: tuple[int, float] | None = None
        for index in range(1, args.rounds + 1):
            cpu = cpu_seconds([proc.pid])
            result = handshake_round(listeners.https, args.conns, args.seconds)
            cpu = cpu_seconds([proc.pid]) - cpu
            if args.settle:
                time.sleep(args.settle)
            rss = rss_mib(proc.pid)
            count = int(result["connections"])  # type: ignore[call-overload]
            total += count
            line = (f"round {index}: {count} handshakes ({result['rate']:.0f}/s, {result['errors']} errors, "
                    f"proxy CPU {cpu * 1e6 / max(count, 1):.0f} µs each), total {total}: RSS {rss:.1f} MiB")
            if first is None:
                first = (total, rss)
            elif total > first[0]:
                line += f", {(rss - first[1]) * 1024 * 1024 / (total - first[0]):+.0f} B per handshake since round 1"
            print(line, flush=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for child in (proc, backend):
            if child is not None:
                child.terminate()
                child.wait(30)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
