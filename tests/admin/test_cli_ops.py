"""The CLI's own parts: kind names, tables, ages, the explain text, reading -f inputs, argument parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy import cli_client, cli_explain, cli_ops
from proxy.cli import build_parser
from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.load import load_paths, load_text
from proxy.routing.explain import explain_http, explain_tcp, find_listener
from proxy.routing.snapshot import HttpListener, TcpListener
from tests.admin.test_explain import TCP_ECHO_CONFIG
from tests.paths import BOOKINFO_NET, TCP_ECHO
from tests.registry import REVIEWS_SE


@pytest.mark.parametrize(("name", "kind"), [
    ("vs", "VirtualService"), ("virtualservice", "VirtualService"), ("virtualservices", "VirtualService"),
    ("VirtualService", "VirtualService"), ("virtualservices.networking.istio.io", "VirtualService"),
    ("dr", "DestinationRule"), ("destinationrules", "DestinationRule"),
    ("gw", "Gateway"), ("gateways.networking.istio.io", "Gateway"), ("gateway.networking.istio.io", "Gateway"),
    # with both APIs, kubectl resolves `gateway` to the Gateway API's (its group sorts first); `gw` stays Istio's
    ("gateways", "Gateway.gateway.networking.k8s.io"), ("gateway", "Gateway.gateway.networking.k8s.io"),
    ("gtw", "Gateway.gateway.networking.k8s.io"), ("gateways.gateway.networking.k8s.io",
                                                   "Gateway.gateway.networking.k8s.io"),
    ("httproute", "HTTPRoute"), ("httproutes.gateway.networking.k8s.io", "HTTPRoute"), ("tcproute", "TCPRoute"),
    ("tlsroutes", "TLSRoute"), ("referencegrant", "ReferenceGrant"), ("svc", "Service"), ("services", "Service"),
    ("se", "ServiceEntry"), ("serviceentries", "ServiceEntry"), ("we", "WorkloadEntry"),
    ("workloadentries", "WorkloadEntry"), ("pods", None),
])
def test_kind_names(name: str, kind: str | None) -> None:
    assert cli_ops.KIND_NAMES.get(name.lower()) == kind  # `get` lower-cases, as kubectl does


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"), (200, "3m20s"), (600, "10m"), (7200, "120m"),
    (3 * 3600 + 120, "3h2m"), (10 * 3600, "10h"), (3 * 86400 + 4 * 3600, "3d4h"), (30 * 86400, "30d"),
    (None, "<unknown>"),
])
def test_human_age_like_kubectl(seconds: float | None, text: str) -> None:
    assert cli_ops.human_age(seconds) == text


def item(kind: str, name: str, spec: dict, namespace: str = "default") -> dict:
    return {"kind": kind, "name": name, "namespace": namespace, "file": f"/cfg/{name}.yaml", "line": 1,
            "age_seconds": 65, "object": {"spec": spec}}


def test_virtual_service_table_has_kubectls_columns() -> None:
    items = [item("VirtualService", "bookinfo", {"gateways": ["bookinfo-gateway"], "hosts": ["*"]}),
             item("VirtualService", "reviews", {"hosts": ["reviews"]})]
    assert cli_ops.table("VirtualService", items).splitlines() == [
        "NAME       GATEWAYS               HOSTS         AGE",
        'bookinfo   ["bookinfo-gateway"]   ["*"]         65s',
        'reviews                           ["reviews"]   65s',
    ]
    wide = cli_ops.table("VirtualService", items, wide=True, namespaces=True).splitlines()
    assert wide[0].split() == ["NAMESPACE", "NAME", "GATEWAYS", "HOSTS", "AGE", "SOURCE"]
    assert wide[2].split() == ["default", "reviews", '["reviews"]', "65s", "/cfg/reviews.yaml:1"]


def test_other_tables() -> None:
    se = cli_ops.table("ServiceEntry", [item("ServiceEntry", "reviews", {
        "hosts": ["reviews"], "location": "MESH_INTERNAL", "resolution": "STATIC"})]).splitlines()
    assert [line.split() for line in se] == [["NAME", "HOSTS", "LOCATION", "RESOLUTION", "AGE"],
                                             ["reviews", '["reviews"]', "MESH_INTERNAL", "STATIC", "65s"]]
    dr = cli_ops.table("DestinationRule", [item("DestinationRule", "reviews", {"host": "reviews"})])
    assert [line.split() for line in dr.splitlines()] == [["NAME", "HOST", "AGE"],
                                                          ["reviews", "reviews", "65s"]]
    we = cli_ops.table("WorkloadEntry", [item("WorkloadEntry", "vm1", {"address": "10.0.0.1"})])
    assert [line.split() for line in we.splitlines()] == [["NAME", "AGE", "ADDRESS"],
                                                          ["vm1", "65s", "10.0.0.1"]]


def test_explain_text_for_a_header_rule() -> None:
    loaded = load_paths([str(BOOKINFO_NET / "destination-rule-all.yaml"),
                         str(BOOKINFO_NET / "virtual-service-reviews-jason-v2-v3.yaml")])
    snap = compile_snapshot(loaded.objects + load_text(REVIEWS_SE, "se.yaml").objects, CompileOptions())
    listener = find_listener(snap)
    assert isinstance(listener, HttpListener)
    text = cli_explain.render_explain(explain_http(snap, listener, "reviews:9080", "/reviews/0",
                                               headers={"end-user": "alice"}))
    assert text.splitlines() == [
        "config version 1; listener mesh_http (sidecar HTTP on 127.0.0.1:15001)",
        "request:  GET reviews:9080/reviews/0",
        "          end-user: alice",
        "host:     reviews.default.svc.cluster.local (VirtualService default/reviews)",
        "rule 0:   default/reviews#0: no match",
        "            match[0]: header end-user ('alice') is not exact 'jason'",
        "rule 1:   default/reviews#1: MATCH (the rule has no match conditions)",
        "route:    each request picks one destination:",
        "  100.0%  reviews.default.svc.cluster.local:9080 subset v3   "
        "(cluster outbound|9080|v3|reviews.default.svc.cluster.local, weight 100)",
        "          endpoint 127.0.0.1:9093  version v3",
    ]


def test_explain_text_for_an_unknown_host_and_for_tcp() -> None:
    snap = compile_snapshot(load_text(REVIEWS_SE, "se.yaml").objects, CompileOptions())
    listener = find_listener(snap)
    assert isinstance(listener, HttpListener)
    text = cli_explain.render_explain(explain_http(snap, listener, "ratings:9080"))
    assert ("result:   404 NR: no VirtualService or service on listener mesh_http serves "
            "'ratings:9080'") in text
    assert text.endswith("          hosts on this listener: reviews\n")

    loaded = load_paths([str(TCP_ECHO / "tcp-echo-20-v2.yaml")])
    snap = compile_snapshot(loaded.objects + load_text(TCP_ECHO_CONFIG, "x.yaml").objects,
                            CompileOptions(mesh=False))
    tcp = find_listener(snap, port=31400)
    assert isinstance(tcp, TcpListener)
    text = cli_explain.render_explain(explain_tcp(snap, tcp))
    assert "route:    each new connection picks one destination:" in text
    assert "   80.0%  tcp-echo.default.svc.cluster.local:9000 subset v1" in text
    assert "   20.0%  tcp-echo.default.svc.cluster.local:9000 subset v2" in text


def test_read_files_takes_files_directories_and_reports_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("a: 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text("b: 2\n")
    (tmp_path / "notes.txt").write_text("not yaml")
    files = cli_ops.read_files([str(tmp_path)])
    assert [f["filename"] for f in files] == [str(tmp_path / "a.yaml"), str(tmp_path / "sub" / "b.yml")]
    with pytest.raises(cli_client.CliError, match="does not exist"):
        cli_ops.read_files([str(tmp_path / "missing.yaml")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(cli_client.CliError, match="no .yaml or .yml files"):
        cli_ops.read_files([str(tmp_path / "empty")])


def test_admin_address_from_flag_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    monkeypatch.setenv(cli_client.ADMIN_ENV, "127.0.0.1:16000")
    assert cli_client.admin_client(parser.parse_args(["get", "vs"])).address == "127.0.0.1:16000"
    assert cli_client.admin_client(parser.parse_args(["get", "vs", "--admin", "localhost:17000"])).address == \
        "localhost:17000"
    monkeypatch.delenv(cli_client.ADMIN_ENV)
    assert cli_client.admin_client(parser.parse_args(["get", "vs"])).address == "127.0.0.1:15000"
    with pytest.raises(cli_client.CliError, match="HOST:PORT"):
        cli_client.AdminClient("nonsense")


def test_get_refuses_unknown_kinds_without_calling_the_proxy(capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.cli import main

    assert main(["get", "pods", "--admin", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().err == ('error: the server doesn\'t have a resource type "pods" '
                                       "(one of: vs, dr, gw, se, we, gateway, httproute, tcproute, tlsroute, "
                                       "referencegrant, svc, rollout)\n")


@pytest.mark.parametrize(("text", "size"), [
    ("8388608", 8 * 1024 * 1024), ("8Mi", 8 * 1024 * 1024), ("8MiB", 8 * 1024 * 1024), ("64Ki", 65536),
    ("1G", 10**9), ("2k", 2000), ("0", None), ("-1", None), ("8 apples", None), ("Mi", None), ("1.5Mi", None),
])
def test_max_config_bytes_sizes(text: str, size: int | None) -> None:
    import argparse

    from proxy.cli import parse_size

    if size is None:
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(text)
    else:
        assert parse_size(text) == size


def test_run_takes_state_dir_and_size_limit() -> None:
    args = build_parser().parse_args(["run", "-c", "cfg", "--state-dir", "/var/lib/x", "--max-config-bytes", "1Mi"])
    assert (args.state_dir, args.max_config_bytes) == ("/var/lib/x", 1024 * 1024)
    apply = build_parser().parse_args(["apply", "-f", "x.yaml", "-n", "shop"])
    assert apply.namespace == "shop"
    assert build_parser().parse_args(["delete", "-f", "x.yaml", "--namespace", "shop"]).namespace == "shop"
