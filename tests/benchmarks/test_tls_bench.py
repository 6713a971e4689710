"""The TLS side of the benchmark: the HTTPS server in the bench YAML (accepted by shiftproxy's own config
compiler), its translations for Envoy, nginx and HAProxy with the same certificate files, and the full-handshake
load client against a real TLS server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from benchmarks import loadgen
from benchmarks.envoy_config import DOWNSTREAM_TLS_TYPE, istio_to_envoy, load_objects
from benchmarks.haproxy_config import envoy_to_haproxy
from benchmarks.istio_config import BackendPorts, ListenerPorts, TlsFiles, bench_istio_yaml
from benchmarks.measure import Context, build_metrics, record_tls_cost, tls_handshake_load
from benchmarks.procs import plan_pinning
from benchmarks.targets import NginxTarget, Target
from benchmarks.tls_setup import SERVER_NAME, make_tls_files
from proxy.config.compile import CompileOptions, build_snapshot

LISTENERS = ListenerPorts(18001, 18002, 18003, 18004)
BACKENDS = BackendPorts(18011, 18012, 18013, 18014, 18015)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def config_dir(tmp_path: Path, tls: TlsFiles) -> Path:
    directory = tmp_path / "istio"
    directory.mkdir()
    (directory / "bench.yaml").write_text(bench_istio_yaml(LISTENERS, BACKENDS, tls=tls))
    return directory


def envoy_listener(bootstrap: dict[str, Any], port: int) -> dict[str, Any]:
    (found,) = [li for li in bootstrap["static_resources"]["listeners"]
                if li["address"]["socket_address"]["port_value"] == port]
    return found


def test_certificate_names_the_bench_host_and_keeps_its_key_type(tmp_path: Path) -> None:
    for key_type, key_class in (("ecdsa", ec.EllipticCurvePublicKey), ("rsa", rsa.RSAPublicKey)):
        files = make_tls_files(tmp_path / key_type, key_type)
        cert = x509.load_pem_x509_certificate(Path(files.cert).read_bytes())
        assert isinstance(cert.public_key(), key_class)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert SERVER_NAME in names.get_values_for_type(x509.DNSName)
        combined = Path(files.combined).read_text()
        assert "PRIVATE KEY" in combined and "CERTIFICATE" in combined
        if key_type == "rsa":
            assert cert.public_key().key_size == 2048  # type: ignore[union-attr]


def test_without_certificate_there_is_no_https_server(tmp_path: Path) -> None:
    text = bench_istio_yaml(LISTENERS, BACKENDS)
    assert "HTTPS" not in text and "tls:" not in text


def test_shiftproxy_compiles_the_https_server_with_the_http_route(config_dir: Path) -> None:
    snapshot, _ = build_snapshot([str(config_dir)], CompileOptions(mesh=False, bind="127.0.0.1"))
    by_port = {li.port: li for li in snapshot.http_listeners.values()}
    https, http = by_port[LISTENERS.https], by_port[LISTENERS.http]
    assert https.tls is not None and http.tls is None
    assert https.tls.kind == "tls"  # SIMPLE: no client certificate asked for
    # the same weighted destinations behind both listeners
    assert repr(https.route_table).replace(str(LISTENERS.https), "P") == \
        repr(http.route_table).replace(str(LISTENERS.http), "P")


def test_envoy_terminates_tls_with_the_same_files_and_routes(config_dir: Path, tls: TlsFiles) -> None:
    config = istio_to_envoy(load_objects([config_dir]), admin_port=19900)
    assert config.warnings == ()
    https = envoy_listener(config.bootstrap, LISTENERS.https)
    (chain,) = https["filter_chains"]
    socket = chain["transport_socket"]
    assert socket["typed_config"]["@type"] == DOWNSTREAM_TLS_TYPE
    common = socket["typed_config"]["common_tls_context"]
    assert common["tls_certificates"] == [{"certificate_chain": {"filename": tls.cert},
                                           "private_key": {"filename": tls.key}}]
    assert common["alpn_protocols"] == ["http/1.1"]
    assert "tls_params" not in common  # Envoy's defaults: TLS 1.2–1.3, as shiftproxy's
    http = envoy_listener(config.bootstrap, LISTENERS.http)
    assert "transport_socket" not in http["filter_chains"][0]

    def routes(listener: dict[str, Any]) -> Any:
        return listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert routes(https) == routes(http)


def test_envoy_leaves_out_tls_it_does_not_translate(tmp_path: Path, tls: TlsFiles) -> None:
    text = bench_istio_yaml(LISTENERS, BACKENDS, tls=tls).replace("mode: SIMPLE", "mode: MUTUAL")
    (tmp_path / "bench.yaml").write_text(text)
    config = istio_to_envoy(load_objects([tmp_path]), admin_port=19900)
    ports = [li["address"]["socket_address"]["port_value"] for li in config.bootstrap["static_resources"]["listeners"]]
    assert LISTENERS.https not in ports
    assert any(f"gateway port {LISTENERS.https}" in w and "SIMPLE" in w for w in config.warnings)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_binds_tls_with_the_combined_pem(config_dir: Path, tls: TlsFiles, tmp_path: Path) -> None:
    bootstrap = istio_to_envoy(load_objects([config_dir]), admin_port=0).bootstrap
    cfg = envoy_to_haproxy(bootstrap, pidfile=str(tmp_path / "haproxy.pid"), access_log=False, nofile=20000,
                           pems={tls.cert: tls.combined})
    assert f"bind 127.0.0.1:{LISTENERS.https} ssl crt {tls.combined} alpn http/1.1\n" in cfg
    assert f"bind 127.0.0.1:{LISTENERS.http}\n" in cfg
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    done = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode(errors="replace")  # it loads the certificate and key
    # without a PEM for the certificate, the listener is left out rather than bound without TLS
    plain = envoy_to_haproxy(bootstrap, pidfile=str(tmp_path / "haproxy.pid"), access_log=False, nofile=20000)
    assert f":{LISTENERS.https}" not in plain.replace(f"# l{LISTENERS.https}:", "")


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_terminates_tls_with_the_same_files(tmp_path: Path, tls: TlsFiles) -> None:
    target = NginxTarget(LISTENERS, BACKENDS, tmp_path, plan_pinning(), 4096, False, (50, 50), (80, 20), tls)
    conf_path = tmp_path / "nginx-proxy" / "nginx.conf"
    conf = conf_path.read_text()
    assert target.https_port == LISTENERS.https
    assert f"listen 127.0.0.1:{LISTENERS.https} ssl" in conf
    assert f"ssl_certificate {tls.cert};" in conf and f"ssl_certificate_key {tls.key};" in conf
    assert conf.count("proxy_pass http://http_backend;") == 2  # the same upstream behind both listeners
    done = subprocess.run(["nginx", "-t", "-p", str(tmp_path / "nginx-proxy"), "-e", str(tmp_path / "err.log"),
                           "-c", str(conf_path)], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


@pytest.fixture
async def tls_server(tls: TlsFiles) -> AsyncIterator[tuple[int, list[bool]]]:
    """A TLS server answering 200 and closing, recording for each handshake whether it resumed a session."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    reused: list[bool] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reused.append(writer.get_extra_info("ssl_object").session_reused)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    yield server.sockets[0].getsockname()[1], reused
    server.close()
    await server.wait_closed()


async def test_handshake_client_makes_full_handshakes_only(tls_server: tuple[int, list[bool]]) -> None:
    port, reused = tls_server
    result = await loadgen.tls_handshake(port, conns=2, seconds=0.3, server_name=SERVER_NAME)
    assert result["errors"] == 0 and result["connections"] >= 2  # type: ignore[operator]
    assert result["resumed"] == 0
    assert result["versions"] == {"TLSv1.3": result["connections"]}
    assert len(reused) >= result["connections"] and not any(reused)  # type: ignore[operator]


async def test_resumption_probe_sees_a_server_that_resumes(tls_server: tuple[int, list[bool]]) -> None:
    port, reused = tls_server
    assert await asyncio.to_thread(loadgen.server_resumes, port, SERVER_NAME) is True
    assert reused == [False, True]


async def test_handshake_client_counts_failures_against_a_plain_server() -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")  # not TLS: the handshake must fail
        writer.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await loadgen.tls_handshake(port, conns=1, seconds=0.2, server_name=SERVER_NAME)
    finally:
        server.close()
        await server.wait_closed()
    assert result["connections"] == 0 and result["errors"] >= 1  # type: ignore[operator]


class _Listener(Target):
    """A target that is just a TLS port (no process to charge CPU to)."""

    name = "tls-server"
    is_proxy = False

    def __init__(self, port: int) -> None:
        super().__init__()
        self.http_port = self.tcp_port = self.bulk_port = 0
        self.https_port = port


@pytest.mark.parametrize("tickets", [True, False])
async def test_handshake_load_reports_rate_and_whether_wrk_could_resume(tls: TlsFiles, tickets: bool) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    if not tickets:
        context.num_tickets = 0  # TLS 1.3 without tickets: nothing to resume

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    target = _Listener(server.sockets[0].getsockname()[1])
    ctx = Context(0.5, plan_pinning(), False)
    try:
        values = await asyncio.to_thread(tls_handshake_load, target, ctx)  # the load client is a subprocess
    finally:
        server.close()
        await server.wait_closed()
    assert values["tls_handshake_rate"] > 0 and values["tls_handshake_client_cpu"] > 0
    assert "tls_handshake_cpu" not in values  # not a proxy: no process to charge
    problems = ctx.problems.get(("tls_handshake", target.name), [])
    if tickets:
        assert problems == []
    else:
        assert len(problems) == 1 and "refuses session resumption" in problems[0]
    keys = {m.key for m in build_metrics(10, 10, True)}
    assert {"tls_handshake_rate", "tls_handshake_cpu", "https_c50_rps", "https_c50_cpu", "https_close_rps"} <= keys


def test_tls_cost_is_https_minus_http_cpu_round_by_round() -> None:
    ctx = Context(1.0, plan_pinning(), False)
    target = _Listener(1)
    ctx.samples[("http_c50_cpu", target.name)] = [20.0, 22.0, 30.0]
    ctx.samples[("https_c50_cpu", target.name)] = [27.0, 31.0, 35.0]
    record_tls_cost(ctx, target)
    assert ctx.samples[("tls_cost_cpu", target.name)] == [7.0, 9.0, 5.0]
    other = _Listener(2)
    other.name = "one-round-failed"
    ctx.samples[("http_c50_cpu", other.name)] = [20.0, 22.0]
    ctx.samples[("https_c50_cpu", other.name)] = [27.0]
    record_tls_cost(ctx, other)
    assert ("tls_cost_cpu", other.name) not in ctx.samples
    # one failure in each load: as many samples, but from different rounds
    ctx.samples[("https_c50_cpu", other.name)] = [27.0, 31.0]
    ctx.problems[("https_c50", other.name)].append("failed: wrk exited 1")
    record_tls_cost(ctx, other)
    assert ("tls_cost_cpu", other.name) not in ctx.samples
