"""Live config on a real `shiftproxy run` process: files that are empty, not UTF-8 or too large; the
reload error clearing; `apply|get|delete -n` as kubectl; the state directory across restarts."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Client, ProxyProcess, Upstream, service_entry, write_atomic
from tests.paths import BOOKINFO_NET, ROOT

V3 = (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text()


@pytest.fixture
def config_dir(tmp_path: Path, reviews: dict[str, Upstream]) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "reviews-service-entry.yaml").write_text(
        service_entry("reviews", 9080, [(u.port, v) for v, u in reviews.items()]))
    shutil.copy(BOOKINFO_NET / "destination-rule-all.yaml", d)
    return d


async def split(port: int, n: int) -> Counter[str]:
    client = Client(port)
    seen: Counter[str] = Counter()
    for _ in range(n):
        resp = await client.request("GET", "http://reviews:9080/reviews/0", "reviews:9080")
        seen[resp.json()["version"] if resp.status == 200 else f"status {resp.status}"] += 1
    await client.close()
    return seen


def post(proxy: ProxyProcess, path: str, body: bytes = b"") -> tuple[int, Any]:
    request = urllib.request.Request(f"{proxy.admin}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def reload_failures(proxy: ProxyProcess) -> int:
    with urllib.request.urlopen(f"{proxy.admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "shiftproxy_config_reloads_total" and s.labels["result"] == "failure":
                return int(s.value)
    return 0


def wait_for(proxy: ProxyProcess, check: Any, what: str, timeout: float = 15.0) -> dict[str, Any]:
    """Poll /config_dump until `check(dump)` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dump = proxy.config_dump()
        if check(dump):
            return dump
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen; log:\n{proxy.log()[-3000:]}")


async def shiftproxy(proxy: ProxyProcess, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "SHIFTPROXY_ADMIN": f"127.0.0.1:{proxy.admin_port}"}
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy", *args, cwd=ROOT, env=env,
                                                stdout=pipe, stderr=pipe)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_empty_file_is_not_written_yet_and_a_deleted_file_deletes(config_dir: Path) -> None:
    vs = config_dir / "reviews-vs.yaml"
    vs.write_text(V3)
    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    try:
        assert await split(proxy.mesh_port, 20) == Counter(v3=20)
        version, loaded_at = proxy.version(), proxy.config_dump()["loaded_at"]
        vs.write_bytes(b"")  # an editor truncating before it writes
        wait_for(proxy, lambda d: d["loaded_at"] > loaded_at, "a reload after the truncation")
        assert await split(proxy.mesh_port, 20) == Counter(v3=20)
        assert proxy.version() == version and proxy.config_dump()["last_reload_error"] is None
        assert f"{vs}: empty file (0 bytes), taken as not written yet: keeping its 1 object(s)" in proxy.log()
        vs.write_text(V3.replace("subset: v3", "subset: v2"))  # the editor's write lands
        proxy.wait_version(version)
        assert await split(proxy.mesh_port, 20) == Counter(v2=20)
        version = proxy.version()
        vs.unlink()  # deleting the file deletes its objects: back to the default route
        proxy.wait_version(version)
        assert sorted(await split(proxy.mesh_port, 60)) == ["v1", "v2", "v3"]
    finally:
        assert proxy.stop() == 0


async def test_unreadable_files_are_config_errors_and_a_good_load_clears_them(config_dir: Path) -> None:
    vs = config_dir / "reviews-vs.yaml"
    vs.write_text(V3)
    proxy = ProxyProcess(config_dir, ["--access-log", "off", "--max-config-bytes", "64Ki"]).start()
    try:
        version, failures = proxy.version(), reload_failures(proxy)
        # not UTF-8 (Latin-1 é on line 4)
        vs.write_bytes(V3.replace("  name: reviews", "  name: reviews  # caf\xe9").encode("latin-1"))
        dump = wait_for(proxy, lambda d: d["last_reload_error"] is not None, "the non-UTF-8 file rejected")
        (error,) = dump["last_reload_error"]["errors"]
        assert error.startswith(f"{vs}:4: not UTF-8: byte 0xe9 at offset ")
        assert reload_failures(proxy) > failures
        failures = reload_failures(proxy)
        status, answer = post(proxy, "/reload")
        assert status == 422 and answer["errors"] == [error]
        status, answer = post(proxy, "/apply", V3.encode())
        assert status == 422 and answer["errors"] == [error]
        assert reload_failures(proxy) == failures + 2
        assert await split(proxy.mesh_port, 20) == Counter(v3=20)  # the running config stays
        # the same text as what serves, in UTF-8: nothing to swap, but the error is over
        write_atomic(vs, V3)
        wait_for(proxy, lambda d: d["last_reload_error"] is None, "the error cleared")
        assert proxy.version() == version

        # too large: refused by size, before it is read
        big = config_dir / "big.yaml"
        write_atomic(big, V3.replace("name: reviews", "name: big") + "#" * (100 * 1024) + "\n")
        dump = wait_for(proxy, lambda d: d["last_reload_error"] is not None, "the big file rejected")
        assert dump["last_reload_error"]["errors"] == [
            f"{big}: file is 100.2 KiB, over the limit of 64 KiB per config file (--max-config-bytes)"]
        assert await split(proxy.mesh_port, 20) == Counter(v3=20)
        big.unlink()
        wait_for(proxy, lambda d: d["last_reload_error"] is None, "the error cleared")
        assert "Traceback" not in proxy.log()
    finally:
        assert proxy.stop() == 0


async def test_oversize_file_is_rejected_while_traffic_flows(config_dir: Path) -> None:
    """A file over the limit arrives while a client sends requests: every request is answered, the
    routing does not change, and the error names the file and the limit."""
    (config_dir / "reviews-vs.yaml").write_text(V3)
    proxy = ProxyProcess(config_dir, ["--access-log", "off", "--max-config-bytes", "1Mi"]).start()
    try:
        stop = asyncio.Event()
        seen: Counter[str] = Counter()

        async def traffic() -> None:
            client = Client(proxy.mesh_port)
            for _ in range(20000):  # bounded; ends when the file has been rejected
                if stop.is_set():
                    break
                resp = await client.request("GET", "http://reviews:9080/reviews/0", "reviews:9080")
                seen[resp.json()["version"] if resp.status == 200 else f"status {resp.status}"] += 1
            await client.close()

        task = asyncio.create_task(traffic())
        await asyncio.sleep(0.2)
        big = config_dir / "big.yaml"
        chunk = "# " + "x" * 1022 + "\n"
        with open(big, "w") as fh:  # written in place, in pieces, as a slow copy does
            for _ in range(3 * 1024):
                fh.write(chunk)
        dump = await asyncio.to_thread(wait_for, proxy, lambda d: d["last_reload_error"] is not None,
                                       "the big file rejected")
        stop.set()
        await asyncio.wait_for(task, 60)
        (error,) = dump["last_reload_error"]["errors"]  # the size seen may be while it was still written
        assert error.startswith(f"{big}: file is ")
        assert error.endswith(" MiB, over the limit of 1 MiB per config file (--max-config-bytes)")
        assert set(seen) == {"v3"} and seen["v3"] > 0
        assert "Traceback" not in proxy.log()
    finally:
        assert proxy.stop() == 0


MISMATCH = ('error: the namespace from the provided object "default" does not match the namespace "shop". '
            "You must pass '--namespace=default' to perform this operation.\n")


async def test_namespace_flag_like_kubectl(config_dir: Path, state_dir: Path) -> None:
    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    v3_file = str(BOOKINFO_NET / "virtual-service-reviews-v3.yaml")
    try:
        code, out, err = await shiftproxy(proxy, "apply", "-n", "shop", "-f", v3_file)
        assert code == 0, err
        assert out.splitlines()[0] == "virtualservice.networking.istio.io/reviews created"
        code, out, _ = await shiftproxy(proxy, "get", "vs", "-n", "shop")
        assert code == 0 and out.split()[:4] == ["NAME", "GATEWAYS", "HOSTS", "AGE"] and out.split()[4] == "reviews"
        code, _, err = await shiftproxy(proxy, "get", "vs")
        assert code == 0 and err == "No resources found in default namespace.\n"
        # `reviews` in namespace shop is reviews.shop.svc.cluster.local: default's reviews is not routed by it
        assert sorted(await split(proxy.mesh_port, 60)) == ["v1", "v2", "v3"]
        applied = proxy.config_dump()["state"]["applied"]
        assert [(a["namespace"], a["name"]) for a in applied] == [("shop", "reviews")]

        # an object naming another namespace than -n: refused as kubectl does, nothing changes
        version = proxy.version()
        named = config_dir.parent / "named.yaml"
        named.write_text(V3.replace("  name: reviews", "  name: reviews\n  namespace: default"))
        for verb in ("apply", "delete"):
            code, out, err = await shiftproxy(proxy, verb, "-n", "shop", "-f", str(named))
            assert (code, out, err) == (1, "", MISMATCH)
        assert proxy.version() == version
        # without -n an object keeps its own namespace (kubectl checks only an explicit -n)
        code, _, err = await shiftproxy(proxy, "apply", "-f", str(named))
        assert code == 0, err
        assert await split(proxy.mesh_port, 20) == Counter(v3=20)

        code, out, err = await shiftproxy(proxy, "delete", "-n", "shop", "-f", v3_file)
        assert code == 0, err
        assert out.splitlines()[0] == "virtualservice.networking.istio.io/reviews deleted"
        code, _, err = await shiftproxy(proxy, "get", "vs", "reviews", "-n", "shop")
        assert code == 1 and 'virtualservices.networking.istio.io "reviews" not found' in err
    finally:
        assert proxy.stop() == 0
    assert sorted(p.name for p in (state_dir / "applied").iterdir()) == ["virtualservice_default_reviews.yaml"]


async def test_state_persists_across_restarts_with_a_read_only_config(config_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "my-state"
    config_before = {p.name: p.read_bytes() for p in config_dir.iterdir()}
    proxy = ProxyProcess(config_dir, ["--access-log", "off", "--state-dir", str(state)]).start()
    try:
        code, _, err = await shiftproxy(proxy, "apply", "-f", str(BOOKINFO_NET / "virtual-service-reviews-v3.yaml"))
        assert code == 0, err
        assert proxy.config_dump()["state"]["dir"] == str(state)
    finally:
        assert proxy.stop() == 0
    restarted = ProxyProcess(config_dir, ["--access-log", "off", "--state-dir", str(state)]).start()
    try:
        assert await split(restarted.mesh_port, 20) == Counter(v3=20)
        dump = restarted.config_dump()
        assert [a["name"] for a in dump["state"]["applied"]] == ["reviews"]
    finally:
        assert restarted.stop() == 0
    assert {p.name: p.read_bytes() for p in config_dir.iterdir()} == config_before


def test_state_directory_inside_the_config_is_refused_at_start(config_dir: Path) -> None:
    proxy = ProxyProcess(config_dir, ["--state-dir", str(config_dir / "state")])
    with pytest.raises(RuntimeError) as info:
        proxy.start()
    assert proxy.stop() == 1
    assert f"state directory {config_dir / 'state'} overlaps config path {config_dir}" in str(info.value)
    assert not (config_dir / "state").exists()
