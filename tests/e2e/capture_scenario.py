"""The transparent-capture scenario, run inside a private network namespace (`unshare -n`, as root).

    unshare -n python -m tests.e2e.capture_scenario RESULT.json

Starts the upstreams (reviews v1/v2/v3 and tcp-echo one/two on 127.0.0.1, a service whose endpoint is
127.10.0.5:8000 inside the captured range, an unregistered echo server on 127.10.0.9:7000), runs
`shiftproxy run --capture` as uid 1337 on ServiceEntries that give the services VIPs in 127.10.0.0/16,
installs `shiftproxy iptables`, then drives the seed's HTTP and TCP steps with `capture_app` processes
that have no proxy settings. Everything observed is written to RESULT.json for the test to judge.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.harness import Upstream, write_atomic
from tests.paths import BOOKINFO_NET, ROOT, TCP_ECHO

PROXY_UID = 1337
REVIEWS_VIP, TCP_ECHO_VIP, LOOP_VIP, LOOP_ENDPOINT, UNREGISTERED = (
    "127.10.0.2", "127.10.0.3", "127.10.0.4", "127.10.0.5", "127.10.0.9")
REVIEWS_VIP6 = "fd00::a02"  # a unique-local address given to this namespace's lo only
# inbound: a client in a second namespace of ours, over a veth pair with documentation addresses
POD_IP, CLIENT_IP, INBOUND_APP_PORT = "192.0.2.1", "192.0.2.2", 9180
ADMIN = "http://127.0.0.1:15000"
APP_ENV = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


def services(reviews: dict[str, int], one: int, two: int) -> str:
    eps = "".join(f"  - {{address: 127.0.0.1, ports: {{http: {p}}}, labels: {{app: reviews, version: {v}}}}}\n"
                  for v, p in reviews.items())
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  addresses: [{REVIEWS_VIP}, "{REVIEWS_VIP6}"]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
{eps}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tcp-echo}}
spec:
  hosts: [tcp-echo]
  addresses: [{TCP_ECHO_VIP}]
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {one}}}, labels: {{app: tcp-echo, version: v1}}}}
  - {{address: 127.0.0.1, ports: {{tcp: {two}}}, labels: {{app: tcp-echo, version: v2}}}}
---
# no protocol and a name without a known prefix: sniffed. Its endpoint is inside the captured range.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: loop}}
spec:
  hosts: [loop.example]
  addresses: [{LOOP_VIP}]
  ports: [{{number: 8000, name: web}}]
  resolution: STATIC
  endpoints:
  - {{address: {LOOP_ENDPOINT}, labels: {{app: loop, version: v1}}}}
"""


def tcp_step(name: str, kind: str = "VirtualService") -> str:
    """The `kind` objects of Istio's tcp-echo step; a VirtualService is bound to the sidecars (`mesh`,
    port 9000) instead of the ingress gateway."""
    docs = [d for d in yaml.safe_load_all((TCP_ECHO / name).read_text()) if d]
    out = []
    for doc in docs:
        if doc["kind"] != kind:
            continue
        if kind == "VirtualService":
            doc["spec"]["gateways"] = ["mesh"]
            doc["spec"]["hosts"] = ["tcp-echo"]
            for rule in doc["spec"]["tcp"]:
                for match in rule.get("match") or []:
                    match["port"] = 9000
        out.append(doc)
    return yaml.safe_dump_all(out)


class EchoServer:
    """tcp-echo: each line comes back as `<prefix> <line>`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.encode()
        self.port = 0
        self.accepted = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> EchoServer:
        self.server = await asyncio.start_server(self._serve, host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while (line := await reader.readline()).endswith(b"\n"):
                writer.write(self.prefix + b" " + line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


class Scenario:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config = workdir / "config"
        self.config.mkdir()
        self.config.chmod(0o755)
        self.proxy: subprocess.Popen[bytes] | None = None
        self.result: dict[str, Any] = {"steps": {}}
        self.version = 0

    # the proxy ------------------------------------------------------------------------------------

    def as_proxy_user(self) -> list[str]:
        """setpriv to uid/gid 1337. When the interpreter lives where uid 1337 may not look (a Python
        installed under /root), the proxy also gets CAP_DAC_READ_SEARCH, which only lets it find files."""
        base = ["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups"]
        probe = subprocess.run([*base, sys.executable, "-c", "import proxy"], cwd=ROOT, capture_output=True)
        if probe.returncode == 0:
            return base
        self.result["proxy_user_note"] = "uid 1337 cannot reach the interpreter: CAP_DAC_READ_SEARCH added"
        return [*base, "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]

    def start_proxy(self, *extra: str) -> None:
        log = open(self.workdir / "proxy.log", "ab")  # noqa: SIM115 - the child holds it
        self.proxy = subprocess.Popen(
            [*self.as_proxy_user(), sys.executable, "-m", "proxy", "run", "--config", str(self.config),
             "--role", "mesh", "--capture", "--inbound-capture-port", "15006", "--access-log", "off", *extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**APP_ENV, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proxy.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proxy.returncode}")
            try:
                self.version = self.config_version()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("proxy not ready")

    def stop_proxy(self) -> None:
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.terminate()
            try:
                self.proxy.wait(20)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait()

    def config_version(self) -> int:
        with urllib.request.urlopen(f"{ADMIN}/config_dump", timeout=5) as resp:
            return int(json.loads(resp.read())["version"])

    def apply(self, name: str, text: str) -> None:
        """Write a config file and wait for the proxy to serve it."""
        write_atomic(self.config / name, text)
        (self.config / name).chmod(0o644)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            version = self.config_version()
            if version > self.version:
                self.version = version
                return
            time.sleep(0.05)
        raise RuntimeError(f"config {name} was not served")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{ADMIN}/metrics", timeout=5) as resp:
            return resp.read().decode()

    # the application ---------------------------------------------------------------------------------

    def app(self, step: str, kind: str, host: str, port: int, n: int, *authority: str,
            netns: list[str] | None = None) -> dict[str, int]:
        out = subprocess.run([*(netns or []), sys.executable, "-m", "tests.e2e.capture_app", kind, host, str(port),
                              str(n), *authority],
                             capture_output=True, text=True, cwd=ROOT, env=APP_ENV, timeout=300, check=True)
        counts: dict[str, int] = json.loads(out.stdout)
        self.result["steps"][step] = counts
        return counts

    def iptables(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "proxy", "iptables", *args], capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"shiftproxy iptables {' '.join(args)} failed: {out.stderr}")
        return out.stdout


def client_namespace() -> tuple[subprocess.Popen[bytes], list[str]]:
    """A second network namespace joined to this one by a veth pair; returns its holder process and the
    command prefix that runs a program in it."""
    holder = subprocess.Popen(["unshare", "-n", "sleep", "600"])
    own = os.readlink("/proc/self/ns/net")
    for _ in range(500):
        if os.readlink(f"/proc/{holder.pid}/ns/net") != own:
            break
        time.sleep(0.01)
    enter = ["nsenter", "-t", str(holder.pid), "-n"]
    for cmd in (["ip", "link", "add", "sp-pod", "type", "veth", "peer", "name", "sp-client", "netns", str(holder.pid)],
                ["ip", "addr", "add", f"{POD_IP}/24", "dev", "sp-pod"], ["ip", "link", "set", "sp-pod", "up"],
                [*enter, "ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "sp-client"],
                [*enter, "ip", "link", "set", "sp-client", "up"], [*enter, "ip", "link", "set", "lo", "up"]):
        subprocess.run(cmd, check=True, capture_output=True)
    return holder, enter


async def run(result_path: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    ipv6 = subprocess.run(["ip", "-6", "addr", "add", f"{REVIEWS_VIP6}/128", "dev", "lo"], capture_output=True)
    reviews = {v: await Upstream(v).start() for v in ("v1", "v2", "v3")}
    one, two = await EchoServer("one").start(), await EchoServer("two").start()
    loop_upstream = Upstream("loop")
    loop_server = await asyncio.start_server(loop_upstream._serve, LOOP_ENDPOINT, 8000)
    unregistered = await EchoServer("outside").start(UNREGISTERED, 7000)
    inbound_app = Upstream("inbound-app")
    inbound_server = await asyncio.start_server(inbound_app._serve, "0.0.0.0", INBOUND_APP_PORT)
    holder, client_ns = client_namespace()
    workdir = Path(tempfile.mkdtemp(prefix="shiftproxy-capture-"))
    workdir.chmod(0o755)
    s = Scenario(workdir)
    result = s.result
    result["ipv6"] = ipv6.returncode == 0 and bool(shutil.which("ip6tables") or shutil.which("nft"))
    loop = asyncio.get_running_loop()

    async def app(*args: Any, netns: list[str] | None = None) -> dict[str, int]:
        # in a thread: the event loop keeps serving the upstreams
        return await loop.run_in_executor(None, lambda: s.app(*args, netns=netns))

    try:
        (s.config / "services.yaml").write_text(services({v: u.port for v, u in reviews.items()},
                                                         one.port, two.port))
        shutil.copy(BOOKINFO_NET / "destination-rule-all.yaml", s.config / "destination-rules.yaml")
        (s.config / "reviews.yaml").write_text((BOOKINFO_NET / "virtual-service-all-v1.yaml").read_text())
        (s.config / "tcp-echo-destination.yaml").write_text(tcp_step("tcp-echo-all-v1.yaml", "DestinationRule"))
        (s.config / "tcp-echo.yaml").write_text(tcp_step("tcp-echo-all-v1.yaml"))
        for f in s.config.iterdir():
            f.chmod(0o644)
        await loop.run_in_executor(None, s.start_proxy)
        result["iptables"] = s.iptables("--inbound-ports", str(INBOUND_APP_PORT))
        await app("vip-http-all-v1", "http", REVIEWS_VIP, 9080, 200)
        # the same listener still serves clients that address it (HTTP_PROXY style)
        await app("explicit-proxy-all-v1", "proxy", "127.0.0.1", 15001, 20)
        await loop.run_in_executor(None, s.apply, "reviews.yaml",
                                   (BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml").read_text())
        await app("vip-http-50-v3", "http", REVIEWS_VIP, 9080, 1000)
        await loop.run_in_executor(None, s.apply, "reviews.yaml",
                                   (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text())
        await app("vip-http-v3", "http", REVIEWS_VIP, 9080, 200)
        # an address in no ServiceEntry (a Kubernetes ClusterIP, say) but a Host the mesh knows
        await app("unlisted-ip-host-reviews", "http", "127.10.0.8", 9080, 20, "reviews:9080")
        if result["ipv6"]:
            await app("vip6-http-v3", "http", REVIEWS_VIP6, 9080, 20)
        await app("vip-tcp-all-v1", "tcp", TCP_ECHO_VIP, 9000, 200)
        await loop.run_in_executor(None, s.apply, "tcp-echo.yaml", tcp_step("tcp-echo-20-v2.yaml"))
        await app("vip-tcp-20-v2", "tcp", TCP_ECHO_VIP, 9000, 1000)
        await app("loop-vip", "http", LOOP_VIP, 8000, 100)
        await app("loop-endpoint", "http", LOOP_ENDPOINT, 8000, 100)
        result["loop_upstream_requests"] = loop_upstream.requests
        await app("unregistered-allow-any", "tcp", UNREGISTERED, 7000, 20)
        result["unregistered_accepted_allow_any"] = unregistered.accepted
        # inbound: a client in another namespace calls this "pod"; the sidecar relays to the application
        await app("inbound", "http", POD_IP, INBOUND_APP_PORT, 20, netns=client_ns)
        result["inbound_app_requests"] = inbound_app.requests
        result["metrics_allow_any"] = await loop.run_in_executor(None, s.metrics)

        await loop.run_in_executor(None, s.stop_proxy)
        await loop.run_in_executor(None, s.start_proxy, "--outbound-traffic-policy", "REGISTRY_ONLY")
        await app("unregistered-registry-only", "tcp", UNREGISTERED, 7000, 20)
        result["unregistered_accepted_registry_only"] = unregistered.accepted
        await app("registry-only-vip-http", "http", REVIEWS_VIP, 9080, 20)
        result["metrics_registry_only"] = await loop.run_in_executor(None, s.metrics)

        s.iptables("--cleanup")
        await app("after-cleanup", "http", REVIEWS_VIP, 9080, 5)
    except Exception as exc:  # reported to the test with the proxy's log
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await loop.run_in_executor(None, s.stop_proxy)
        log = workdir / "proxy.log"
        result["proxy_log"] = log.read_text(errors="replace")[-6000:] if log.exists() else ""
        result_path.write_text(json.dumps(result))
        loop_server.close()
        inbound_server.close()
        holder.kill()
        holder.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(run(Path(sys.argv[1])))
