"""Both seed tasks with the Kubernetes Gateway API, as Istio's "Gateway API" tab shows them.

The real proxy process, real reviews/productpage/tcp-echo servers, and Istio's Gateway API samples applied
verbatim in the task's order: bookinfo-versions.yaml's Services + bookinfo-gateway.yaml + route-all-v1.yaml
→ route-reviews-50-v3.yaml → route-reviews-v3.yaml, and tcp-echo-all-v1.yaml → tcp-echo-20-v2.yaml; once
as files in the watched directory and once with `shiftproxy apply`. The samples provide only Services, so
STATIC ServiceEntries whose endpoints carry the pods' `app`/`version` labels stand in for the pods.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import Client, ProxyProcess, Upstream, service_entry, write_atomic
from tests.e2e.test_cli_http_task import shiftproxy
from tests.e2e.test_tcp_shifting import GATEWAY_PORT, EchoServer, prefixes
from tests.e2e.test_tcp_shifting import service_entry as tcp_echo_service_entry
from tests.paths import ROOT, SAMPLES
from tests.stats import binomial_interval

GATEWAY_API = SAMPLES / "bookinfo" / "gateway-api"
TCP_ECHO_GATEWAY_API = SAMPLES / "tcp-echo" / "gateway-api"
VERSIONS = SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo-versions.yaml"
HTTP_GATEWAY_PORT = 80  # bookinfo-gateway.yaml's listener
N = 1000
# the share of v3 after each step of the HTTP task
HTTP_STEPS = (("route-all-v1.yaml", 0.0), ("route-reviews-50-v3.yaml", 0.5), ("route-reviews-v3.yaml", 1.0))


def bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def rel(path: Path) -> str:
    return os.path.relpath(path, ROOT)


@pytest.fixture
async def productpage() -> AsyncIterator[Upstream]:
    upstream = await Upstream("productpage-v1").start()
    yield upstream
    await upstream.close()


@pytest.fixture
def http_dir(tmp_path: Path, reviews: dict[str, Upstream], productpage: Upstream) -> Path:
    if not bindable(HTTP_GATEWAY_PORT):
        pytest.skip(f"cannot listen on port {HTTP_GATEWAY_PORT} (bookinfo-gateway.yaml's) here")
    d = tmp_path / "config"
    d.mkdir()
    (d / "reviews-service-entry.yaml").write_text(
        service_entry("reviews", 9080, [(u.port, v) for v, u in reviews.items()]))
    (d / "productpage-service-entry.yaml").write_text(service_entry("productpage", 9080, [(productpage.port, "v1")]))
    return d


def start_bookinfo_gateway(config_dir: Path) -> ProxyProcess:
    return ProxyProcess(config_dir, ["--access-log", "off", "--labels",
                                     "gateway.networking.k8s.io/gateway-name=bookinfo-gateway"]).start()


async def split(port: int, n: int) -> Counter[str]:
    """n requests to reviews through the sidecar listener (absolute-form, as HTTP_PROXY clients send)."""
    client = Client(port)
    seen: Counter[str] = Counter()
    for _ in range(n):
        resp = await client.request("GET", "http://reviews:9080/reviews/0", "reviews:9080")
        seen[resp.json()["version"] if resp.status == 200 else f"status {resp.status}"] += 1
    await client.close()
    return seen


def assert_share(seen: Counter[str], n: int, share: float, step: str) -> None:
    lo, hi = binomial_interval(n, share)  # fails with probability < 1e-6 at the true share
    assert seen["v1"] + seen["v3"] == n, (step, seen)
    assert lo <= seen["v3"] <= hi, (step, seen, (lo, hi))


async def check_gateway(productpage: Upstream) -> None:
    """The gateway HTTPRoute on the gateway listener: /productpage routed, other paths 404 (NR)."""
    client = Client(HTTP_GATEWAY_PORT)
    ok = await client.request("GET", "/productpage", "bookinfo.example")
    assert ok.status == 200 and ok.json()["version"] == "productpage-v1", ok
    static = await client.request("GET", "/static/app.css", "bookinfo.example")
    assert static.status == 200 and static.json()["path"] == "/static/app.css"
    assert (await client.request("GET", "/staticfoo", "bookinfo.example")).status == 404  # whole segments only
    assert (await client.request("GET", "/nope", "bookinfo.example")).status == 404
    await client.close()


async def test_http_task_with_gateway_api_files_in_a_watched_dir(http_dir: Path, productpage: Upstream) -> None:
    shutil.copy(VERSIONS, http_dir)
    shutil.copy(GATEWAY_API / "bookinfo-gateway.yaml", http_dir)
    proxy = start_bookinfo_gateway(http_dir)
    try:
        await check_gateway(productpage)
        version = proxy.version()
        route_file = http_dir / "reviews-route.yaml"
        for name, share in HTTP_STEPS:
            write_atomic(route_file, (GATEWAY_API / name).read_text())  # over the previous step's file
            version = proxy.wait_version(version)
            n = N if 0 < share < 1 else 200
            assert_share(await split(proxy.mesh_port, n), n, share, name)
        assert proxy.stop() == 0
    finally:
        proxy.stop()


async def test_http_task_with_gateway_api_and_the_cli(http_dir: Path, productpage: Upstream,
                                                      tmp_path: Path) -> None:
    proxy = start_bookinfo_gateway(http_dir)
    try:
        run = await shiftproxy(proxy, "apply", "-f", rel(VERSIONS), "-f", rel(GATEWAY_API / "bookinfo-gateway.yaml"))
        assert run.code == 0, run.err
        assert run.out.splitlines()[:7] == [
            *(f"service/{s} created" for s in ("reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1",
                                               "ratings-v1", "details-v1")),
            "gateway.gateway.networking.k8s.io/bookinfo-gateway created"]
        assert run.out.splitlines()[7] == "httproute.gateway.networking.k8s.io/bookinfo created"
        await check_gateway(productpage)
        for name, share in HTTP_STEPS:
            run = await shiftproxy(proxy, "apply", "-f", rel(GATEWAY_API / name))
            assert run.code == 0, run.err
            assert "httproute.gateway.networking.k8s.io/reviews " in run.out
            n = N if 0 < share < 1 else 200
            assert_share(await split(proxy.mesh_port, n), n, share, name)

        # status as Istio writes it: the accepted mesh route, the gateway's listener with its route
        run = await shiftproxy(proxy, "get", "httproute", "reviews", "-o", "yaml")
        assert run.code == 0, run.err
        parent = yaml.safe_load(run.out)["status"]["parents"][0]
        assert parent["parentRef"] == {"group": "", "kind": "Service", "name": "reviews", "namespace": "default",
                                       "port": 9080}
        assert conditions(parent) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}
        run = await shiftproxy(proxy, "get", "gateways.gateway.networking.k8s.io", "bookinfo-gateway", "-o", "yaml")
        listener = yaml.safe_load(run.out)["status"]["listeners"][0]
        assert (listener["name"], listener["attachedRoutes"]) == ("http", 1)
        run = await shiftproxy(proxy, "get", "gw")  # `gw` is Istio's Gateway: there is none
        assert (run.code, run.out) == (0, "")
        run = await shiftproxy(proxy, "get", "gateway")  # as kubectl with both APIs: the Gateway API's
        assert [line.split()[:3] for line in run.out.splitlines()] == [["NAME", "CLASS", "PROGRAMMED"],
                                                                     ["bookinfo-gateway", "istio", "True"]]

        # a backend Service that does not exist: accepted, ResolvedRefs False BackendNotFound, its share 500
        missing = tmp_path / "reviews-missing.yaml"
        missing.write_text((GATEWAY_API / "route-reviews-50-v3.yaml").read_text().replace("reviews-v3", "reviews-v9"))
        run = await shiftproxy(proxy, "apply", "-f", str(missing))
        assert run.code == 0, run.err
        assert "BackendNotFound: backend(reviews-v9.default.svc.cluster.local) not found" in run.err
        run = await shiftproxy(proxy, "get", "httproute/reviews", "-o", "yaml")
        parent = yaml.safe_load(run.out)["status"]["parents"][0]
        assert conditions(parent) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "BackendNotFound")}
        run = await shiftproxy(proxy, "explain", "--authority", "reviews:9080", "--path", "/reviews/0")
        assert "fault:    abort 500 for 50.0% of requests" in run.out, run.out
        assert " 100.0%  reviews-v1.default.svc.cluster.local:9080 " in run.out, run.out
        seen = await split(proxy.mesh_port, N)
        assert set(seen) == {"v1", "status 500"}, seen
        lo, hi = binomial_interval(N, 0.5)
        assert lo <= seen["status 500"] <= hi, (seen, (lo, hi))

        # a route its listener does not allow (kinds: TCPRoute only): NotAllowedByListeners
        wrong = tmp_path / "wrong-listener.yaml"
        wrong.write_text(MISPLACED.replace("PORT", str(free_high_port())))
        run = await shiftproxy(proxy, "apply", "-f", str(wrong))
        assert run.code == 0, run.err
        run = await shiftproxy(proxy, "get", "httproute", "misplaced", "-o", "yaml")
        parent = yaml.safe_load(run.out)["status"]["parents"][0]
        assert conditions(parent)["Accepted"] == ("False", "NotAllowedByListeners")
        assert "allows TCPRoute routes, not HTTPRoute" in next(
            c["message"] for c in parent["conditions"] if c["type"] == "Accepted")
        assert proxy.stop() == 0
    finally:
        proxy.stop()


MISPLACED = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tcp-only}
spec:
  gatewayClassName: istio
  listeners:
  - {name: tcp, port: PORT, protocol: TCP, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: misplaced}
spec:
  parentRefs: [{name: tcp-only}]
  rules: [{backendRefs: [{name: productpage-v1, port: 9080}]}]
"""


def free_high_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def conditions(parent: dict[str, object]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in parent["conditions"]}  # type: ignore[attr-defined]


# TCP -------------------------------------------------------------------------------------------------


@pytest.fixture
async def echoes() -> AsyncIterator[tuple[EchoServer, EchoServer]]:
    one, two = await EchoServer("one").start(), await EchoServer("two").start()
    yield one, two
    one.close()
    two.close()


@pytest.fixture
def tcp_dir(tmp_path: Path, echoes: tuple[EchoServer, EchoServer]) -> Path:
    if not bindable(GATEWAY_PORT):
        pytest.skip(f"port {GATEWAY_PORT} (the tcp-echo Gateway's port) is in use on this machine")
    d = tmp_path / "config"
    d.mkdir()
    (d / "tcp-echo-service-entry.yaml").write_text(tcp_echo_service_entry(echoes[0].port, echoes[1].port))
    return d


def start_tcp_echo_gateway(config_dir: Path) -> ProxyProcess:
    return ProxyProcess(config_dir, ["--role", "gateway", "--access-log", "off", "--labels",
                                     "gateway.networking.k8s.io/gateway-name=tcp-echo-gateway"]).start()


def assert_twenty_percent(seen: Counter[str], n: int) -> None:
    lo, hi = binomial_interval(n, 0.2)
    assert seen["one"] + seen["two"] == n, seen
    assert lo <= seen["two"] <= hi, (seen, (lo, hi))


async def test_tcp_task_with_gateway_api_files_in_a_watched_dir(tcp_dir: Path) -> None:
    shutil.copy(TCP_ECHO_GATEWAY_API / "tcp-echo-all-v1.yaml", tcp_dir / "tcp-echo.yaml")
    proxy = start_tcp_echo_gateway(tcp_dir)
    try:
        assert await prefixes(200) == Counter(one=200)
        version = proxy.version()
        # tcp-echo-20-v2.yaml holds only the TCPRoute: like `kubectl apply`, it replaces that object
        kept = [doc for doc in (TCP_ECHO_GATEWAY_API / "tcp-echo-all-v1.yaml").read_text().split("\n---\n")
                if "\nkind: TCPRoute" not in doc]  # top-level kind only (the Gateway allows TCPRoute)
        write_atomic(tcp_dir / "tcp-echo.yaml",
                     "\n---\n".join([*kept, (TCP_ECHO_GATEWAY_API / "tcp-echo-20-v2.yaml").read_text()]))
        proxy.wait_version(version)
        assert_twenty_percent(await prefixes(2000), 2000)
    finally:
        assert proxy.stop() == 0


async def test_tcp_task_with_gateway_api_and_the_cli(tcp_dir: Path) -> None:
    proxy = start_tcp_echo_gateway(tcp_dir)
    try:
        run = await shiftproxy(proxy, "apply", "-f", rel(TCP_ECHO_GATEWAY_API / "tcp-echo-all-v1.yaml"))
        assert run.code == 0, run.err
        assert run.out.splitlines()[:4] == ["gateway.gateway.networking.k8s.io/tcp-echo-gateway created",
                                            "service/tcp-echo-v1 created", "service/tcp-echo-v2 created",
                                            "tcproute.gateway.networking.k8s.io/tcp-echo created"]
        assert await prefixes(200) == Counter(one=200)
        run = await shiftproxy(proxy, "apply", "-f", rel(TCP_ECHO_GATEWAY_API / "tcp-echo-20-v2.yaml"))
        assert run.code == 0, run.err
        assert run.out.splitlines()[0] == "tcproute.gateway.networking.k8s.io/tcp-echo configured"
        assert_twenty_percent(await prefixes(2000), 2000)
        run = await shiftproxy(proxy, "get", "gtw", "tcp-echo-gateway", "-o", "yaml")
        listener = yaml.safe_load(run.out)["status"]["listeners"][0]
        assert (listener["name"], listener["attachedRoutes"]) == ("tcp-31400", 1)
    finally:
        assert proxy.stop() == 0
