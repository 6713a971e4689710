"""DestinationRule connectionPool and outlierDetection on TCP routes: maxConnections (queue, then UO),
maxConnectionDuration, and failed connects feeding outlier detection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from proxy.routing.resilience import ConnectionLimits, OutlierPolicy
from tests.l4.conftest import (
    Echo,
    ProxyFactory,
    closed_port,
    cluster,
    endpoint,
    read_to_close,
    reset,
    route,
    series,
    snapshot,
)


async def test_max_connections_queues_then_refuses_with_uo(echo: Echo, start_proxy: ProxyFactory) -> None:
    limits = ConnectionLimits(max_connections=1, max_pending_requests=1)
    v1 = replace(cluster("v1", endpoint(echo.v1, "v1")), limits=limits)
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 100))))
    reader1, writer1 = await proxy.connect()
    writer1.write(b"first\n")
    assert await asyncio.wait_for(reader1.readline(), 5) == b"one first\n"
    # the second waits for the first's slot, its bytes held; the third finds the queue full
    reader2, writer2 = await proxy.connect()
    writer2.write(b"second\n")
    reader3, _ = await proxy.connect()
    assert await read_to_close(reader3) in (b"", b"<reset>")  # refused at once, nothing relayed
    assert len(echo.upstream.protocols) == 1
    writer1.write_eof()
    assert await read_to_close(reader1) == b""
    assert await asyncio.wait_for(reader2.readline(), 5) == b"one second\n"
    writer2.write_eof()
    assert await read_to_close(reader2) == b""
    await proxy.settled()
    counts = series(proxy.state.metrics)
    assert counts[(v1.name, "v1", "UO")][:2] == (1, 1)
    assert counts[(v1.name, "v1", "-")][:2] == (2, 2)
    assert proxy.state.cluster_manager.breakers[v1.name].active == 0


async def test_a_connection_that_leaves_while_queued_frees_nothing(echo: Echo, start_proxy: ProxyFactory) -> None:
    v1 = replace(cluster("v1", endpoint(echo.v1, "v1")), limits=ConnectionLimits(max_connections=1))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 100))))
    reader1, writer1 = await proxy.connect()
    writer1.write(b"a\n")
    assert await asyncio.wait_for(reader1.readline(), 5) == b"one a\n"
    _, writer2 = await proxy.connect()
    breaker = proxy.state.cluster_manager.breakers[v1.name]
    await asyncio.wait_for(_until(lambda: len(breaker.pending) == 1), 5)
    reset(writer2)  # gone for good (a FIN alone is a half-close: the connection would still wait)
    await asyncio.wait_for(_until(lambda: not breaker.pending), 5)
    writer1.write_eof()
    await read_to_close(reader1)
    await proxy.settled()
    assert breaker.active == 0 and len(echo.upstream.protocols) == 1


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


async def test_max_connection_duration_closes_the_connection(echo: Echo, start_proxy: ProxyFactory) -> None:
    v1 = replace(cluster("v1", endpoint(echo.v1, "v1")), max_connection_duration=0.2)
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 100))))
    reader, writer = await proxy.connect()
    writer.write(b"hello\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"one hello\n"
    assert await read_to_close(reader) == b""  # closed by the proxy, the client never half-closed


async def test_failed_connects_eject_the_endpoint(echo: Echo, start_proxy: ProxyFactory) -> None:
    dead, live = endpoint(closed_port(), "v0"), endpoint(echo.v1, "v1")
    policy = OutlierPolicy(consecutive_5xx=2, max_ejection_percent=100)
    both = replace(cluster("", dead, live), outlier=policy)  # round robin over the two
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (both, 100))))
    outcomes = []
    for _ in range(8):
        reader, writer = await proxy.connect()
        writer.write(b"x\n")
        writer.write_eof()
        outcomes.append(await read_to_close(reader, 5))
    await proxy.settled()
    # two failed connects (counted as 503s) eject the dead endpoint: then every connection works
    assert outcomes[-4:] == [b"one x\n"] * 4
    assert outcomes.count(b"one x\n") == 6
    assert proxy.state.cluster_manager.resilience_stats()[0] == [(both.name, 1, 1)]
