"""The seed's HTTP task end to end: the real proxy process, three real reviews versions, the seed's files
copied verbatim into the watched directory one after another, and no restart in between."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.harness import Client, ProxyProcess, Upstream, service_entry, write_atomic
from tests.paths import BOOKINFO_NET
from tests.stats import binomial_interval

N = 1000


@pytest.fixture
def config_dir(tmp_path: Path, reviews: dict[str, Upstream]) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "reviews-service-entry.yaml").write_text(
        service_entry("reviews", 9080, [(u.port, v) for v, u in reviews.items()]))
    return d


async def split(port: int, n: int, authority: str = "reviews:9080", headers: dict[str, str] | None = None,
                target: str = "http://reviews:9080/reviews/0") -> Counter[str]:
    """n requests over one keep-alive connection through the sidecar (absolute-form, as HTTP_PROXY clients)."""
    client = Client(port)
    seen: Counter[str] = Counter()
    for _ in range(n):
        resp = await client.request("GET", target, authority, headers)
        seen[resp.json()["version"] if resp.status == 200 else f"status {resp.status}"] += 1
    await client.close()
    return seen


async def test_seed_http_task_by_copying_files(config_dir: Path) -> None:
    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    try:
        # no VirtualService: the default route spreads over every version
        seen = await split(proxy.mesh_port, 300)
        assert set(seen) == {"v1", "v2", "v3"}, seen

        version = proxy.version()
        shutil.copy(BOOKINFO_NET / "destination-rule-all.yaml", config_dir)
        version = proxy.wait_version(version)
        # the seed's VirtualService files, each copied over the previous one (as `kubectl apply` replaces)
        vs_file = config_dir / "virtual-service.yaml"
        expected_v3 = {"virtual-service-all-v1.yaml": 0.0, "virtual-service-reviews-50-v3.yaml": 0.5,
                       "virtual-service-reviews-v3.yaml": 1.0}
        for name, share in expected_v3.items():
            write_atomic(vs_file, (BOOKINFO_NET / name).read_text())
            version = proxy.wait_version(version)
            seen = await split(proxy.mesh_port, N)
            lo, hi = binomial_interval(N, share)
            assert seen["v3"] + seen["v1"] == N, (name, seen)
            assert lo <= seen["v3"] <= hi, (name, seen, (lo, hi))
        assert proxy.stop() == 0
    finally:
        proxy.stop()


async def test_header_routing_test_v2(config_dir: Path) -> None:
    shutil.copy(BOOKINFO_NET / "destination-rule-all.yaml", config_dir)
    shutil.copy(BOOKINFO_NET / "virtual-service-reviews-test-v2.yaml", config_dir)
    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    try:
        assert await split(proxy.mesh_port, 50, headers={"end-user": "jason"}) == Counter(v2=50)
        assert await split(proxy.mesh_port, 50, headers={"end-user": "alice"}) == Counter(v1=50)
        assert await split(proxy.mesh_port, 50) == Counter(v1=50)
    finally:
        proxy.stop()


async def test_curl_through_sidecar_and_gateway(config_dir: Path, tmp_path: Path,
                                                reviews: dict[str, Upstream]) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8080)) == 0:
            pytest.skip("port 8080 (bookinfo-gateway.yaml's port) is in use on this machine")
    productpage = await Upstream("productpage-v1").start()
    (config_dir / "productpage.yaml").write_text(service_entry("productpage", 9080, [(productpage.port, "v1")]))
    shutil.copy(BOOKINFO_NET / "bookinfo-gateway.yaml", config_dir)
    proxy = ProxyProcess(config_dir).start()
    try:
        sidecar = await asyncio.to_thread(
            subprocess.run, ["curl", "-sS", "-x", f"http://127.0.0.1:{proxy.mesh_port}",
                             "http://reviews:9080/reviews/0"], capture_output=True, text=True, timeout=10)
        assert sidecar.returncode == 0, sidecar.stderr
        assert '"path": "/reviews/0"' in sidecar.stdout and '"version": "v' in sidecar.stdout
        gateway = await asyncio.to_thread(
            subprocess.run, ["curl", "-sS", "-w", "\n%{http_code}", "http://127.0.0.1:8080/productpage"],
            capture_output=True, text=True, timeout=10)
        assert gateway.stdout.endswith("\n200"), gateway.stdout + gateway.stderr
        assert '"version": "productpage-v1"' in gateway.stdout
        missing = await asyncio.to_thread(
            subprocess.run, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:8080/nope"],
            capture_output=True, text=True, timeout=10)
        assert missing.stdout == "404"  # the gateway's VirtualService has no rule for /nope: NR
    finally:
        proxy.stop()
        await productpage.close()
    assert '" 404 NR ' in proxy.log()  # the access log names the response flag


async def test_weight_changes_under_load_lose_no_request(config_dir: Path) -> None:
    """≥ 200 req/s on keep-alive connections while the weights change 20 times by file write."""
    shutil.copy(BOOKINFO_NET / "destination-rule-all.yaml", config_dir)
    vs_file = config_dir / "reviews.yaml"
    weights = (BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml").read_text()
    write_atomic(vs_file, weights)
    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    failures: list[str] = []
    done = asyncio.Event()
    total = 0

    async def load() -> None:
        nonlocal total
        client = Client(proxy.mesh_port)
        while not done.is_set() and total < 200_000:
            try:
                resp = await client.request("GET", "http://reviews:9080/reviews/0", "reviews:9080")
                if resp.status != 200:
                    failures.append(f"{resp.status} {resp.body[:80]!r}")
            except (OSError, asyncio.IncompleteReadError) as exc:
                failures.append(repr(exc))
                await client.close()
            total += 1
        await client.close()

    try:
        workers = [asyncio.create_task(load()) for _ in range(4)]
        version = proxy.version()
        start = asyncio.get_running_loop().time()
        for i in range(20):
            a = (i * 37) % 101
            write_atomic(vs_file, weights.replace("weight: 50\n", f"weight: {a}\n", 1)
                         .replace("weight: 50\n", f"weight: {100 - a}\n", 1))
            version = await asyncio.to_thread(proxy.wait_version, version)
            await asyncio.sleep(0.1)
        # an invalid file is rejected whole; the old weights keep serving
        write_atomic(vs_file, weights.replace("weight: 50", "weight: -5", 1))
        await asyncio.sleep(1.0)
        assert proxy.version() == version
        assert "weight -5 < 0" in proxy.log()
        elapsed = asyncio.get_running_loop().time() - start
        done.set()
        await asyncio.gather(*workers)
        assert failures == []
        assert total / elapsed >= 200, f"only {total / elapsed:.0f} req/s were sent"
        dump = proxy.config_dump()
        assert dump["last_reload_error"] and "weight -5 < 0" in "\n".join(dump["last_reload_error"]["errors"])
    finally:
        done.set()
        proxy.stop()


async def test_gigabyte_bodies_stream_with_bounded_memory(config_dir: Path, reviews: dict[str, Upstream]) -> None:
    """1 GiB up and 1 GiB down through the proxy; its RSS grows by less than 100 MB."""
    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    gib = 1 << 30
    try:
        base = proxy.rss_bytes()
        peak = base

        async def watch_rss() -> None:
            nonlocal peak
            while True:
                peak = max(peak, proxy.rss_bytes())
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_rss())
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.mesh_port)
        writer.write(b"POST http://reviews:9080/sink HTTP/1.1\r\nhost: reviews:9080\r\n"
                     b"content-length: %d\r\n\r\n" % gib)
        chunk = b"u" * (1 << 20)
        for _ in range(gib // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        assert b'"received": %d' % gib in await reader.readexactly(length)

        writer.write(b"GET http://reviews:9080/source/%d HTTP/1.1\r\nhost: reviews:9080\r\n\r\n" % gib)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        assert head.startswith(b"HTTP/1.1 200")
        received = 0
        while received < gib:
            data = await asyncio.wait_for(reader.read(1 << 20), 60)
            assert data, "connection closed early"
            received += len(data)
        assert received == gib
        writer.close()
        watcher.cancel()
        assert peak - base < 100 * 1024 * 1024, f"RSS grew {(peak - base) / 1e6:.0f} MB"
    finally:
        proxy.stop()
