"""DestinationRule connectionPool and outlierDetection on TCP routes: maxConnections (flag UO),
maxConnectionDuration, and failed connects feeding outlier detection."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from proxy.routing.resilience import ConnectionLimits, OutlierPolicy
from tests.l4.conftest import (
    Echo,
    ProxyFactory,
    closed_port,
    cluster,
    endpoint,
    read_to_close,
    route,
    series,
    snapshot,
)


async def test_max_connections_closes_the_excess_with_uo(echo: Echo, start_proxy: ProxyFactory) -> None:
    v1 = replace(cluster("v1", endpoint(echo.v1, "v1")), limits=ConnectionLimits(max_connections=1))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 100))))
    reader1, writer1 = await proxy.connect()
    writer1.write(b"first\n")
    assert await asyncio.wait_for(reader1.readline(), 5) == b"one first\n"
    reader2, _ = await proxy.connect()
    assert await read_to_close(reader2) in (b"", b"<reset>")  # refused at once, nothing relayed
    writer1.write_eof()
    assert await read_to_close(reader1) == b""
    await proxy.settled()
    # the slot is free again once the first connection ended
    reader3, writer3 = await proxy.connect()
    writer3.write(b"third\n")
    assert await asyncio.wait_for(reader3.readline(), 5) == b"one third\n"
    writer3.write_eof()
    await read_to_close(reader3)
    await proxy.settled()
    counts = series(proxy.state.metrics)
    assert counts[(v1.name, "v1", "UO")][:2] == (1, 1)
    assert counts[(v1.name, "v1", "-")][:2] == (2, 2)


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
