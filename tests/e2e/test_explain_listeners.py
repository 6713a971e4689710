"""`shiftproxy explain` against a gateway and a sidecar run as two processes, as `make demo` runs them:
with both admin addresses in SHIFTPROXY_ADMIN it answers from the listener that routes the request and
says what every other listener would do with it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.harness import ProxyProcess, free_port, service_entry
from tests.paths import BOOKINFO_NET, ROOT


def gateway_yaml(port: int) -> str:
    """Istio's bookinfo-gateway on a free port: the gateway routes /productpage only."""
    return f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo}}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{{uri: {{exact: /productpage}}}}]
    route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
"""


@dataclass
class Proxies:
    gateway: ProxyProcess
    sidecar: ProxyProcess
    gateway_port: int

    @property
    def admins(self) -> str:
        return f"127.0.0.1:{self.gateway.admin_port},127.0.0.1:{self.sidecar.admin_port}"


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxies]:
    config = tmp_path_factory.mktemp("explain") / "config"
    config.mkdir()
    (config / "services.yaml").write_text(
        service_entry("reviews", 9080, [(free_port(), "v1"), (free_port(), "v2"), (free_port(), "v3")])
        + "---\n" + service_entry("productpage", 9080, [(free_port(), "v1")]))
    shutil.copy(BOOKINFO_NET / "destination-rule-all.yaml", config)
    shutil.copy(BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml", config)
    port = free_port()
    (config / "gateway.yaml").write_text(gateway_yaml(port))
    gateway = ProxyProcess(config, ["--role", "gateway", "--access-log", "off"]).start()
    try:
        sidecar = ProxyProcess(config, ["--role", "mesh", "--access-log", "off"]).start()
    except BaseException:
        gateway.stop()
        raise
    yield Proxies(gateway, sidecar, port)
    gateway.stop()
    sidecar.stop()


def explain(admins: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", "explain", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "SHIFTPROXY_ADMIN": admins}, timeout=60)


def test_reviews_is_explained_by_the_sidecar_that_routes_it(proxies: Proxies) -> None:
    out = explain(proxies.admins, "--authority", "reviews:9080", "--path", "/reviews/0")
    assert out.returncode == 0, out.stderr
    gw, sc = proxies.gateway, proxies.sidecar
    assert out.stdout.startswith(f"config version 1; listener mesh_http (sidecar HTTP on 127.0.0.1:{sc.mesh_port}, "
                                 f"admin 127.0.0.1:{sc.admin_port})\n"), out.stdout
    assert "rule 0:   default/reviews#0: MATCH" in out.stdout
    assert "50.0%  reviews.default.svc.cluster.local:9080 subset v3" in out.stdout
    assert out.stdout.endswith(
        "other listeners:\n"
        f"  gateway_http_{proxies.gateway_port} (gateway HTTP on 127.0.0.1:{proxies.gateway_port}, admin "
        f"127.0.0.1:{gw.admin_port}): 404 NR: no rule of default/bookinfo matches this request\n"), out.stdout


def test_the_gateway_path_is_explained_by_the_gateway(proxies: Proxies) -> None:
    out = explain(proxies.admins, "--authority", "bookinfo.example", "--path", "/productpage")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"config version 1; listener gateway_http_{proxies.gateway_port} "), out.stdout
    assert "100.0%  productpage.default.svc.cluster.local:9080" in out.stdout
    assert ("  mesh_http (sidecar HTTP on 127.0.0.1:"
            f"{proxies.sidecar.mesh_port}, admin 127.0.0.1:{proxies.sidecar.admin_port}): 404 NR: no "
            "VirtualService or service on listener mesh_http serves 'bookinfo.example'\n") in out.stdout


def test_a_named_listener_that_does_not_route_it_says_which_one_does(proxies: Proxies) -> None:
    out = explain(proxies.admins, "--authority", "reviews:9080", "--path", "/reviews/0",
                  "--listener", f"gateway_http_{proxies.gateway_port}")
    assert out.returncode == 0, out.stderr
    assert f"listener gateway_http_{proxies.gateway_port} " in out.stdout.splitlines()[0]
    assert "result:   404 NR: no rule of default/bookinfo matches this request" in out.stdout
    assert (f"  mesh_http (sidecar HTTP on 127.0.0.1:{proxies.sidecar.mesh_port}, admin "
            f"127.0.0.1:{proxies.sidecar.admin_port}): routes it (rule default/reviews#0)\n") in out.stdout


def test_json_names_the_other_listeners(proxies: Proxies) -> None:
    out = explain(proxies.admins, "--authority", "reviews:9080", "-o", "json")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["listener"]["name"] == "mesh_http" and answer["route"]["destinations"]
    assert [(o["listener"]["name"], o["routes"], o["admin"]) for o in answer["other_listeners"]] == [
        (f"gateway_http_{proxies.gateway_port}", False, f"127.0.0.1:{proxies.gateway.admin_port}")]


def test_one_admin_answers_for_its_own_listeners_and_errors_name_the_proxy(proxies: Proxies) -> None:
    out = explain(f"127.0.0.1:{proxies.gateway.admin_port}", "--authority", "reviews:9080")
    assert out.returncode == 0, out.stderr
    assert "result:   404 NR: no rule of default/bookinfo matches this request" in out.stdout
    out = explain(proxies.admins, "--port", "1")
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: 127.0.0.1:{proxies.gateway.admin_port}: no listener on port 1"), out.stderr


def test_a_proxy_that_is_down_does_not_hide_the_others(proxies: Proxies) -> None:
    down = free_port()
    out = explain(f"127.0.0.1:{down},{proxies.admins}", "--authority", "reviews:9080")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("config version 1; listener mesh_http "), out.stdout
    assert out.stderr.startswith(f"Warning: cannot reach the shiftproxy admin API at 127.0.0.1:{down}")
    out = explain(f"127.0.0.1:{down}", "--authority", "reviews:9080")
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: cannot reach the shiftproxy admin API at 127.0.0.1:{down}"), out.stderr
