"""Valid Istio that once crashed, through the real `shiftproxy run` process and real upstreams: a
`delegate` rule, RE2-only `uriRegexRewrite` syntax, and `withoutHeaders` regex `*` (a presence match)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import Client, ProxyProcess, Upstream, service_entry, write_atomic
from tests.e2e.test_cli_http_task import shiftproxy
from tests.paths import ROOT

CONFIG = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}, {name: v3, labels: {version: v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /stable}, withoutHeaders: {x-canary: {regex: "*"}}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /api}}]
    delegate: {name: reviews-api, namespace: team}
  - match: [{uri: {prefix: /named}}]
    rewrite: {uriRegexRewrite: {match: "(?<x>a)", rewrite: "\\\\1b"}}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /posix}}]
    rewrite: {uriRegexRewrite: {match: "[[:alpha:]]+$", rewrite: "X"}}
    route: [{destination: {host: reviews, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-api, namespace: team}
spec:
  http:
  - match: [{uri: {prefix: /api/v3}}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v3}}]
  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
"""


@pytest.fixture
def config_dir(tmp_path: Path, reviews: dict[str, Upstream]) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "reviews-service-entry.yaml").write_text(
        service_entry("reviews", 9080, [(u.port, v) for v, u in reviews.items()]))
    (d / "routes.yaml").write_text(CONFIG)
    return d


def test_validate_accepts_the_config(config_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "proxy", "validate", str(config_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("valid:")


CASES = [  # path, request headers, version, path the upstream sees
    ("/stable/1", {}, "v1", "/stable/1"),
    ("/api/v3/1", {}, "v3", "/api/v3/1"),  # root /api AND the delegate's /api/v3
    ("/api/other", {}, "v2", "/api/other"),  # root /api AND the delegate's catch-all
    ("/named/a", {}, "v2", "/nabmed/ab"),  # `(?<x>a)`, every match replaced, as Envoy's RE2 GlobalReplace
    ("/posix/abc", {}, "v2", "/posix/X"),  # `[[:alpha:]]`
]


async def test_routes_and_rewrites_as_envoy(config_dir: Path) -> None:
    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    try:
        client = Client(proxy.mesh_port)
        for path, headers, version, upstream_path in CASES:
            resp = await client.request("GET", f"http://reviews:9080{path}", "reviews:9080", headers)
            assert resp.status == 200, (path, resp.status, resp.body, proxy.log()[-2000:])
            assert (resp.json()["version"], resp.json()["path"]) == (version, upstream_path)
        canary = await client.request("GET", "http://reviews:9080/stable/1", "reviews:9080", {"x-canary": "1"})
        assert canary.status == 404  # withoutHeaders `*`: any value of x-canary excludes the rule
        await client.close()
    finally:
        assert proxy.stop() == 0
    assert "Traceback" not in proxy.log()


NOT_ENFORCED = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: reviews}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 0}}}
    retries: {attempts: 2, retryRemoteLocalities: true}
"""


async def test_not_enforced_fields_are_warned_by_validate_apply_and_config_dump(config_dir: Path,
                                                                              tmp_path: Path) -> None:
    manifest = tmp_path / "ratings.yaml"
    manifest.write_text(NOT_ENFORCED)
    expected = [f"{manifest}:8: spec.http[0].fault.abort.grpcStatus: valid Istio, not enforced by shiftproxy",
                f"{manifest}:9: spec.http[0].retries.retryRemoteLocalities: valid Istio, not enforced by shiftproxy"]
    checked = subprocess.run([sys.executable, "-m", "proxy", "validate", str(manifest)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    said = [line for line in checked.stdout.splitlines() if "not enforced" in line]
    assert [s.removeprefix("warning: ")[:len(e)] for s, e in zip(said, expected, strict=True)] == expected

    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    try:
        applied = await shiftproxy(proxy, "apply", "-f", str(manifest))
        assert applied.code == 0, applied.err
        warned = [line for line in applied.err.splitlines() if "not enforced" in line]
        assert [w.removeprefix("Warning: ").split(": ", 1)[1][:60] for w in warned] == \
            [e.split(": ", 1)[1][:60] for e in expected]
        assert "virtualservice.networking.istio.io/ratings created" in applied.out
        dumped = [w for w in proxy.config_dump()["warnings"] if "not enforced" in w]
        assert [w.split(": ", 1)[1][:60] for w in dumped] == [e.split(": ", 1)[1][:60] for e in expected]
    finally:
        assert proxy.stop() == 0


def test_a_reload_logs_the_new_warnings(config_dir: Path) -> None:
    proxy = ProxyProcess(config_dir, ["--access-log", "off"]).start()
    try:
        version = proxy.version()
        write_atomic(config_dir / "ratings.yaml", NOT_ENFORCED)
        proxy.wait_version(version)
        logged = [line for line in proxy.log().splitlines() if "not enforced by shiftproxy" in line]
        assert [line.split("ratings.yaml:", 1)[1][:28] for line in logged] == ["8: spec.http[0].fault.abort.",
                                                                                "9: spec.http[0].retries.retr"]
    finally:
        assert proxy.stop() == 0
