"""Weight changes and shutdown: open connections keep their destination, drain-on-shift, drain_tcp."""

from __future__ import annotations

import asyncio

from proxy.l4 import lifecycle
from tests.l4.conftest import (
    Echo,
    ProxyFactory,
    ScriptedRandom,
    cluster,
    endpoint,
    exchange,
    read_to_close,
    route,
    series,
    snapshot,
)


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> bytes:
    writer.write(line)
    return await asyncio.wait_for(reader.readline(), 5)


async def test_open_connection_keeps_its_destination_across_a_weight_shift(
        echo: Echo, start_proxy: ProxyFactory) -> None:
    v1, v2 = cluster("v1", endpoint(echo.v1, "v1")), cluster("v2", endpoint(echo.v2, "v2"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 100), (v2, 0))))
    metrics = proxy.state.metrics
    reader, writer = await proxy.connect()
    assert await ask(reader, writer, b"before\n") == b"one before\n"

    proxy.swap(snapshot(2, proxy.port, route(proxy.port, (v1, 0), (v2, 100))))
    assert metrics.connections_on_old_config == 1
    assert await ask(reader, writer, b"after\n") == b"one after\n"  # still v1
    assert await exchange(proxy.port, [b"new\n"]) == [b"two new\n"]  # new connections use the new weights
    assert metrics.connections_on_old_config == 1

    writer.write_eof()
    assert await read_to_close(reader) == b""
    await proxy.settled()
    assert metrics.connections_on_old_config == 0
    assert {key[1]: counts[:2] for key, counts in series(metrics).items()} == {"v1": (1, 1), "v2": (1, 1)}


async def test_drain_on_shift_closes_only_connections_whose_destination_lost_its_weight(
        echo: Echo, start_proxy: ProxyFactory) -> None:
    v1, v2 = cluster("v1", endpoint(echo.v1, "v1")), cluster("v2", endpoint(echo.v2, "v2"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 50), (v2, 50))))
    proxy.state.rng = ScriptedRandom([0, 50])  # first connection → v1, second → v2
    reader_a, writer_a = await proxy.connect()
    assert await ask(reader_a, writer_a, b"a\n") == b"one a\n"
    reader_b, writer_b = await proxy.connect()
    assert await ask(reader_b, writer_b, b"b\n") == b"two b\n"
    conn_a, conn_b = sorted(proxy.connections(), key=lambda c: c.cluster_name)

    proxy.swap(snapshot(2, proxy.port, route(proxy.port, (v1, 0), (v2, 100), drain_on_shift=0.2)))
    assert proxy.state.metrics.connections_on_old_config == 2
    # not closed by the swap itself: only after the grace (nothing has run since the swap)
    assert not conn_a.transport.is_closing()  # type: ignore[union-attr]

    assert await read_to_close(reader_a) == b""
    await asyncio.wait_for(conn_a.closed_waiter(), 5)
    assert await ask(reader_b, writer_b, b"still\n") == b"two still\n"
    assert not conn_b.transport.is_closing()  # type: ignore[union-attr]
    assert proxy.connections() == [conn_b]
    assert proxy.state.metrics.connections_on_old_config == 1


async def test_drain_on_shift_is_cancelled_when_the_weight_comes_back(
        echo: Echo, start_proxy: ProxyFactory) -> None:
    v1, v2 = cluster("v1", endpoint(echo.v1, "v1")), cluster("v2", endpoint(echo.v2, "v2"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 100))))
    reader, writer = await proxy.connect()
    assert await ask(reader, writer, b"a\n") == b"one a\n"
    proxy.swap(snapshot(2, proxy.port, route(proxy.port, (v2, 100), drain_on_shift=0.1)))
    proxy.swap(snapshot(3, proxy.port, route(proxy.port, (v1, 50), (v2, 50), drain_on_shift=0.1)))
    await asyncio.sleep(0.3)  # well past the grace the first swap asked for
    assert await ask(reader, writer, b"b\n") == b"one b\n"


async def test_without_drain_on_shift_a_connection_outlives_its_destination(
        echo: Echo, start_proxy: ProxyFactory) -> None:
    v1, v2 = cluster("v1", endpoint(echo.v1, "v1")), cluster("v2", endpoint(echo.v2, "v2"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 100))))
    reader, writer = await proxy.connect()
    assert await ask(reader, writer, b"a\n") == b"one a\n"
    proxy.swap(snapshot(2, proxy.port, route(proxy.port, (v2, 100))))  # v1 gone from the route entirely
    await asyncio.sleep(0.2)
    assert await ask(reader, writer, b"b\n") == b"one b\n"


async def test_drain_tcp_waits_for_connections_then_closes_the_rest(
        echo: Echo, start_proxy: ProxyFactory) -> None:
    v1 = cluster("v1", endpoint(echo.v1, "v1"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 1))))
    idle_reader, idle_writer = await proxy.connect()
    assert await ask(idle_reader, idle_writer, b"idle\n") == b"one idle\n"
    busy_reader, busy_writer = await proxy.connect()
    assert await ask(busy_reader, busy_writer, b"busy\n") == b"one busy\n"

    async def finish_busy() -> bytes:  # this one ends on its own while the drain waits
        await asyncio.sleep(0.05)
        busy_writer.write(b"last\n")
        busy_writer.write_eof()
        return await read_to_close(busy_reader)

    finishing = asyncio.create_task(finish_busy())
    assert await lifecycle.drain_tcp(proxy.state, 0.5) == 1  # only the idle one had to be closed
    assert await finishing == b"one last\n"
    assert await read_to_close(idle_reader) in (b"", b"<reset>")
    assert proxy.connections() == []
    stats = proxy.state.metrics.tcp_stats(v1, v1.endpoints[0])
    assert (stats.opened, stats.closed) == (2, 2)
    assert (proxy.state.metrics.downstream_active, proxy.state.metrics.upstream_active) == (0, 0)
