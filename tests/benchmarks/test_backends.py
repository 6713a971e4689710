"""Benchmark backends and load clients against each other on real loopback sockets (short, bounded runs)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable

import pytest

from benchmarks import loadgen
from benchmarks.backend import EchoBackend, HttpBackend, SinkBackend
from tests.paths import ROOT


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Callable[[], asyncio.Protocol]], asyncio.Future[int]]]:
    servers: list[asyncio.Server] = []

    async def start(factory: Callable[[], asyncio.Protocol]) -> int:
        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_http_weight_client_counts_backend_versions(serve) -> None:  # noqa: ANN001
    port = await serve(lambda: HttpBackend("v2"))

    assert await loadgen.weights_http(port, 21) == {"counts": {"v2": 21}, "total": 21}


async def test_http_backend_honours_connection_close(serve) -> None:  # noqa: ANN001
    port = await serve(lambda: HttpBackend("v1"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

    response = await asyncio.wait_for(reader.read(), 5)  # read() returns only at EOF
    writer.close()
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"\r\n\r\nv1\n")
    assert b"Connection: close" in response


async def test_tcp_weight_client_uses_the_version_probe(serve) -> None:  # noqa: ANN001
    port = await serve(lambda: EchoBackend("v1"))

    assert await loadgen.weights_tcp(port, 40, parallel=8) == {"counts": {"v1": 40}, "total": 40}


async def test_pingpong_round_trips_through_echo(serve) -> None:  # noqa: ANN001
    port = await serve(lambda: EchoBackend("v1"))

    result = await loadgen.pingpong(port, conns=3, size=64, seconds=0.2)
    assert result["round_trips"] > 0
    assert result["errors"] == 0


async def test_bulk_sender_gets_the_sink_byte_count(serve) -> None:  # noqa: ANN001
    sinks: list[SinkBackend] = []

    def factory() -> SinkBackend:
        sinks.append(SinkBackend())
        return sinks[-1]

    port = await serve(factory)
    result = await loadgen.bulk(port, seconds=0.1)
    (sink,) = sinks
    assert result["bytes"] == sink.received > 0


class _Resetter(asyncio.Protocol):
    """Accepts, then aborts: what a broken proxy does to the load client."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


async def test_bulk_sender_fails_fast_when_the_peer_resets(serve) -> None:  # noqa: ANN001
    port = await serve(_Resetter)
    # As the harness runs it: its own process, on uvloop, where writes to a reset socket neither raise
    # nor pause, so a sender that ignores the closed transport would spin forever.
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.loadgen", "bulk", "--port", str(port), "--seconds", "0.2",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        _, stderr = await asyncio.wait_for(client.communicate(), 20)
    finally:
        if client.returncode is None:
            client.kill()
            await client.wait()
    assert client.returncode != 0
    assert b"ConnectionError" in stderr or b"ConnectionResetError" in stderr


async def test_floor_relays_keep_alive_requests_over_one_pooled_upstream(serve) -> None:  # noqa: ANN001
    from benchmarks.floor import Downstream, Relay

    upstream_connections: list[HttpBackend] = []

    def backend() -> HttpBackend:
        upstream_connections.append(HttpBackend("v1"))
        return upstream_connections[-1]

    relay = Relay("127.0.0.1", await serve(backend))
    port = await serve(lambda: Downstream(relay))
    for _ in range(2):  # the second client gets the first one's upstream connection back from the pool
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert await asyncio.wait_for(reader.readexactly(3), 5) == b"v1\n"
        writer.close()
        await writer.wait_closed()
        for _ in range(100):  # connection_lost runs on a later loop turn
            if relay.idle:
                break
            await asyncio.sleep(0.01)
    assert len(upstream_connections) == 1 and len(relay.idle) == 1
    relay.idle.pop().transport.close()  # type: ignore[union-attr]
    for _ in range(100):  # and the backend's side of it
        if upstream_connections[0].transport.is_closing():
            break
        await asyncio.sleep(0.01)
