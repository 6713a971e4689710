"""Fields accepted but not enforced: one table (proxy.config.enforcement) drives the warnings of `validate`
(and so of `apply` and /config_dump) and docs/fields.md, which cannot drift from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import enforcement
from proxy.config.enforcement import ENFORCED, NOT_ENFORCED, TABLE, Status
from proxy.config.fields import FIELDS
from proxy.config.fields_doc import KINDS, render, rows
from proxy.config.load import load_paths
from proxy.config.validate import validate
from tests.config.test_validate import dr, gw, run, se, vs
from tests.paths import BOOKINFO_NET, ROOT, TCP_ECHO

FIELDS_MD = ROOT / "docs" / "fields.md"


def test_docs_fields_md_is_the_table() -> None:
    assert FIELDS_MD.read_text() == render(), "regenerate: python -m proxy.config.fields_doc > docs/fields.md"


def _reached() -> set[tuple[str, str]]:
    """(message, field) of every field that is not under a field that is not enforced."""
    seen: set[tuple[str, str]] = set()

    def walk(message: str) -> None:
        for name, type_spec in FIELDS[message].items():
            if (message, name) in seen:
                continue
            seen.add((message, name))
            row = TABLE.get((message, name))
            inner = type_spec.strip("[]{}")
            if row is not None and row.state != NOT_ENFORCED and inner in FIELDS:
                walk(inner)

    for kind in KINDS:
        walk(kind)
    return seen


def test_every_accepted_field_has_a_row_and_every_row_a_field() -> None:
    for kind in KINDS:
        assert rows(kind)  # raises LookupError naming a field the table does not classify
    reached = _reached()
    assert sorted(set(TABLE) - reached) == []  # no row for a field that does not exist or is never reached
    assert sorted(reached - set(TABLE)) == []


def test_the_doc_lists_every_field_of_every_kind() -> None:
    for kind in KINDS:
        listed = {path.rsplit(".", 1)[1] for path, _, _ in rows(kind) if path.count(".") == 1}
        assert listed == set(FIELDS[kind])


ISSUE_CASES = [  # (document, YAML path of the warning, a phrase of it)
    (dr("host: reviews\nsubsets:\n- name: v1\n  trafficPolicy:\n    tls: {mode: SIMPLE, caCrl: /crl.pem}"),
     "spec.subsets[0].trafficPolicy.tls.caCrl", "revocation lists are not checked"),
    (gw("selector: {istio: ingressgateway}\nservers:\n- port: {number: 443, name: https, protocol: HTTPS}\n"
        "  hosts: ['*']\n  tls: {mode: AUTO_PASSTHROUGH}"), "spec.servers[0].tls.mode", "needs Istio's mesh"),
    (vs("hosts: [reviews]\nhttp:\n- route: [{destination: {host: reviews}}]\n  fault: {abort: {grpcStatus: "
        "UNAVAILABLE, percentage: {value: 5}}}"), "spec.http[0].fault.abort.grpcStatus", "gRPC aborts"),
    (dr("host: reviews\ntrafficPolicy:\n  loadBalancer: {simple: PASSTHROUGH}"),
     "spec.trafficPolicy.loadBalancer.simple", "only under transparent capture (run --capture)"),
    (gw("selector: {istio: ingressgateway}\nservers:\n- port: {number: 443, name: https, protocol: HTTPS}\n"
        "  hosts: ['*']\n  tls: {mode: SIMPLE, credentialNames: [rsa, ecdsa]}"), "spec.servers[0].tls.credentialNames",
     "only the first certificate is served"),
    (se("hosts: [db.example.com]\naddresses: [10.1.0.1]\nports: [{number: 5432, name: tcp, protocol: TCP}]\n"
        "resolution: NONE"), "spec.resolution", "NONE (pass through to the original destination)"),
    (vs("hosts: [reviews]\nexportTo: ['.']\nhttp:\n- route: [{destination: {host: reviews}}]"), "spec.exportTo",
     "one proxy, no per-namespace sidecars"),

]

# fields enforced now: they draw no not-enforced warning
ENFORCED_CASES = [
    (dr("host: reviews\nsubsets:\n- name: v1\n  trafficPolicy:\n    tls: {mode: SIMPLE, sni: r.example}"),
     "spec.subsets[0].trafficPolicy.tls", ""),
    (gw("selector: {istio: ingressgateway}\nservers:\n- port: {number: 80, name: http, protocol: HTTP}\n"
        "  hosts: ['*']\n  tls: {httpsRedirect: true}"), "spec.servers[0].tls", ""),
    (gw("selector: {istio: ingressgateway}\nservers:\n- port: {number: 443, name: https, protocol: HTTPS}\n"
        "  hosts: ['*']\n  tls: {mode: SIMPLE, credentialName: cert, minProtocolVersion: TLSV1_3}"),
     "spec.servers[0].port.protocol", ""),
    (vs("hosts: ['*.example']\ntls:\n- match: [{sniHosts: [a.example], port: 443}]\n"
        "  route: [{destination: {host: reviews}}]"), "spec.tls", ""),
    (vs("hosts: [reviews]\nhttp:\n- route: [{destination: {host: reviews}}]\n  retries: {attempts: 3, retryOn: "
        "'5xx,retriable-4xx'}"), "spec.http[0].retries.retryOn",
     "partly enforced by shiftproxy: only failed connections are retried: 5xx retries only a failed connection; "
     "retriable-4xx is not enforced"),
    (vs("hosts: [reviews]\nhttp:\n- route: [{destination: {host: reviews}}]\n  retries: {attempts: 3, perTryTimeout: "
        "2s}"), "spec.http[0].retries.perTryTimeout", "not enforced by shiftproxy"),
    (dr("host: reviews\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {httpHeaderName: x-user}"),
     "spec.trafficPolicy.loadBalancer.consistentHash", "consistent hashing is not implemented"),
    (dr("host: reviews\ntrafficPolicy:\n  connectionPool:\n    tcp: {maxConnections: 1}"),
     "spec.trafficPolicy.connectionPool.tcp.maxConnections", "circuit breaking"),
    (dr("host: reviews\ntrafficPolicy:\n  connectionPool:\n    http: {http1MaxPendingRequests: 1, idleTimeout: 5s}"),
     "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests", "circuit breaking"),
    (dr("host: reviews\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: 1}"),
     "spec.trafficPolicy.outlierDetection", "no endpoint is ejected (consecutive5xxErrors)"),
    (vs("hosts: [reviews]\nhttp:\n- match: [{sourceLabels: {app: productpage}}]\n  route: "
        "[{destination: {host: reviews}}]"), "spec.http[0].match[0].sourceLabels", "no client workload identity"),
    (vs("hosts: [reviews]\nhttp:\n- match: [{sourceNamespace: prod}]\n  route: [{destination: {host: reviews}}]"),
     "spec.http[0].match[0].sourceNamespace", "no client workload identity"),
    (vs("hosts: [reviews]\nhttp:\n- match: [{uri: {prefix: /old}}]\n  redirect: {prefixRewrite: /new}"),
     "spec.http[0].redirect.prefixRewrite", "the redirect keeps the request's path"),
    (vs("hosts: [reviews]\nhttp:\n- route: [{destination: {host: reviews}}]\n  mirror: {host: reviews}\n"
        "  mirrorPercentage: {value: 5}"), "spec.http[0].mirror", "traffic mirroring is not implemented"),
    (vs("hosts: [reviews]\nhttp:\n- route: [{destination: {host: reviews}}]\n  mirrors: [{destination: "
        "{host: reviews}}]"), "spec.http[0].mirrors", "traffic mirroring is not implemented"),
    (vs("hosts: [reviews]\nhttp:\n- route: [{destination: {host: reviews}}]\n  corsPolicy: {allowOrigins: "
        "[{exact: 'https://a.example'}]}"), "spec.http[0].corsPolicy", "CORS is not implemented"),]


@pytest.mark.parametrize(("text", "path", "phrase"), ISSUE_CASES, ids=lambda v: v if "/" not in v and "\n" not in v
                         and len(v) < 60 else None)
def test_accepted_but_not_enforced_is_a_warning_with_file_line_and_path(text: str, path: str, phrase: str) -> None:
    errors, warnings = run(text)
    assert [str(e) for e in errors] == []
    found = [w for w in warnings if w.path == path and "enforced by shiftproxy" in w.reason]
    assert len(found) == 1, [str(w) for w in warnings]
    warning = found[0]
    assert phrase in warning.reason and warning.severity == "warning" and warning.file == "case.yaml"
    key = path.rsplit(".", 1)[-1].split("[")[0]
    assert key in text.splitlines()[warning.line - 1]  # the line that holds the field


@pytest.mark.parametrize(("text", "path", "phrase"), ENFORCED_CASES, ids=lambda v: v if "/" not in v
                         and "\n" not in v and len(v) < 60 else None)
def test_enforced_fields_draw_no_warning(text: str, path: str, phrase: str) -> None:
    errors, warnings = run(text)
    assert [str(e) for e in errors] == []
    assert [str(w) for w in warnings if "enforced by shiftproxy" in w.reason] == []


def test_enforced_configs_draw_no_such_warning() -> None:
    """The repository's example configs and the seed tasks' files use only enforced fields."""
    paths = [str(p) for p in (ROOT / "config").rglob("*.yaml") if "steps" not in p.parts]
    paths += [str(BOOKINFO_NET / "destination-rule-all.yaml"), str(BOOKINFO_NET / "virtual-service-all-v1.yaml"),
              str(TCP_ECHO / "tcp-echo-all-v1.yaml")]
    for path in paths:
        loaded = load_paths([path])
        errors, warnings = validate(loaded.objects)
        assert errors == []
        assert [str(w) for w in warnings if "enforced by shiftproxy" in w.reason] == []


def test_enforcing_a_field_is_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    text = vs("hosts: [reviews]\nhttp:\n- match: [{uri: {prefix: /}, statPrefix: x}]\n"
              "  route: [{destination: {host: reviews}}]")
    assert any(w.path == "spec.http[0].match[0].statPrefix" for w in run(text)[1])
    monkeypatch.setitem(enforcement.TABLE, ("HTTPMatchRequest", "statPrefix"), Status(ENFORCED, "prefixed"))
    assert not any(w.path == "spec.http[0].match[0].statPrefix" for w in run(text)[1])
    row = next(row for row in rows("VirtualService") if row[0] == "spec.http[].match[].statPrefix")
    assert row[:2] == ("spec.http[].match[].statPrefix", ENFORCED) and row[2].startswith("prefixed")
    assert render() != Path(FIELDS_MD).read_text()


@pytest.mark.parametrize(("retries", "warned"), [
    ("{attempts: 3}", []),
    ("{attempts: 3, retryOn: '5xx,retriable-4xx', perTryTimeout: 2s}", []),
    ("{attempts: 3, retryOn: connect-failure}", []),
    ("{attempts: 0}", []),
])
def test_retries_say_what_is_not_retried(retries: str, warned: list[str]) -> None:
    rule = f"- route: [{{destination: {{host: reviews}}}}]\n  retries: {retries}"
    _, warnings = run(vs(f"hosts: [reviews]\nhttp:\n{rule}"))
    assert [w.path for w in warnings if "enforced by shiftproxy" in w.reason] == warned


@pytest.mark.parametrize(("protocol", "warned"), [("HTTP", False), ("TCP", False), ("HTTPS", False), ("UDP", True)])
def test_service_port_protocols_not_served_are_warned(protocol: str, warned: bool) -> None:
    _, warnings = run(se(f"hosts: [a.example.com]\nresolution: DNS\nports: [{{number: 443, name: p, protocol: "
                         f"{protocol}}}]"))
    assert [w.path for w in warnings if "enforced by shiftproxy" in w.reason] == (
        ["spec.ports[0].protocol"] if warned else [])
