"""Hostile input against the real proxy process, one test per hole: exact bytes in one write, a backend
that records every byte it receives, and the Istio YAML of an edge gateway whose `/admin` prefix is
answered 403 by a directResponse rule (everything else routed to the backend).

What must hold: the backend never receives `/admin...`; no client ever gets another client's response;
the proxy's answers are of Envoy's class (403, 400, 431, 426, or a tunnel after a 101).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ProxyProcess
from tests.e2e.security_harness import RawClient, RecordingBackend, edge_config, free_port, one_shot

SMUGGLE = (b"GET /public/chat HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
           b"GET /admin/x HTTP/1.1\r\nHost: web\r\n\r\n")


@pytest.fixture(scope="module")
def backend() -> Iterator[RecordingBackend]:
    server = RecordingBackend()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, backend: RecordingBackend) -> Iterator[ProxyProcess]:
    config_dir = tmp_path_factory.mktemp("edge") / "config"
    config_dir.mkdir()
    port = free_port()
    edge_config(config_dir, backend.port, port)
    proxy = ProxyProcess(config_dir, ["--access-log", "off"])
    proxy.gateway_port = port  # type: ignore[attr-defined]
    proxy.start()
    yield proxy
    proxy.stop()


def gw(proxy: ProxyProcess) -> int:
    return proxy.gateway_port  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(autouse=True)
def admin_never_reached(backend: RecordingBackend) -> Iterator[None]:
    """Every test here: whatever it sent, the backend received no `/admin` target during it."""
    mark = backend.mark()
    requests = len(backend.paths())
    yield
    assert not any(b"/admin" in data for data in backend.received_since(mark))
    assert not any(p.startswith("/admin") for p in backend.paths()[requests:])


def assert_admin_never_reached(backend: RecordingBackend) -> None:
    assert b"/admin" not in backend.all_bytes()
    assert not any(p.startswith("/admin") for p in backend.paths())


# 1. upgrade smuggling and the cross-client response leak ---------------------------------------------


def test_bytes_after_a_refused_upgrade_are_routed_as_the_next_request(gateway: ProxyProcess,
                                                                      backend: RecordingBackend) -> None:
    first, second = one_shot(gw(gateway), SMUGGLE, responses=2)
    # the backend ignored the upgrade (200, not 101): the smuggled request is read by the proxy itself
    # and meets the /admin rule, as a pipelined request would
    assert first.status == 200 and first.json()["path"] == "/public/chat"
    assert second.status == 403 and second.body == b"admin is internal"
    assert_admin_never_reached(backend)


def test_no_client_gets_another_clients_response(gateway: ProxyProcess, backend: RecordingBackend) -> None:
    rounds = 25
    for i in range(rounds):
        attacker = RawClient(gw(gateway))
        attacker.send(SMUGGLE)
        if i % 2:  # half the rounds the attacker leaves at once, half it reads its answers
            attacker.close()
        else:
            assert [attacker.response().status for _ in range(2)] == [200, 403]
            attacker.close()
        victim = RawClient(gw(gateway))
        victim.send(f"GET /public/victim-{i} HTTP/1.1\r\nHost: web\r\n\r\n".encode())
        response = victim.response()
        victim.close()
        assert response.status == 200 and response.json()["path"] == f"/public/victim-{i}", (i, response)
    assert_admin_never_reached(backend)


def test_websocket_is_tunnelled_after_the_101_with_the_bytes_sent_early(gateway: ProxyProcess,
                                                                         backend: RecordingBackend) -> None:
    client = RawClient(gw(gateway))
    try:
        client.send(b"GET /ws/echo HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                    b"early-bytes")
        response = client.response()
        assert response.status == 101 and response.headers["upgrade"] == "websocket"
        assert client.read_raw(11) == b"early-bytes"  # held until the 101, then sent and echoed
        client.send(b"GET /any/in-tunnel")  # past the 101 it is the backend's protocol, not HTTP
        assert client.read_raw(18) == b"GET /any/in-tunnel"
    finally:
        client.close()


# 2. upgrade tokens: h2c stripped, others refused --------------------------------------------------------


def test_h2c_upgrade_is_stripped_and_forwarded_as_plain_http(gateway: ProxyProcess, backend: RecordingBackend) -> None:
    before = len(backend.paths())
    first, second = one_shot(gw(gateway), (
        b"GET /ws/h2c HTTP/1.1\r\nHost: web\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        b"GET /admin/x HTTP/1.1\r\nHost: web\r\n\r\n"), responses=2)
    # the backend switches for any upgrade on /ws...: it never saw one, so it answered 200
    assert first.status == 200
    received = first.json()["headers"]
    assert not {"upgrade", "http2-settings", "connection"} & set(received), received
    assert second.status == 403
    assert backend.paths()[before:] == ["/ws/h2c"]
    assert_admin_never_reached(backend)


@pytest.mark.parametrize("token", ["foo", "HTTP/2.0", "TLS/1.2"])
def test_other_upgrade_tokens_get_403_and_the_connection_closes(gateway: ProxyProcess, backend: RecordingBackend,
                                                               token: str) -> None:
    before = len(backend.all_bytes())
    client = RawClient(gw(gateway))
    try:
        client.send(f"GET /ws/x HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: {token}\r\n\r\n"
                    "GET /admin/x HTTP/1.1\r\nHost: web\r\n\r\n".encode())
        response = client.response()
        assert response.status == 403 and response.body == b""  # Envoy: upgrade_failed, no body
        assert response.headers.get("connection") == "close"
        assert client.at_eof() and client.buf == b""
    finally:
        client.close()
    assert len(backend.all_bytes()) == before  # nothing of it went upstream
    assert_admin_never_reached(backend)


# 3. trailers and heads bounded ---------------------------------------------------------------------------


def test_trailer_flood_gets_431(gateway: ProxyProcess, backend: RecordingBackend) -> None:
    client = RawClient(gw(gateway))
    try:
        try:  # the proxy answers after ~100 trailers and stops reading: the write may be cut short
            client.send(b"POST /public/upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"0\r\n" + b"a:\r\n" * 200_000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert client.response().status == 431
    finally:
        client.close()


def test_one_endless_trailer_field_gets_431(gateway: ProxyProcess) -> None:
    client = RawClient(gw(gateway))
    try:
        try:
            client.send(b"POST /public/upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"0\r\nx-long: " + b"v" * (4 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert client.response().status == 431
    finally:
        client.close()


def test_trailers_within_the_limits_pass(gateway: ProxyProcess) -> None:
    [response] = one_shot(gw(gateway), b"POST /public/upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n"
                          b"\r\n3\r\nabc\r\n0\r\n" + b"x-t: 1\r\n" * 100 + b"\r\n")
    assert response.status == 200 and response.json()["path"] == "/public/upload"


@pytest.mark.parametrize(("data", "status"), [
    (b"GET /public HTTP/1.1\r\nHost: web\r\n" + b"x-h: 1\r\n" * 101 + b"\r\n", 431),
    (b"GET /public HTTP/1.1\r\nHost: web\r\n" + b"x-h: 1\r\n" * 99 + b"\r\n", 200),
    (b"GET /public HTTP/1.1\r\nHost: web\r\nx-big: " + b"v" * (61 * 1024) + b"\r\n\r\n", 431),
])
def test_head_limits(gateway: ProxyProcess, data: bytes, status: int) -> None:
    [response] = one_shot(gw(gateway), data)
    assert response.status == status


# 4. request line and Host --------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "status"), [
    (b"GET * HTTP/1.1\r\nHost: web\r\n\r\n", 400),
    (b"GET http:///admin HTTP/1.1\r\nHost: web\r\n\r\n", 400),
    (b"GET http://user@web/admin HTTP/1.1\r\nHost: web\r\n\r\n", 400),
    (b"GET http://user:pw@web/public HTTP/1.1\r\nHost: web\r\n\r\n", 400),
    (b"GET /public HTTP/1.1\r\nHost: we b\r\n\r\n", 400),
    (b"GET /public HTTP/1.1\r\nHost: web/admin\r\n\r\n", 400),
    (b"GET /public HTTP/1.1\r\nHost: web\r\nHost: other\r\n\r\n", 400),
    (b"POST /public HTTP/1.0\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /public HTTP/2.0\r\nHost: web\r\n\r\n", 505),
    (b"GET http://web/public HTTP/1.1\r\nHost: web\r\n\r\n", 200),
])
def test_request_line_and_host(gateway: ProxyProcess, backend: RecordingBackend, data: bytes, status: int) -> None:
    [response] = one_shot(gw(gateway), data)
    assert response.status == status


def test_http09_is_answered_at_once(gateway: ProxyProcess) -> None:
    # no blank line follows an HTTP/0.9 request: the answer must not wait for the header timeout (60 s);
    # the client's read timeout (10 s) fails the test if it does
    [response] = one_shot(gw(gateway), b"GET /admin\r\n")
    assert response.status == 426


# 5. edge headers -----------------------------------------------------------------------------------------


def test_gateway_edge_headers(gateway: ProxyProcess) -> None:
    [response] = one_shot(gw(gateway), b"GET /public/h HTTP/1.1\r\nHost: web\r\nX-Request-Id: chosen-by-client\r\n"
                          b"X-Forwarded-For: 10.9.9.9\r\nX-Envoy-Retry-On: 5xx\r\nx-envoy-internal: true\r\n"
                          b"X-Envoy-Upstream-Rq-Timeout-Ms: 1\r\nx-kept: 1\r\n\r\n")
    headers = response.json()["headers"]
    # none of the client's x-envoy-* arrive; the proxy's own attempt count does (Istio turns it on)
    assert {h: v for h, v in headers.items() if h.startswith("x-envoy-")} == {"x-envoy-attempt-count": "1"}, headers
    assert headers["x-request-id"] != "chosen-by-client"
    assert headers["x-forwarded-for"] == "10.9.9.9, 127.0.0.1"
    assert headers["x-kept"] == "1" and headers["x-route"] == "public"


def test_sidecar_passes_edge_headers_through(gateway: ProxyProcess) -> None:
    [response] = one_shot(gateway.mesh_port, b"GET /h HTTP/1.1\r\nHost: web\r\nX-Request-Id: from-app\r\n"
                          b"X-Forwarded-For: 10.9.9.9\r\nX-Envoy-Retry-On: 5xx\r\n\r\n")
    headers = response.json()["headers"]
    assert headers["x-request-id"] == "from-app"
    assert headers["x-forwarded-for"] == "10.9.9.9"
    assert headers["x-envoy-retry-on"] == "5xx"


def test_preserve_external_request_id(tmp_path: Path, backend: RecordingBackend) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    port = free_port()
    edge_config(config_dir, backend.port, port)
    proxy = ProxyProcess(config_dir, ["--access-log", "off", "--preserve-external-request-id"]).start()
    try:
        [response] = one_shot(port, b"GET /public/h HTTP/1.1\r\nHost: web\r\nX-Request-Id: kept-id\r\n\r\n")
        assert response.json()["headers"]["x-request-id"] == "kept-id"
    finally:
        proxy.stop()


def test_connection_refused_after_close_is_clean(gateway: ProxyProcess) -> None:
    # the proxy is still serving after everything above
    with socket.create_connection(("127.0.0.1", gw(gateway)), timeout=5):
        pass
    [response] = one_shot(gw(gateway), b"GET /public/last HTTP/1.1\r\nHost: web\r\n\r\n")
    assert response.status == 200
