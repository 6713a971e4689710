"""Forwarding through the proxy: keep-alive pooling, pipelining, streamed bodies, HEAD/1xx/204/304,
100-continue, Upgrade tunnels, and the headers the proxy adds or removes."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, generate_latest

from proxy.accesslog import AccessLog
from proxy.admin.metrics import IstioCollector
from tests.l7.conftest import (
    Proxy,
    UpstreamServer,
    build_request,
    cluster,
    eventually,
    simple_snapshot,
)

StartProxy = Callable[..., Awaitable[Proxy]]
StartUpstream = Callable[[str], Awaitable[UpstreamServer]]


async def test_sequential_requests_reuse_one_upstream_connection(start_proxy: StartProxy,
                                                                 upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    for i in range(5):
        response = await client.request(path=f"/n/{i}")
        assert response.status == 200
        assert response.json()["path"] == f"/n/{i}"
    # and from a second downstream connection, after the first is gone
    client.close()
    assert (await proxy.request(path="/again")).status == 200
    assert v1.accepted == 1
    assert proxy.state.metrics.pool_misses == 1
    assert proxy.state.metrics.pool_hits == 5
    assert proxy.count(200) == 6


async def test_stale_pooled_connection_is_retried_on_a_fresh_one(start_proxy: StartProxy,
                                                                 upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    assert (await client.request(path="/first")).status == 200
    # the upstream closes its idle keep-alive connection; the proxy only notices on the next write
    v1.close_idle_connections()
    response = await client.request(method="POST", path="/second", body=b"payload")
    assert response.status == 200
    assert response.json()["path"] == "/second"
    assert response.json()["body_length"] == len(b"payload")
    assert v1.accepted == 2
    assert [r.target for r in v1.requests] == ["/first", "/second"]


async def test_reused_connection_closed_before_the_response_is_retried_once(
        start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    assert (await client.request(path="/stale")).status == 200  # first on its connection: answered
    # the second goes out on the pooled connection, which closes without answering: the request is
    # sent again on a fresh connection, where it is the first one
    response = await client.request(method="POST", path="/stale", body=b"x" * 1000)
    assert response.status == 200
    assert response.json()["body_length"] == 1000
    assert [(r.connection, r.sequence) for r in v1.requests] == [(1, 1), (1, 2), (2, 1)]
    assert v1.requests[2].body == b"x" * 1000
    assert (proxy.state.metrics.pool_hits, proxy.state.metrics.pool_misses) == (1, 2)


async def test_request_too_big_to_replay_is_not_retried(start_proxy: StartProxy,
                                                        upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    assert (await client.request(path="/stale")).status == 200
    response = await client.request(method="POST", path="/stale", body=b"x" * (200 * 1024))
    assert response.status == 503
    assert proxy.count(503, "UC") == 1
    assert v1.accepted == 1


async def test_stale_connection_noticed_before_reuse_is_not_used(start_proxy: StartProxy,
                                                                 upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    assert (await proxy.request(path="/first")).status == 200
    v1.close_idle_connections()
    pool = proxy.state.cluster_manager.pools[("127.0.0.1", v1.port)]
    await eventually(lambda: len(pool) == 0)  # the close reached the proxy: dropped from the pool
    assert (await proxy.request(path="/second")).status == 200
    assert proxy.state.metrics.pool_misses == 2


async def test_max_requests_per_connection(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1, max_requests_per_connection=2), 100)))
    client = await proxy.connect()
    for _ in range(5):
        assert (await client.request()).status == 200
    assert v1.accepted == 3
    assert [r.connection for r in v1.requests] == [1, 1, 2, 2, 3]


async def test_pipelined_requests_are_answered_in_order(start_proxy: StartProxy,
                                                        upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    # the first is slow, so the others arrive while it is in flight
    await client.send(build_request(path="/sleep/100") + build_request("POST", "/two", body=b"2" * 10)
                      + build_request(path="/three"))
    paths = [(await client.response()).json()["path"] for _ in range(3)]
    assert paths == ["/sleep/100", "/two", "/three"]
    assert [r.target for r in v1.requests] == ["/sleep/100", "/two", "/three"]
    assert v1.requests[1].body == b"2" * 10


async def test_chunked_request_and_response_are_streamed(start_proxy: StartProxy,
                                                         upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(b"POST /echo HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\n")
    # the head and first chunk come back before the request body is finished: nothing waits for it whole
    async with asyncio.timeout(5):
        head = await client.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding: chunked" in head.lower()
        assert await client.reader.readuntil(b"hello\r\n") == b"5\r\nhello\r\n"
    await client.send(b"6\r\n world\r\n0\r\n\r\n")
    async with asyncio.timeout(5):
        assert await client.reader.readuntil(b"0\r\n\r\n") == b"6\r\n world\r\n0\r\n\r\n"
    assert v1.requests[0].header("transfer-encoding") == "chunked"
    # the connection is still usable
    assert (await client.request(path="/after")).json()["path"] == "/after"


async def test_chunked_upstream_response_reaches_client_whole(start_proxy: StartProxy,
                                                              upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    response = await proxy.request(path="/chunked/50/1000")
    assert response.status == 200
    assert response.header("transfer-encoding") == "chunked"
    assert response.body == b"x" * 50_000
    assert proxy.count(200) == 1
    (stats,) = proxy.state.metrics.http.values()
    assert stats.response_bytes.total == 50_000


async def test_response_until_eof_is_rechunked_and_connection_kept(start_proxy: StartProxy,
                                                                   upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    response = await client.request(path="/eof")
    assert response.body == b"body until eof"
    assert response.header("transfer-encoding") == "chunked"
    assert (await client.request(path="/next")).status == 200


async def test_http10_client_gets_close_delimited_body(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    response = await client.request(path="/chunked/3/10", version="HTTP/1.0")
    assert response.body == b"x" * 30
    assert response.header("transfer-encoding") is None
    assert await client.at_eof()
    # the upstream was still spoken to in HTTP/1.1
    assert v1.requests[0].version == "HTTP/1.1"


async def test_http10_keep_alive(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    for _ in range(2):
        response = await client.request(version="HTTP/1.0", headers=(("Connection", "keep-alive"),))
        assert response.status == 200
        assert response.header("connection") == "keep-alive"


async def test_expect_100_continue_is_answered_by_the_proxy(start_proxy: StartProxy,
                                                            upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(b"POST /upload HTTP/1.1\r\nHost: reviews\r\nContent-Length: 4\r\n"
                      b"Expect: 100-continue\r\n\r\n")
    async with asyncio.timeout(5):
        assert await client.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await client.send(b"data")
    response = await client.response()
    assert response.status == 200
    assert response.json()["body_length"] == 4
    assert v1.requests[0].header("expect") is None


async def test_head_response_has_no_body(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    response = await client.request("HEAD", "/thing")
    assert response.status == 200
    assert int(response.header("content-length") or 0) > 0  # the GET body's length, announced
    # the next response parses cleanly: no body bytes were left on the connection
    assert (await client.request(path="/next")).json()["path"] == "/next"
    assert v1.accepted == 1


async def test_no_body_statuses_and_interim_responses(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    no_content = await client.request(path="/status/204")
    assert (no_content.status, no_content.body, no_content.header("content-length")) == (204, b"", None)
    not_modified = await client.request(path="/status/304")
    assert (not_modified.status, not_modified.body, not_modified.header("etag")) == (304, b"", '"x"')
    hinted = await client.request(path="/interim")
    assert (hinted.interim, hinted.status) == ([103], 200)
    assert (await client.request(path="/last")).json()["path"] == "/last"
    assert v1.accepted == 1


async def test_upgrade_becomes_a_tunnel(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    response = await client.request(path="/ws", headers=(("Connection", "Upgrade"), ("Upgrade", "websocket")))
    assert response.status == 101
    assert response.header("upgrade") == "websocket"
    for payload in (b"\x81\x05hello", b"raw bytes \x00\xff" * 1000):
        await client.send(payload)
        async with asyncio.timeout(5):
            assert await client.reader.readexactly(len(payload)) == payload
    client.writer.write_eof()  # half-close travels through; the upstream then closes its side
    assert await client.at_eof()
    await eventually(lambda: proxy.count(101) == 1)
    assert v1.requests[0].header("upgrade") == "websocket"
    assert v1.requests[0].header("connection") == "upgrade"


async def test_refused_upgrade_leaves_the_connection_usable(start_proxy: StartProxy,
                                                           upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    # the upstream ignores the upgrade and answers 200: the client's next request is read as usual, and
    # goes out on a new upstream connection (one that carried an upgrade attempt is never pooled)
    response = await client.request(path="/plain", headers=(("Connection", "Upgrade"), ("Upgrade", "websocket")))
    assert response.status == 200 and response.header("connection") is None
    assert (await client.request(path="/after")).status == 200
    assert [r.target for r in v1.requests] == ["/plain", "/after"]
    assert v1.accepted == 2


async def test_forwarded_headers_and_request_id(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.request()
    await client.request(headers=(("X-Forwarded-For", "10.1.2.3"), ("X-Request-Id", "given-id"),
                                  ("X-Forwarded-Proto", "https")))
    first, second = v1.requests
    assert first.header("x-forwarded-for") == "127.0.0.1"
    assert first.header("x-forwarded-proto") == "http"
    assert uuid.UUID(first.header("x-request-id") or "").version == 4
    assert first.header("host") == "reviews"
    assert second.header("x-forwarded-for") == "10.1.2.3, 127.0.0.1"
    # a gateway replaces an external request id (Envoy, use_remote_address: true)
    assert second.header("x-request-id") != "given-id"
    assert uuid.UUID(second.header("x-request-id") or "").version == 4
    assert second.header("x-forwarded-proto") == "http"


async def test_hop_by_hop_headers_are_not_forwarded(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    response = await proxy.request(headers=(
        ("Connection", "keep-alive, X-Private"), ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"), ("Trailer", "x-t"), ("X-Private", "secret"), ("Upgrade", "websocket"),
        ("X-Kept", "yes")))
    assert response.status == 200
    received = {name for name, _ in v1.requests[0].headers}
    assert received.isdisjoint({"connection", "keep-alive", "proxy-connection", "te", "trailer", "x-private",
                                "upgrade"})
    assert v1.requests[0].header("x-kept") == "yes"


async def test_hop_by_hop_response_headers_are_not_returned(start_proxy: StartProxy,
                                                            upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    response = await client.request(path="/close")
    # the upstream's `connection: close` concerns only the upstream connection
    assert response.status == 200
    assert response.header("connection") is None
    assert (await client.request(path="/after")).status == 200
    assert v1.accepted == 2


async def test_istio_metrics_and_access_log(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    stream = io.StringIO()
    proxy.state.access_log = AccessLog("json", stream)
    proxy.state.preserve_external_request_id = True
    client = await proxy.connect()
    await client.request(method="POST", path="/a?b=c", body=b"12345", headers=(("X-Request-Id", "rid-1"),))
    await client.request(host="nowhere")
    registry = CollectorRegistry()
    registry.register(IstioCollector(proxy.state.metrics))
    text = generate_latest(registry).decode()
    served = [line for line in text.splitlines() if line.startswith("istio_requests_total{")
              and 'response_code="200"' in line]
    assert len(served) == 1 and served[0].endswith(" 1.0")
    assert 'destination_version="v1"' in served[0] and 'response_flags="-"' in served[0]
    assert 'destination_service="reviews.default.svc.cluster.local"' in served[0]
    assert any('response_code="404"' in line and 'response_flags="NR"' in line for line in text.splitlines())
    proxy.state.access_log.flush()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["method"] == "POST" and first["path"] == "/a?b=c" and first["response_code"] == 200
    assert first["bytes_received"] == 5 and first["request_id"] == "rid-1"
    assert first["upstream_host"] == f"127.0.0.1:{v1.port}"
    assert first["upstream_cluster"] == "outbound|9080|v1|reviews.default.svc.cluster.local"
    assert (second["response_code"], second["response_flags"], second["authority"]) == (404, "NR", "nowhere")


async def test_status_line_has_the_standard_reason_phrase(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")  # answers /status/<code> with the reason phrase "Whatever"
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(b"GET /status/202 HTTP/1.1\r\nHost: reviews\r\n\r\n")
    assert await asyncio.wait_for(client.reader.readline(), 5) == b"HTTP/1.1 202 Accepted\r\n"
