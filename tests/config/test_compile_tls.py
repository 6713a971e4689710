"""Compiling TLS: gateway servers' contexts chosen by SNI, httpsRedirect, tls routes, cluster origination,
and the config errors (file, line, YAML path) for what cannot be honoured: never plaintext instead."""

from __future__ import annotations

import ssl
import textwrap
from pathlib import Path

import pytest
import trustme

from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.compile_tls import TlsOptions
from proxy.config.diagnostics import ConfigError
from proxy.config.load import load_text
from proxy.routing.explain import explain_tcp
from proxy.routing.snapshot import Redirect, Snapshot
from proxy.tls.credentials import Credential
from tests import registry
from tests.paths import BOOKINFO_NET


def gateway(servers: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
{textwrap.indent(servers, "  ")}"""


def build(text: str, credentials: Path | None = None, mesh_certs: str = "") -> Snapshot:
    loaded = load_text(registry.REVIEWS_SE + "---\n" + text, "tls.yaml")
    assert not loaded.errors
    options = CompileOptions(tls=TlsOptions(str(credentials or ""), mesh_certs))
    return compile_snapshot(loaded.objects, options)


def errors(text: str, credentials: Path | None = None, mesh_certs: str = "") -> list[str]:
    with pytest.raises(ConfigError) as info:
        build(text, credentials, mesh_certs)
    return [str(e) for e in info.value.errors]


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    ca = trustme.CA()
    for name, host in (("a", "a.example"), ("b", "*.b.example"), ("c", "c.example")):
        cert = ca.issue_cert(host)
        (tmp_path / name).mkdir()
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / name / "tls.crt"))
        cert.private_key_pem.write_to_path(str(tmp_path / name / "tls.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "c" / "ca.crt"))
    return tmp_path


SERVER = "- port: {{number: 443, name: {name}, protocol: HTTPS}}\n  hosts: [{hosts}]\n  tls: {tls}\n"


def test_servers_on_one_port_get_their_contexts_by_sni(creds: Path) -> None:
    snap = build(gateway(SERVER.format(name="a", hosts="a.example", tls="{mode: SIMPLE, credentialName: a}") +
                         SERVER.format(name="b", hosts="'*.b.example'", tls="{mode: SIMPLE, credentialName: b}")),
                 creds)
    tls = snap.http_listeners["gateway_http_443"].tls
    assert tls is not None and tls.verify_mode == ssl.CERT_NONE
    a, b = tls.select("a.example"), tls.select("x.b.example")
    assert a is not None and b is not None and a is not b
    assert tls.select("A.EXAMPLE") is a
    assert tls.select("other.example") is None  # refused: no server for that name
    assert tls.select(None) is a  # no SNI: the first server
    assert len(snap.credentials) == 2 and all(isinstance(c, Credential) for c in snap.credentials)
    assert ("http+tls", "0.0.0.0", 443) in snap.listener_keys()


def test_mutual_asks_for_client_certificates(creds: Path) -> None:
    snap = build(gateway(SERVER.format(name="c", hosts="c.example", tls="{mode: MUTUAL, credentialName: c}")), creds)
    tls = snap.http_listeners["gateway_http_443"].tls
    assert tls is not None and tls.verify_mode == ssl.CERT_REQUIRED and tls.kind == "mtls"


@pytest.mark.parametrize(("tls", "where", "phrase"), [
    ("{mode: SIMPLE, credentialName: missing}", "spec.servers[0].tls.credentialName", "missing/tls.crt"),
    ("{mode: MUTUAL, credentialName: a}", "spec.servers[0].tls.credentialName", "needs a CA bundle"),
    ("{mode: AUTO_PASSTHROUGH}", "spec.servers[0].tls.mode", "AUTO_PASSTHROUGH is not supported"),
    ("{mode: ISTIO_MUTUAL}", "spec.servers[0].tls.mode", "no mesh CA here"),
    ("{mode: SIMPLE, serverCertificate: /nonexistent/c.pem, privateKey: /nonexistent/k.pem}", "spec.servers[0].tls",
     "/nonexistent/c.pem: no such file"),
    ("{mode: SIMPLE, credentialName: a, cipherSuites: [NOT-A-CIPHER]}", "spec.servers[0].tls", "none is usable"),
])
def test_what_a_server_cannot_have_is_a_config_error(creds: Path, tls: str, where: str, phrase: str) -> None:
    found = errors(gateway(SERVER.format(name="x", hosts="a.example", tls=tls)), creds)
    assert len(found) == 1 and "tls.yaml:" in found[0] and where in found[0] and phrase in found[0], found


def test_credential_name_without_a_credentials_dir_says_so() -> None:
    found = errors(gateway(SERVER.format(name="x", hosts="a.example", tls="{mode: SIMPLE, credentialName: a}")))
    assert "--credentials-dir" in found[0]


def test_mutual_and_simple_servers_cannot_share_a_port(creds: Path) -> None:
    found = errors(gateway(SERVER.format(name="a", hosts="a.example", tls="{mode: SIMPLE, credentialName: a}") +
                           SERVER.format(name="c", hosts="c.example", tls="{mode: MUTUAL, credentialName: c}")), creds)
    assert "separate ports" in found[0]


def test_https_redirect_makes_every_host_of_the_server_redirect() -> None:
    snap = build(gateway("- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']\n"
                         "  tls: {httpsRedirect: true}\n") + "---\n" +
                 (BOOKINFO_NET / "bookinfo-gateway.yaml").read_text().split("---")[1])
    table = snap.http_listeners["gateway_http_80"].route_table
    for host in ("bookinfo.example", "anything"):
        vh = table.find(host)
        assert vh is not None
        action = vh.routes[0].action
        assert isinstance(action, Redirect) and action.scheme == "https" and action.code == 301


def dr(tls: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy:
    tls: {tls}
  subsets:
  - name: v1
    labels: {{version: v1}}
    trafficPolicy:
      tls: {{mode: DISABLE}}
"""


def test_origination_is_set_per_cluster_and_pooled_apart() -> None:
    snap = build(dr("{mode: SIMPLE, sni: reviews.example}"))
    top = snap.clusters["outbound|9080||reviews.default.svc.cluster.local"]
    v1 = snap.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
    assert top.tls is not None and top.tls.sni == "reviews.example"
    assert top.tls.context.verify_mode == ssl.CERT_REQUIRED  # system roots when no caCertificates
    assert v1.tls is None  # the subset's DISABLE wins
    assert {e.key for e in top.endpoints}.isdisjoint({e.key for e in v1.endpoints})


@pytest.mark.parametrize(("tls", "where", "phrase"), [
    ("{mode: ISTIO_MUTUAL}", "spec.trafficPolicy.tls.mode", "--mesh-certs"),
    ("{mode: SIMPLE, caCertificates: /nonexistent/ca.pem}", "spec.trafficPolicy.tls", "/nonexistent/ca.pem"),
    ("{mode: SIMPLE, credentialName: nope}", "spec.trafficPolicy.tls.credentialName", "--credentials-dir"),
])
def test_origination_that_cannot_be_set_up_is_a_config_error(tls: str, where: str, phrase: str) -> None:
    found = errors(dr(tls))
    assert found and all(where in f and phrase in f and "tls.yaml:" in f for f in found), found


def test_istio_mutual_uses_the_mesh_certificates(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("spiffe-less.example")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert-chain.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "root-cert.pem"))
    snap = build(dr("{mode: ISTIO_MUTUAL}"), mesh_certs=str(tmp_path))
    top = snap.clusters["outbound|9080||reviews.default.svc.cluster.local"]
    assert top.tls is not None and top.tls.context.verify_mode == ssl.CERT_REQUIRED


PASSTHROUGH_SNI = """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sni}
spec:
  hosts: ['*.example']
  gateways: [gw]
  tls:
  - match: [{port: 443, sniHosts: [a.example]}]
    route: [{destination: {host: reviews}}]
  - match: [{port: 8443, sniHosts: [b.example]}]
    route: [{destination: {host: reviews}}]
"""


def test_explain_answers_for_an_sni() -> None:
    snap = build(gateway("- port: {number: 443, name: tls, protocol: TLS}\n  hosts: ['*']\n"
                         "  tls: {mode: PASSTHROUGH}\n") + PASSTHROUGH_SNI)
    listener = snap.tcp_listeners["gateway_tcp_443"]
    routed = explain_tcp(snap, listener, sni="A.example")
    assert routed["route"]["name"] == "default/sni#tls0" and routed["rules"][0]["kind"] == "tls"
    assert "sniHosts a.example" in routed["rules"][0]["why"]
    unrouted = explain_tcp(snap, listener, sni="c.example")
    assert unrouted["route"] is None
    assert unrouted["rules"][0]["reasons"] == ["SNI c.example is not in sniHosts a.example"]
    assert explain_tcp(snap, listener)["rules"][0]["reasons"] == ["no SNI given (--sni NAME)"]


def test_tls_routes_compile_to_sni_routes_on_a_passthrough_server() -> None:
    snap = build(gateway("- port: {number: 443, name: tls, protocol: TLS}\n  hosts: ['*']\n"
                         "  tls: {mode: PASSTHROUGH}\n") + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sni}
spec:
  hosts: ['*.example']
  gateways: [gw]
  tls:
  - match: [{port: 443, sniHosts: [a.example]}]
    route: [{destination: {host: reviews}}]
  - match: [{port: 8443, sniHosts: [b.example]}]
    route: [{destination: {host: reviews}}]
""")
    listener = snap.tcp_listeners["gateway_tcp_443"]
    assert listener.tls is None
    assert [r.sni_hosts for r in listener.sni_routes] == [("a.example",)]  # the 8443 block is for another port
    assert listener.sni_routes[0].matches_sni("A.example") and not listener.sni_routes[0].matches_sni("b.example")
    assert ("tcp+sni", "0.0.0.0", 443) in snap.listener_keys()


def test_sidecar_passes_https_ports_through_only_with_tls_rules() -> None:
    egress = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
"""
    assert "mesh_tcp_443" not in build(egress).tcp_listeners  # an egress entry alone opens no local :443
    snap = build(egress + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example]
  tls:
  - match: [{sniHosts: [api.example]}]
    route: [{destination: {host: api.example}}]
""")
    listener = snap.tcp_listeners["mesh_tcp_443"]
    assert [r.sni_hosts for r in listener.sni_routes] == [("api.example",)]
