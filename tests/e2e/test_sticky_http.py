"""Sticky canaries through the real proxy: a client's cookie or header keeps its version, and raising the
canary's weight only ever moves clients onto it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.harness import Client, ProxyProcess, Upstream, service_entry, write_atomic
from tests.stats import binomial_interval

KEYS = 400
STEPS = (10, 25, 50, 100)

DESTINATION_RULE = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def virtual_service(v2: int, sticky: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  annotations: {{shiftproxy.io/sticky: "{sticky}"}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {100 - v2}
    - destination: {{host: reviews, subset: v2}}
      weight: {v2}
"""


@pytest.fixture
def config_dir(tmp_path: Path, reviews: dict[str, Upstream]) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "se.yaml").write_text(service_entry("reviews", 9080, [(reviews[v].port, v) for v in ("v1", "v2")]))
    (d / "dr.yaml").write_text(DESTINATION_RULE)
    return d


async def versions(port: int, headers_of: list[dict[str, str]], clients: int = 4) -> list[str]:
    """The version each request (one per headers dict) got, over a few keep-alive connections."""
    out = [""] * len(headers_of)

    async def worker(first: int) -> None:
        client = Client(port)
        for i in range(first, len(headers_of), clients):
            resp = await client.request("GET", "http://reviews:9080/", "reviews:9080", headers_of[i])
            out[i] = resp.json()["version"] if resp.status == 200 else f"status {resp.status}"
        await client.close()

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return out


@pytest.mark.parametrize("kind", ["cookie", "header"])
async def test_raising_the_canary_only_moves_clients_onto_it(config_dir: Path, kind: str) -> None:
    sticky = "cookie=canary" if kind == "cookie" else "header=x-user"
    headers = [{"cookie": f"theme=dark; canary=user-{i}"} if kind == "cookie" else {"x-user": f"user-{i}"}
               for i in range(KEYS)]
    vs = config_dir / "vs.yaml"
    vs.write_text(virtual_service(STEPS[0], sticky))
    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    try:
        previous: list[str] | None = None
        for step, v2 in enumerate(STEPS):
            if step:
                version = proxy.version()
                write_atomic(vs, virtual_service(v2, sticky))
                proxy.wait_version(version)
            got = await versions(proxy.mesh_port, headers)
            assert set(got) <= {"v1", "v2"}, set(got)
            lo, hi = binomial_interval(KEYS, v2 / 100)
            assert lo <= got.count("v2") <= hi, (v2, got.count("v2"), lo, hi)
            assert await versions(proxy.mesh_port, headers) == got  # same key, same version
            if previous is not None:
                back = [i for i in range(KEYS) if previous[i] == "v2" and got[i] == "v1"]
                assert back == [], f"{len(back)} clients moved from v2 back to v1 at {v2} %"
            previous = got
    finally:
        proxy.stop()


async def test_cookie_is_set_when_absent_and_then_keeps_the_version(config_dir: Path) -> None:
    (config_dir / "vs.yaml").write_text(virtual_service(50, "cookie=canary"))
    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    try:
        for _ in range(20):
            client = Client(proxy.mesh_port)
            first = await client.request("GET", "http://reviews:9080/", "reviews:9080")
            set_cookie = first.headers.get("set-cookie", "")
            assert set_cookie.startswith('canary="') and "Path=/" in set_cookie and "HttpOnly" in set_cookie
            cookie = set_cookie.split(";", 1)[0]
            version = first.json()["version"]
            for _ in range(5):  # the browser sends the cookie back: same version, no new cookie
                again = await client.request("GET", "http://reviews:9080/", "reviews:9080", {"cookie": cookie})
                assert again.json()["version"] == version
                assert "set-cookie" not in again.headers
            await client.close()
    finally:
        proxy.stop()


async def test_a_bad_sticky_annotation_is_an_error_naming_the_field(config_dir: Path) -> None:
    import subprocess
    import sys

    (config_dir / "vs.yaml").write_text(virtual_service(50, "cookie"))
    out = subprocess.run([sys.executable, "-m", "proxy", "validate", str(config_dir)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "vs.yaml:5: metadata.annotations.shiftproxy.io/sticky: 'cookie' is not a sticky key" in out.stderr, \
        out.stderr
