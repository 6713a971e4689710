"""The admin API's config operations against a real in-process Server with real upstreams on 127.0.0.1.

apply/delete answer only once the new snapshot serves (checked with traffic right after the answer),
reject invalid changes whole with every error, and persist what they change in the state directory
(never in the config paths).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from proxy.config.compile import CompileOptions
from proxy.server import RunOptions, Server
from tests.e2e.harness import Client, Upstream, free_port, service_entry
from tests.paths import BOOKINFO_NET, ROOT

NEGATIVE_WEIGHTS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: -10
    - destination: {host: reviews, subset: v3}
      weight: -90
"""


class Admin:
    """A client for the admin API on its real socket (one request per connection, as the server does)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def call(self, method: str, target: str, body: bytes | str = b"",
                   headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        data = body.encode() if isinstance(body, str) else body
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = f"{method} {target} HTTP/1.1\r\nhost: admin\r\ncontent-length: {len(data)}\r\n{extra}\r\n"
        writer.write(head.encode() + data)
        raw = await reader.read()
        writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        status = int(lines[0].split()[1])
        if hdrs.get("content-type", "").startswith("application/json"):
            return status, json.loads(payload), hdrs
        return status, payload.decode(), hdrs

    async def apply(self, text: str, filename: str = "") -> tuple[int, Any]:
        target = "/apply" + (f"?filename={filename}" if filename else "")
        status, payload, _ = await self.call("POST", target, text)
        return status, payload


@pytest.fixture
def config_dir(tmp_path: Path, reviews: dict[str, Upstream]) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "reviews-service-entry.yaml").write_text(
        service_entry("reviews", 9080, [(u.port, v) for v, u in reviews.items()]))
    shutil.copy(BOOKINFO_NET / "destination-rule-all.yaml", d)
    return d


async def start_server(paths: list[str]) -> Server:
    server = Server(RunOptions(
        config_paths=paths, compile=CompileOptions(gateway=False, mesh_port=free_port()),
        admin_host="127.0.0.1", admin_port=0, access_log="off", drain_timeout=1.0, watch=False))
    await server.start()
    return server


@pytest.fixture
async def server(config_dir: Path) -> AsyncIterator[Server]:
    server = await start_server([str(config_dir)])
    yield server
    await server.shutdown()


def admin_of(server: Server) -> Admin:
    return Admin(server.admin_address[1])


async def split(server: Server, n: int) -> Counter[str]:
    client = Client(server.options.compile.mesh_port)
    seen: Counter[str] = Counter()
    for _ in range(n):
        resp = await client.request("GET", "http://reviews:9080/reviews/0", "reviews:9080")
        seen[resp.json()["version"] if resp.status == 200 else f"status {resp.status}"] += 1
    await client.close()
    return seen


def snapshot_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


APPLIED_REVIEWS = "applied/virtualservice_default_reviews.yaml"


async def test_apply_is_live_when_it_answers(server: Server, config_dir: Path, state_dir: Path) -> None:
    admin = admin_of(server)
    before = server.state.snapshot.version  # type: ignore[union-attr]
    v3 = (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text()
    status, answer = await admin.apply(v3, "v3.yaml")
    assert status == 200, answer
    assert answer["objects"] == [{"kind": "VirtualService", "apiVersion": "networking.istio.io/v1",
                                  "namespace": "default", "name": "reviews", "result": "created"}]
    assert answer["version"] == before + 1 == server.state.snapshot.version  # type: ignore[union-attr]
    assert await split(server, 30) == Counter(v3=30)  # the very next requests see it
    assert (state_dir / APPLIED_REVIEWS).exists()
    assert sorted(p.name for p in config_dir.iterdir()) == ["destination-rule-all.yaml",
                                                           "reviews-service-entry.yaml"]

    status, again = await admin.apply((BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text())
    assert status == 200 and again["objects"][0]["result"] == "unchanged"
    assert (again["version"], again["changed"]) == (answer["version"], False)

    status, fifty = await admin.apply((BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml").read_text())
    assert fifty["objects"][0]["result"] == "configured" and fifty["version"] == answer["version"] + 1


async def test_invalid_apply_reports_every_error_and_changes_nothing(server: Server,
                                                                      config_dir: Path) -> None:
    admin = admin_of(server)
    files_before = snapshot_of(config_dir)
    version = server.state.snapshot.version  # type: ignore[union-attr]
    status, answer = await admin.apply(NEGATIVE_WEIGHTS, "bad-weights.yaml")
    assert status == 422
    assert answer["errors"] == [
        "bad-weights.yaml:10: spec.http[0].route[0].weight: weight -10 < 0",
        "bad-weights.yaml:12: spec.http[0].route[1].weight: weight -90 < 0",
    ]
    assert answer["version"] == version == server.state.snapshot.version  # type: ignore[union-attr]
    assert snapshot_of(config_dir) == files_before
    assert sorted(await split(server, 60)) == ["v1", "v2", "v3"]  # still the default route


async def test_warnings_are_the_requests_own(server: Server) -> None:
    """Config DRs name hosts without a ServiceEntry; only the request's warnings come."""
    admin = admin_of(server)
    v4 = (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text().replace("subset: v3", "subset: v4")
    status, answer = await admin.apply(v4, "v4.yaml")
    assert status == 200
    assert answer["warnings"] == [
        "v4.yaml:12: spec.http[0].route[0].destination.subset: subset v4 is not defined by any "
        "DestinationRule for reviews.default.svc.cluster.local: requests will get 503 NC"]
    status, answer = await admin.apply(NEGATIVE_WEIGHTS.replace("subset: v3", "subset: v4"), "both.yaml")
    assert status == 422 and len(answer["errors"]) == 2
    assert [w.split(": ")[0] for w in answer["warnings"]] == ["both.yaml:11"]


async def test_syntax_errors_and_duplicates_name_the_clients_file(server: Server) -> None:
    admin = admin_of(server)
    status, answer = await admin.apply("apiVersion: networking.istio.io/v1\nkind: [unclosed\n")
    assert status == 422 and answer["errors"][0].startswith("<stdin>:3: invalid YAML")
    vs = (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text()
    status, answer = await admin.apply(vs + "---\n" + vs, "twice.yaml")
    assert status == 422
    assert answer["errors"] == ["twice.yaml:14: metadata.name: VirtualService default/reviews is already "
                                "defined at twice.yaml:1"]
    status, answer = await admin.apply("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
    assert status == 400 and answer["errors"] == ["no Istio objects to apply"]


async def test_errors_across_several_files_name_each_file(server: Server) -> None:
    admin = admin_of(server)
    body = json.dumps({"files": [
        {"filename": "a.yaml", "content": NEGATIVE_WEIGHTS},
        {"filename": "b.yaml", "content": NEGATIVE_WEIGHTS.replace("name: reviews", "name: reviews-b")},
    ]})
    status, answer, _ = await admin.call("POST", "/apply", body, {"content-type": "application/json"})
    assert status == 422
    assert [e.split(":")[0] for e in answer["errors"]] == ["a.yaml", "a.yaml", "b.yaml", "b.yaml"]


async def test_apply_over_a_config_file_object_leaves_the_file_alone(server: Server, config_dir: Path,
                                                                   state_dir: Path) -> None:
    admin = admin_of(server)
    shutil.copy(BOOKINFO_NET / "virtual-service-all-v1.yaml", config_dir / "all.yaml")
    assert (await admin.call("POST", "/reload"))[0] == 200
    files_before = snapshot_of(config_dir)
    status, answer = await admin.apply((BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text())
    assert status == 200 and answer["objects"][0]["result"] == "configured"
    assert snapshot_of(config_dir) == files_before
    status, listed, _ = await admin.call("GET", "/objects?kind=virtualservice&name=reviews")
    (item,) = listed["objects"]
    assert item["file"] == str(state_dir / APPLIED_REVIEWS)
    assert item["object"]["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v3"
    dump = (await admin.call("GET", "/config_dump"))[1]
    assert dump["state"]["dir"] == str(state_dir)
    assert dump["state"]["applied"] == [{"kind": "VirtualService", "namespace": "default", "name": "reviews",
                                         "file": str(state_dir / APPLIED_REVIEWS)}]
    assert str(state_dir / APPLIED_REVIEWS) in dump["sources"]
    # a restart serves the same thing
    await server.shutdown()
    restarted = await start_server([str(config_dir)])
    try:
        assert await split(restarted, 20) == Counter(v3=20)
    finally:
        await restarted.shutdown()


async def test_delete_of_a_config_file_object_hides_it_until_applied_again(
        server: Server, config_dir: Path, state_dir: Path) -> None:
    admin = admin_of(server)
    shutil.copy(BOOKINFO_NET / "virtual-service-reviews-v3.yaml", config_dir / "v3.yaml")
    assert (await admin.call("POST", "/reload"))[0] == 200
    assert await split(server, 20) == Counter(v3=20)
    files_before = snapshot_of(config_dir)
    vs = (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text()
    status, answer, _ = await admin.call("POST", "/delete", vs)
    assert status == 200 and answer["objects"][0]["result"] == "deleted"
    assert snapshot_of(config_dir) == files_before
    assert sorted(await split(server, 60)) == ["v1", "v2", "v3"]  # the default route again
    dump = (await admin.call("GET", "/config_dump"))[1]
    assert [(d["kind"], d["name"]) for d in dump["state"]["deleted"]] == [("VirtualService", "reviews")]
    # still hidden after a reload and a restart
    assert (await admin.call("POST", "/reload"))[1]["changed"] is False
    await server.shutdown()
    restarted = await start_server([str(config_dir)])
    try:
        assert sorted(await split(restarted, 60)) == ["v1", "v2", "v3"]
        status, answer = await admin_of(restarted).apply(vs)
        assert status == 200 and answer["objects"][0]["result"] == "created"
        assert await split(restarted, 20) == Counter(v3=20)
        assert not list((state_dir / "deleted").iterdir())
    finally:
        await restarted.shutdown()


async def test_delete_goes_back_to_the_default_route(server: Server, state_dir: Path) -> None:
    admin = admin_of(server)
    vs = (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text()
    await admin.apply(vs)
    status, answer, _ = await admin.call("POST", "/delete", vs)
    assert status == 200 and answer["objects"][0]["result"] == "deleted"
    assert not (state_dir / APPLIED_REVIEWS).exists()
    assert sorted(await split(server, 60)) == ["v1", "v2", "v3"]
    status, answer, _ = await admin.call("POST", "/delete", vs)
    assert status == 200 and answer["objects"][0]["result"] == "not found" and answer["changed"] is False


async def test_dry_run_reports_without_changing(server: Server, config_dir: Path, state_dir: Path) -> None:
    admin = admin_of(server)
    files_before = snapshot_of(config_dir)
    state_before = snapshot_of(state_dir)
    version = server.state.snapshot.version  # type: ignore[union-attr]
    status, answer, _ = await admin.call("POST", "/apply?dry_run=1",
                                         (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text())
    assert status == 200 and answer["dry_run"] and answer["would_change_routing"]
    assert answer["objects"][0]["result"] == "created"
    assert answer["version"] == version == server.state.snapshot.version  # type: ignore[union-attr]
    assert snapshot_of(config_dir) == files_before and snapshot_of(state_dir) == state_before


async def test_a_single_config_file_can_take_applies(tmp_path: Path, config_dir: Path) -> None:
    single = tmp_path / "all.yaml"
    single.write_text("\n---\n".join(p.read_text() for p in sorted(config_dir.iterdir())))
    server = await start_server([str(single)])
    try:
        before = single.read_bytes()
        status, answer = await admin_of(server).apply(
            (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text())
        assert status == 200, answer
        assert single.read_bytes() == before and answer["version"] == server.state.snapshot.version  # type: ignore
        assert await split(server, 20) == Counter(v3=20)
    finally:
        await server.shutdown()


async def test_get_objects_filters_by_kind_namespace_and_name(server: Server) -> None:
    admin = admin_of(server)
    status, answer, _ = await admin.call("GET", "/objects?kind=DestinationRule&namespace=default")
    assert status == 200
    assert [o["name"] for o in answer["objects"]] == ["details", "productpage", "ratings", "reviews"]
    status, answer, _ = await admin.call("GET", "/objects?kind=DestinationRule&name=reviews&namespace=other")
    assert answer["objects"] == []
    status, answer, _ = await admin.call("GET", "/objects?kind=Pod")
    assert status == 400 and "unknown kind 'Pod'" in answer["error"]


async def test_explain_matches_the_config(server: Server) -> None:
    admin = admin_of(server)
    await admin.apply((BOOKINFO_NET / "virtual-service-reviews-jason-v2-v3.yaml").read_text())
    status, answer, _ = await admin.call("GET", "/explain?authority=reviews:9080&path=/reviews/0")
    assert status == 200
    assert answer["rules"][0]["reasons"] == ["match[0]: header end-user (None) is not exact 'jason'"]
    assert [(d["subset"], d["probability"]) for d in answer["route"]["destinations"]] == [("v3", 1.0)]
    status, answer, _ = await admin.call("GET", "/explain?authority=reviews:9080&header=end-user:jason")
    assert [(d["subset"], d["probability"]) for d in answer["route"]["destinations"]] == [("v2", 1.0)]
    status, answer, _ = await admin.call("GET", "/explain?authority=reviews&port=31400")
    assert status == 404 and "no listener on port 31400" in answer["error"]
    status, answer, _ = await admin.call("GET", "/explain?authority=reviews&header=nocolon")
    assert status == 400


async def test_metrics_parse_and_count_each_version(server: Server) -> None:
    admin = admin_of(server)
    await admin.apply((BOOKINFO_NET / "virtual-service-reviews-50-v3.yaml").read_text())
    seen = await split(server, 200)
    status, text, hdrs = await admin.call("GET", "/metrics")
    assert status == 200 and hdrs["content-type"].startswith("text/plain; version=0.0.4")
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "istio_requests_total" and labels["destination_service_name"] == "reviews":
                assert sample.labels["destination_service"] == "reviews.default.svc.cluster.local"
                assert sample.labels["response_code"] == "200" and sample.labels["reporter"] == "source"
                counts[sample.labels["destination_version"]] += int(sample.value)
    assert counts == seen
    status, text, hdrs = await admin.call("GET", "/metrics",
                                          headers={"accept": "application/openmetrics-text"})
    assert hdrs["content-type"].startswith("application/openmetrics-text")
    names = {f.name for f in parse_openmetrics(text)}
    assert {"istio_requests", "istio_request_duration_milliseconds", "shiftproxy_config_version"} <= names


async def test_unknown_endpoint_lists_the_endpoints(server: Server) -> None:
    status, text, _ = await admin_of(server).call("GET", "/nope")
    assert status == 404 and "/apply" in text and "/explain" in text and "/objects" in text



def _unprivileged() -> list[str]:
    """A command prefix that makes root honour file modes (drops the capability to ignore them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]


async def _apply_to_unprivileged_proxy(config_dir: Path, state_dir: Path, text: str) -> tuple[int, Any, Any]:
    """Start a real proxy process that honours file modes, apply `text`: (status, answer, config dump)."""
    prefix = _unprivileged()
    admin_port = free_port()
    log = config_dir.parent / f"proxy-{admin_port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "proxy", "run", "--config", str(config_dir),
             "--state-dir", str(state_dir), "--bind", "127.0.0.1", "--role", "mesh",
             "--mesh-port", str(free_port()), "--admin", f"127.0.0.1:{admin_port}", "--access-log", "off"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    admin = Admin(admin_port)
    try:
        for _ in range(300):  # bounded wait for /ready (up to ~15 s)
            assert proc.poll() is None, log.read_text()
            try:
                ready = await admin.call("GET", "/ready")
                if ready[0] == 200:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.05)
        version = (await admin.call("GET", "/config_dump"))[1]["version"]
        status, answer = await admin.apply(text)
        dump = (await admin.call("GET", "/config_dump"))[1]
        assert dump["version"] == version + (1 if status == 200 else 0)
        return status, answer, dump
    finally:
        proc.terminate()
        proc.wait(20)


async def test_read_only_config_directory_takes_applies_in_the_state_directory(config_dir: Path,
                                                                              tmp_path: Path) -> None:
    """A config directory the proxy cannot write (a ConfigMap or read-only mount): apply still works."""
    files_before = snapshot_of(config_dir)
    state = tmp_path / "state"
    config_dir.chmod(0o555)
    try:
        status, answer, dump = await _apply_to_unprivileged_proxy(
            config_dir, state, (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text())
    finally:
        config_dir.chmod(0o755)
    assert status == 200, answer
    assert snapshot_of(config_dir) == files_before
    assert (state / APPLIED_REVIEWS).exists()
    assert dump["state"]["applied"][0]["file"] == str(state / APPLIED_REVIEWS)


async def test_read_only_state_directory_is_refused_whole(config_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o555)
    try:
        status, answer, _ = await _apply_to_unprivileged_proxy(
            config_dir, state, (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text())
    finally:
        state.chmod(0o755)
    assert status == 409, answer
    assert answer["error"] == (f"state directory {state} is not writable: cannot persist applied objects "
                               "(choose a writable --state-dir or $SHIFTPROXY_STATE_DIR)")
    assert list(state.iterdir()) == []
