"""TLS end to end, through the real proxy process: HTTPS gateways (SIMPLE, MUTUAL, SNI), httpsRedirect,
TLS passthrough with weighted `tls` routes, TLS origination to upstreams, and certificate rotation.
Certificates come from trustme; everything listens on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import trustme

from tests.e2e.harness import Client, ProxyProcess, Upstream, free_port, service_entry, write_atomic
from tests.e2e.tls_fixtures import (
    TlsEcho,
    client_context,
    peer_der,
    server_context,
    tls_client,
    write_credential,
)
from tests.paths import BOOKINFO_NET
from tests.stats import binomial_interval

HOST = "bookinfo.example"


def gateway(port: int, servers: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
{servers}
"""


def https_server(port: int, hosts: str, tls: str, name: str = "https") -> str:
    return f"""  - port: {{number: {port}, name: {name}, protocol: HTTPS}}
    hosts: [{hosts}]
    tls: {tls}
"""


def reviews_vs(hosts: str = HOST, weights: tuple[int, int] = (50, 50)) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-gw}}
spec:
  hosts: [{hosts}]
  gateways: [gw]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {weights[0]}
    - destination: {{host: reviews, subset: v3}}
      weight: {weights[1]}
"""


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def reviews_config(tmp_path: Path, reviews: dict[str, Upstream]) -> Path:
    """A config directory with the reviews service on `reviews` and its subsets, no Gateway yet."""
    d = tmp_path / "config"
    d.mkdir()
    (d / "reviews-service-entry.yaml").write_text(
        service_entry("reviews", 9080, [(u.port, v) for v, u in reviews.items()]))
    shutil.copy(BOOKINFO_NET / "destination-rule-all.yaml", d)
    return d


@pytest.fixture
def config_dir(tmp_path: Path, reviews: dict[str, Upstream]) -> Path:
    return reviews_config(tmp_path, reviews)


def start(config_dir: Path, credentials: Path | None = None, *extra: str) -> ProxyProcess:
    args = ["--access-log", "off", "--role", "gateway", *extra]
    if credentials is not None:
        args += ["--credentials-dir", str(credentials)]
    return ProxyProcess(config_dir, args).start()


def metrics(proxy: ProxyProcess) -> str:
    with urllib.request.urlopen(f"{proxy.admin}/metrics", timeout=5) as resp:
        return resp.read().decode()


async def test_https_gateway_serves_the_50_50_split_behind_tls(config_dir: Path, tmp_path: Path, ca: trustme.CA,
                                                               reviews: dict[str, Upstream]) -> None:
    creds = tmp_path / "credentials"
    write_credential(creds, "bookinfo-cert", ca, HOST)
    port = free_port()
    (config_dir / "gateway.yaml").write_text(gateway(port, https_server(
        port, HOST, "{mode: SIMPLE, credentialName: bookinfo-cert, minProtocolVersion: TLSV1_2}")))
    (config_dir / "vs.yaml").write_text(reviews_vs())
    proxy = start(config_dir, creds)
    try:
        client = await tls_client(port, client_context(ca), HOST)
        assert client.writer is not None
        assert client.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        n = 1000
        seen: Counter[str] = Counter()
        for _ in range(n):
            resp = await client.request("GET", "/reviews/0", HOST)
            seen[resp.json()["version"] if resp.status == 200 else f"status {resp.status}"] += 1
        await client.close()
        lo, hi = binomial_interval(n, 0.5)
        assert seen["v1"] + seen["v3"] == n, seen
        assert lo <= seen["v3"] <= hi, (seen, (lo, hi))
        assert reviews["v3"].last_headers["x-forwarded-proto"] == "https"
        # plaintext to the HTTPS port is not served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /reviews/0 HTTP/1.1\r\nhost: {HOST}\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(1024), 10)
        assert not data.startswith(b"HTTP/1.1 200"), data
        writer.close()
    finally:
        proxy.stop()


async def test_sni_selects_each_host_its_certificate_on_one_port(config_dir: Path, tmp_path: Path,
                                                                 ca: trustme.CA) -> None:
    creds = tmp_path / "credentials"
    a = write_credential(creds, "a-cert", ca, "a.example")
    b = write_credential(creds, "b-cert", ca, "*.b.example")
    port = free_port()
    (config_dir / "gateway.yaml").write_text(gateway(port, https_server(
        port, "a.example", "{mode: SIMPLE, credentialName: a-cert}") + https_server(
        port, "'*.b.example'", "{mode: SIMPLE, credentialName: b-cert}", "https-b")))
    (config_dir / "vs.yaml").write_text(reviews_vs("a.example, x.b.example", (100, 0)))
    proxy = start(config_dir, creds)
    try:
        expected = {"a.example": a, "x.b.example": b}
        for name, cert in expected.items():
            client = await tls_client(port, client_context(ca), name)
            assert client.writer is not None
            assert peer_der(client.writer) == ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
            resp = await client.request("GET", "/reviews/0", name)
            assert resp.status == 200 and resp.json()["version"] == "v1"
            await client.close()
        # a name no server has: the handshake is refused
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await tls_client(port, client_context(ca), "other.example")
        # a config change of certificate is live for new handshakes, on the same listening socket
        c = write_credential(creds, "c-cert", ca, "a.example")
        version = proxy.version()
        write_atomic(config_dir / "gateway.yaml", gateway(port, https_server(
            port, "a.example", "{mode: SIMPLE, credentialName: c-cert}") + https_server(
            port, "'*.b.example'", "{mode: SIMPLE, credentialName: b-cert}", "https-b")))
        proxy.wait_version(version)
        client = await tls_client(port, client_context(ca), "a.example")
        assert client.writer is not None
        assert peer_der(client.writer) == ssl.PEM_cert_to_DER_cert(c.cert_chain_pems[0].bytes().decode())
        assert (await client.request("GET", "/reviews/0", "a.example")).status == 200
        await client.close()
    finally:
        proxy.stop()


async def test_mutual_tls_refuses_a_client_without_a_certificate(config_dir: Path, tmp_path: Path,
                                                                 ca: trustme.CA) -> None:
    creds = tmp_path / "credentials"
    client_ca = trustme.CA()
    write_credential(creds, "mtls-cert", ca, HOST, client_ca=client_ca)
    port = free_port()
    (config_dir / "gateway.yaml").write_text(gateway(port, https_server(
        port, HOST, "{mode: MUTUAL, credentialName: mtls-cert}")))
    (config_dir / "vs.yaml").write_text(reviews_vs(weights=(100, 0)))
    proxy = start(config_dir, creds)
    try:
        good = await tls_client(port, client_context(ca, client_ca.issue_cert("client.example")), HOST)
        assert (await good.request("GET", "/reviews/0", HOST)).status == 200
        await good.close()
        for cert in (None, trustme.CA().issue_cert("stranger.example")):  # none, or one from another CA
            bad: Client | None = None
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                # TLS 1.3: the refusal arrives after the client's side of the handshake, on first read
                bad = await tls_client(port, client_context(ca, cert), HOST)
                try:
                    await bad.request("GET", "/reviews/0", HOST)
                finally:
                    await bad.close()

        # the client CA bundle rotated: the old CA's clients are refused from then on, the new one's accepted
        new_ca = trustme.CA()
        version = proxy.version()
        tmp = creds / "mtls-cert" / ".ca.crt.tmp"
        tmp.write_bytes(new_ca.cert_pem.bytes())
        tmp.replace(creds / "mtls-cert" / "ca.crt")
        proxy.wait_version(version)
        good = await tls_client(port, client_context(ca, new_ca.issue_cert("client.example")), HOST)
        assert (await good.request("GET", "/reviews/0", HOST)).status == 200
        await good.close()
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            bad = await tls_client(port, client_context(ca, client_ca.issue_cert("client.example")), HOST)
            try:
                await bad.request("GET", "/reviews/0", HOST)
            finally:
                await bad.close()
        # each refused client is counted with its reason
        failures = {line.split("{", 1)[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
                    for line in metrics(proxy).splitlines()
                    if line.startswith("shiftproxy_tls_handshake_failures_total")}
        assert sum(v for k, v in failures.items() if 'side="downstream"' in k) == 3, failures
    finally:
        proxy.stop()


async def test_https_redirect_answers_301(config_dir: Path) -> None:
    port = free_port()
    (config_dir / "gateway.yaml").write_text(gateway(port, f"""  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: [{HOST}]
    tls: {{httpsRedirect: true}}
"""))
    (config_dir / "vs.yaml").write_text(reviews_vs(weights=(100, 0)))
    proxy = start(config_dir)
    try:
        client = Client(port)
        resp = await client.request("GET", "/productpage?u=1", f"{HOST}:{port}")
        assert resp.status == 301
        assert resp.headers["location"] == f"https://{HOST}/productpage?u=1"
        await client.close()
    finally:
        proxy.stop()


def echo_service(name: str, port: int, backends: list[TlsEcho]) -> str:
    return service_entry(name, port, [(b.port, b.name) for b in backends], protocol="TLS", port_name="tls")


async def test_passthrough_tls_route_splits_80_20_by_sni(tmp_path: Path, ca: trustme.CA) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    certs = {v: ca.issue_cert("echo.example") for v in ("v1", "v2")}  # each backend its own certificate
    backends = [await TlsEcho(v, server_context(c)).start() for v, c in certs.items()]
    other = await TlsEcho("other", server_context(ca.issue_cert("other.example"))).start()
    port = free_port()
    (config_dir / "se.yaml").write_text(echo_service("echo", 8443, backends) + "---\n" +
                                        echo_service("other", 8443, [other]).replace("name: other", "name: other"))
    (config_dir / "gateway.yaml").write_text(gateway(port, f"""  - port: {{number: {port}, name: tls, protocol: TLS}}
    hosts: ['*']
    tls: {{mode: PASSTHROUGH}}
"""))
    (config_dir / "dr-vs.yaml").write_text(f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: echo
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: ['*.example']
  gateways: [gw]
  tls:
  - match: [{{port: {port}, sniHosts: [other.example]}}]
    route: [{{destination: {{host: other, port: {{number: 8443}}}}}}]
  - match: [{{port: {port}, sniHosts: ['*.example']}}]
    route:
    - {{destination: {{host: echo, subset: v1, port: {{number: 8443}}}}, weight: 80}}
    - {{destination: {{host: echo, subset: v2, port: {{number: 8443}}}}, weight: 20}}
""")
    proxy = start(config_dir)
    try:
        context = client_context(ca)
        ders = {v: ssl.PEM_cert_to_DER_cert(c.cert_chain_pems[0].bytes().decode()) for v, c in certs.items()}
        n = 1000
        seen: Counter[str] = Counter()
        for _ in range(n):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                           server_hostname="echo.example")
            name = (await reader.readline()).decode().strip()
            assert peer_der(writer) == ders[name]  # the backend's own certificate: not terminated
            seen[name] += 1
            writer.close()
        lo, hi = binomial_interval(n, 0.2)
        assert seen["v1"] + seen["v2"] == n, seen
        assert lo <= seen["v2"] <= hi, (seen, (lo, hi))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="other.example")
        assert await reader.readline() == b"other\n"  # first matching tls route wins
        writer.close()
    finally:
        proxy.stop()
        for backend in [*backends, other]:
            await backend.close()


class TlsUpstream(Upstream):
    """The harness's HTTP upstream, served over TLS only."""

    context: ssl.SSLContext | None = None

    async def start(self) -> TlsUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self


def flagged(proxy: ProxyProcess, flag: str) -> float:
    total = 0.0
    for line in metrics(proxy).splitlines():
        if line.startswith("istio_requests_total{") and (f'response_flags="{flag}"' in line or
                                                         f'response_flags="{flag},' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_destination_rule_originates_tls_and_verifies_the_upstream(tmp_path: Path, ca: trustme.CA) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other_ca = trustme.CA()
    other_file = tmp_path / "other-ca.pem"
    other_ca.cert_pem.write_to_path(str(other_file))
    client_ca = trustme.CA()
    client_cert = client_ca.issue_cert("client.example")
    client_cert.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    (tmp_path / "client.crt").write_bytes(b"".join(b.bytes() for b in client_cert.cert_chain_pems))
    up = TlsUpstream("secure")
    up.context = server_context(ca.issue_cert("secure.example"))
    mutual = TlsUpstream("mutual")
    mutual.context = server_context(ca.issue_cert("mutual.example"), client_ca=client_ca)
    await up.start()
    await mutual.start()
    services = {"good": (up, f"{{mode: SIMPLE, caCertificates: {ca_file}, sni: secure.example, "
                             "subjectAltNames: [secure.example]}"),
                "wrongca": (up, f"{{mode: SIMPLE, caCertificates: {other_file}}}"),
                "wrongsan": (up, f"{{mode: SIMPLE, caCertificates: {ca_file}, subjectAltNames: [else.example]}}"),
                "skipverify": (up, "{mode: SIMPLE, insecureSkipVerify: true}"),
                "mutual": (mutual, f"{{mode: MUTUAL, caCertificates: {ca_file}, clientCertificate: "
                                   f"{tmp_path / 'client.crt'}, privateKey: {tmp_path / 'client.key'}}}"),
                "nocert": (mutual, f"{{mode: SIMPLE, caCertificates: {ca_file}}}"),
                "plain": (up, "{mode: DISABLE}")}
    docs = []
    for name, (backend, tls) in services.items():
        docs.append(service_entry(name, 9443, [(backend.port, "v1")]))
        docs.append(f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {name}
  trafficPolicy:
    tls: {tls}
""")
    (config_dir / "services.yaml").write_text("---\n".join(docs))
    proxy = ProxyProcess(config_dir, ["--access-log", "off", "--role", "mesh"]).start()
    try:
        async def get(name: str) -> int:
            client = Client(proxy.mesh_port)
            try:
                return (await client.request("GET", f"http://{name}:9443/x", f"{name}:9443")).status
            finally:
                await client.close()

        assert await get("good") == 200
        assert await get("skipverify") == 200
        assert await get("mutual") == 200
        plain_before = up.requests
        for name in ("wrongca", "wrongsan", "nocert", "plain"):
            assert await get(name) == 503, name
        assert up.requests == plain_before  # the DISABLE request reached the TLS port without TLS: no request
        # an untrusted certificate fails the handshake: a failed connect, 503 UF (after the connect retries)
        assert flagged(proxy, "UF") == 2
        failures = {line.split("{", 1)[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
                    for line in metrics(proxy).splitlines()
                    if line.startswith("shiftproxy_tls_handshake_failures_total")}
        # each of the two: the first connect and its two retries
        assert failures == {'reason="certificate_verify_failed",side="upstream"': 3.0,
                            'reason="subject_alt_name",side="upstream"': 3.0}, failures
    finally:
        proxy.stop()
        await up.close()
        await mutual.close()


async def test_rotated_certificate_serves_new_handshakes_and_keeps_open_connections(
        config_dir: Path, tmp_path: Path, ca: trustme.CA) -> None:
    creds = tmp_path / "credentials"
    old = write_credential(creds, "bookinfo-cert", ca, HOST)
    port = free_port()
    (config_dir / "gateway.yaml").write_text(gateway(port, https_server(
        port, HOST, "{mode: SIMPLE, credentialName: bookinfo-cert}")))
    (config_dir / "vs.yaml").write_text(reviews_vs(weights=(100, 0)))
    proxy = start(config_dir, creds)
    context = client_context(ca)

    def der(cert: trustme.LeafCert) -> bytes:
        return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())

    async def handshake() -> tuple[bytes, int]:
        client = await tls_client(port, context, HOST)
        assert client.writer is not None
        seen = peer_der(client.writer)
        status = (await client.request("GET", "/reviews/0", HOST)).status
        await client.close()
        return seen, status

    try:
        open_client = await tls_client(port, context, HOST)
        assert (await open_client.request("GET", "/reviews/0", HOST)).status == 200
        assert (await handshake()) == (der(old), 200)
        new = write_credential(creds, "bookinfo-cert", ca, HOST)
        statuses: Counter[int] = Counter()
        for _ in range(400):  # bounded: the files are checked every second
            seen, status = await handshake()
            statuses[status] += 1
            if seen == der(new):
                break
            assert seen == der(old)
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"new handshakes still get the old certificate; log:\n{proxy.log()[-2000:]}")
        assert set(statuses) == {200}, statuses
        # the connection opened before the rotation is untouched
        assert (await open_client.request("GET", "/reviews/0", HOST)).status == 200
        await open_client.close()

        # a broken certificate file keeps the previous certificate, and is reported
        (creds / "bookinfo-cert" / "tls.crt").write_text("not a certificate")
        for _ in range(400):
            error = proxy.config_dump().get("last_reload_error")
            if error:
                break
            await asyncio.sleep(0.05)
        assert error and "still using the previous certificate" in " ".join(error["errors"]), error
        assert (await handshake()) == (der(new), 200)
    finally:
        proxy.stop()


def write_mesh_certs(directory: Path, ca: trustme.CA, identity: str) -> Path:
    """A workload's mesh identity in Istio's file names."""
    directory.mkdir(parents=True)
    cert = ca.issue_cert(identity)
    (directory / "cert-chain.pem").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    ca.cert_pem.write_to_path(str(directory / "root-cert.pem"))
    return directory


async def test_istio_mutual_between_two_proxies(tmp_path: Path, reviews: dict[str, Upstream]) -> None:
    mesh_ca = trustme.CA()
    client_certs = write_mesh_certs(tmp_path / "client-mesh", mesh_ca, "productpage.mesh.example")
    server_certs = write_mesh_certs(tmp_path / "server-mesh", mesh_ca, "reviews.mesh.example")
    # the serving proxy: a MUTUAL server holding its mesh identity, in front of reviews v1
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    port = free_port()
    (server_dir / "reviews.yaml").write_text(service_entry("reviews", 9080, [(reviews["v1"].port, "v1")]))
    (server_dir / "gateway.yaml").write_text(gateway(port, https_server(
        port, "'*'", f"{{mode: MUTUAL, serverCertificate: {server_certs / 'cert-chain.pem'}, privateKey: "
                     f"{server_certs / 'key.pem'}, caCertificates: {server_certs / 'root-cert.pem'}}}")) + "---\n" +
        reviews_vs("'*'", (100, 0)).replace("subset: v1", "port: {number: 9080}").replace(
            "    - destination: {host: reviews, subset: v3}\n      weight: 0\n", ""))
    # the calling proxy: a sidecar whose DestinationRule asks for ISTIO_MUTUAL
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    (client_dir / "remote.yaml").write_text(service_entry("remote-reviews", 9080, [(port, "v1")]) + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: remote-reviews}
spec:
  host: remote-reviews
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, subjectAltNames: [reviews.mesh.example]}
""")
    server = start(server_dir)
    client_proxy = ProxyProcess(client_dir, ["--access-log", "off", "--role", "mesh", "--mesh-certs",
                                             str(client_certs)]).start()
    try:
        client = Client(client_proxy.mesh_port)
        resp = await client.request("GET", "http://remote-reviews:9080/reviews/0", "remote-reviews:9080")
        assert resp.status == 200 and resp.json()["version"] == "v1", resp
        await client.close()
        # a client outside the mesh (no workload certificate) is refused by the serving proxy
        outsider: Client | None = None
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            outsider = await tls_client(port, client_context(mesh_ca), "reviews.mesh.example")
            try:
                await outsider.request("GET", "/reviews/0", "reviews")
            finally:
                await outsider.close()
    finally:
        client_proxy.stop()
        server.stop()


def test_istio_mutual_without_mesh_certificates_is_refused_at_start(config_dir: Path) -> None:
    shutil.copy(BOOKINFO_NET / "destination-rule-all-mtls.yaml", config_dir / "destination-rule-all.yaml")
    proxy = ProxyProcess(config_dir, ["--access-log", "off"])
    try:
        with pytest.raises(RuntimeError) as info:
            proxy.start()
    finally:
        proxy.stop()
    assert proxy.proc is not None and proxy.proc.returncode == 1
    assert "destination-rule-all.yaml:" in str(info.value) and "--mesh-certs" in str(info.value)


class PlainEcho:
    """A plain TCP backend answering each connection with its name (tcp-echo-like)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> PlainEcho:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(self.name.encode() + b"\n")
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_tls_server_terminates_and_shifts_tcp_80_20(tmp_path: Path, ca: trustme.CA) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    creds = tmp_path / "credentials"
    write_credential(creds, "echo-cert", ca, "echo.example")
    backends = [await PlainEcho(v).start() for v in ("v1", "v2")]
    port = free_port()
    (config_dir / "echo.yaml").write_text(
        service_entry("tcp-echo", 9000, [(b.port, b.name) for b in backends], protocol="TCP", port_name="tcp") +
        gateway(port, f"""  - port: {{number: {port}, name: tls, protocol: TLS}}
    hosts: ['*']
    tls: {{mode: SIMPLE, credentialName: echo-cert}}
""").replace("apiVersion", "---\napiVersion", 1) + f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: tcp-echo}}
spec:
  host: tcp-echo
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo}}
spec:
  hosts: ['*']
  gateways: [gw]
  tcp:
  - match: [{{port: {port}}}]
    route:
    - {{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}, weight: 80}}
    - {{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v2}}, weight: 20}}
""")
    proxy = start(config_dir, creds, "--access-log", "json")
    try:
        context = client_context(ca)
        n = 1000
        seen: Counter[str] = Counter()
        clients = set()
        for _ in range(n):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                           server_hostname="echo.example")
            clients.add("{}:{}".format(*writer.get_extra_info("sockname")[:2]))
            seen[(await reader.readline()).decode().strip()] += 1
            writer.close()
        lo, hi = binomial_interval(n, 0.2)
        assert seen["v1"] + seen["v2"] == n, seen
        assert lo <= seen["v2"] <= hi, (seen, (lo, hi))
        # each connection's line names its client, which the TLS transport no longer knows at the close
        logged: set[str] = set()
        for _ in range(100):  # the access log is written in batches, at least every 0.5 s
            logged = {json.loads(line)["downstream_remote_address"] for line in proxy.log().splitlines()
                      if line.startswith("{") and '"protocol": "tcp"' in line}
            if logged >= clients:
                break
            await asyncio.sleep(0.1)
        assert clients <= logged, sorted(clients - logged)[:5]
    finally:
        proxy.stop()
        for backend in backends:
            await backend.close()


async def test_sidecar_passes_a_tls_service_port_through_by_sni(tmp_path: Path, ca: trustme.CA) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    backends = {v: await TlsEcho(v, server_context(ca.issue_cert(f"{v}.echo.example"))).start()
                for v in ("v1", "v2")}
    port = free_port()
    (config_dir / "echo.yaml").write_text(
        service_entry("echo.example", port, [(b.port, v) for v, b in backends.items()], protocol="TLS",
                      port_name="tls").replace("name: echo.example", "name: echo") + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo.example
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo.example]
  tls:
  - match: [{sniHosts: [echo.example]}]
    route:
    - {destination: {host: echo.example, subset: v2}}
""")
    proxy = ProxyProcess(config_dir, ["--access-log", "json", "--role", "mesh"]).start()
    try:
        context = client_context(ca)
        context.check_hostname = False  # the backends' certificates name v1./v2.echo.example
        for server_name, expected in (("echo.example", {"v2"}), ("unmatched.example", {"v1", "v2"})):
            seen: Counter[str] = Counter()
            for _ in range(60):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                               server_hostname=server_name)
                seen[(await reader.readline()).decode().strip()] += 1
                writer.close()
            # the tls rule sends every connection to v2; no rule: the service's default route, every version
            # (each version is missed by 60 connections with probability 2 * 2^-60)
            assert set(seen) == expected, (server_name, seen)
        for _ in range(100):  # the access log is written in batches, at least every 0.5 s
            if '"requested_server_name": "unmatched.example"' in proxy.log():
                break
            await asyncio.sleep(0.1)
        assert proxy.log().count('"requested_server_name": "echo.example"') == 60
    finally:
        proxy.stop()
        for backend in backends.values():
            await backend.close()


async def test_tcp_service_originates_tls_too(tmp_path: Path, ca: trustme.CA) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    backend = await TlsEcho("secure", server_context(ca.issue_cert("db.example"))).start()
    ports = {"trusted": free_port(), "untrusted": free_port()}
    docs = []
    for name, port in ports.items():
        docs.append(service_entry(name, port, [(backend.port, "v1")], protocol="TCP", port_name="tcp"))
        docs.append(f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {name}
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca_file if name == "trusted" else ca_file.with_name("other.pem")}}}
""")
    trustme.CA().cert_pem.write_to_path(str(ca_file.with_name("other.pem")))
    (config_dir / "tcp.yaml").write_text("---\n".join(docs))
    proxy = ProxyProcess(config_dir, ["--access-log", "off", "--role", "mesh"]).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["trusted"])
        assert await asyncio.wait_for(reader.readline(), 10) == b"secure\n"  # plaintext in, TLS to the backend
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["untrusted"])
        assert await asyncio.wait_for(reader.read(100), 10) == b""  # closed (UF): never relayed in plaintext
        writer.close()
    finally:
        proxy.stop()
        await backend.close()
