"""The relay under volume: the weighted split over many connections, bulk transfers with bounded
buffers both ways, and no file descriptor left behind."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from tests.l4.conftest import (
    Echo,
    Proxy,
    ProxyFactory,
    Sink,
    Source,
    Upstream,
    closed_port,
    cluster,
    endpoint,
    exchange,
    read_to_close,
    reset,
    route,
    series,
    snapshot,
)

MiB = 1024 * 1024
BUFFER_BOUND = 4 * MiB  # per relay transport; the default high-water mark is 64 KiB


def binomial_acceptance(n: int, p: float, alpha: float) -> tuple[int, int]:
    """The interval [lo, hi] with P(X < lo) <= alpha/2 and P(X > hi) <= alpha/2 for X ~ Binomial(n, p),
    summed from the exact pmf (log-gamma form, so large n does not overflow)."""
    def pmf(k: int) -> float:
        return math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                        + k * math.log(p) + (n - k) * math.log1p(-p))

    lo, tail = 0, 0.0
    while tail + pmf(lo) <= alpha / 2:
        tail += pmf(lo)
        lo += 1
    hi, tail = n, 0.0
    while tail + pmf(hi) <= alpha / 2:
        tail += pmf(hi)
        hi -= 1
    return lo, hi


async def run_bounded(jobs: list[Callable[[], Awaitable[object]]], concurrency: int = 50) -> list[object]:
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[object]]) -> object:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(job) for job in jobs))


class BufferPeak:
    """Samples the relay's write buffers (both sides of every connection) every millisecond."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.peak = 0
        self._task = asyncio.create_task(self._run())

    def sample(self) -> int:
        sizes = [0]
        for conn in self.proxy.connections():
            for transport in (conn.transport, conn.upstream_transport):
                if transport is not None and not transport.is_closing():
                    sizes.append(transport.get_write_buffer_size())
        self.peak = max(self.peak, *sizes)
        return max(sizes)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.001)

    def stop(self) -> int:
        self._task.cancel()
        return self.peak


async def poll(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_80_20_split_over_2000_connections(echo: Echo, start_proxy: ProxyFactory) -> None:
    v1, v2 = cluster("v1", endpoint(echo.v1, "v1")), cluster("v2", endpoint(echo.v2, "v2"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 80), (v2, 20))))
    n = 2000
    replies = await run_bounded([lambda i=i: exchange(proxy.port, [b"conn %d\n" % i]) for i in range(n)])
    prefixes = Counter(r[0].split(b" ", 1)[0] for r in replies)  # type: ignore[index]
    assert set(prefixes) <= {b"one", b"two"}
    # At the true 20 % the v2 count is Binomial(2000, 0.2): outside [lo, hi] with probability < 1e-6.
    lo, hi = binomial_acceptance(n, 0.2, 1e-6)
    assert hi - lo < 0.1 * n  # tight enough to catch a wrong split (70/30 or 90/10 give 600 or 200)
    assert lo <= prefixes[b"two"] <= hi, (prefixes, lo, hi)
    # the metrics saw the same connections on the same versions
    await proxy.settled()
    opened = {key[1]: counts[0] for key, counts in series(proxy.state.metrics).items()}
    assert opened == {"v1": prefixes[b"one"], "v2": prefixes[b"two"]}


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_no_file_descriptors_leak_over_2000_connections(
        echo: Echo, start_proxy: ProxyFactory) -> None:
    v1, v2 = cluster("v1", endpoint(echo.v1, "v1")), cluster("v2", endpoint(echo.v2, "v2"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 50), (v2, 50))))
    dead = cluster("v1", endpoint(closed_port(), "v1"))
    failing = await start_proxy(lambda port: snapshot(1, port, route(port, (dead, 1))))

    async def refused() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", failing.port)
        try:
            return await read_to_close(reader)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await exchange(proxy.port, [b"warm-up\n"])
    await refused()
    await proxy.settled()
    await failing.settled()
    await poll(lambda: not echo.upstream.transports)
    before = len(os.listdir("/proc/self/fd"))

    async def reset_by_client() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"bye\n")
        reply = await asyncio.wait_for(reader.readline(), 10)
        reset(writer)  # the relay must close the upstream itself
        return reply

    jobs: list[Callable[[], Awaitable[object]]] = [
        lambda i=i: exchange(proxy.port, [b"%d\n" % i, b"again\n"]) for i in range(1600)]
    jobs += [reset_by_client for _ in range(200)]
    jobs += [refused for _ in range(200)]
    results = await run_bounded(jobs)
    assert all(r in (b"one bye\n", b"two bye\n") for r in results[1600:1800])
    assert all(r in (b"", b"<reset>") for r in results[1800:])
    await proxy.settled()
    await failing.settled()
    await poll(lambda: not echo.upstream.transports)
    await asyncio.sleep(0)  # let the client transports' last callbacks run
    assert len(os.listdir("/proc/self/fd")) == before
    metrics = proxy.state.metrics
    assert sum(s.closed for s in metrics.tcp.values()) == 1801
    assert (metrics.downstream_active, metrics.upstream_active) == (0, 0)
    assert sum(s.closed for s in failing.state.metrics.tcp.values()) == 201
    assert proxy.state.cluster_manager.active_requests() == 0


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_256_mib_upload_keeps_relay_buffers_bounded(upstream: Upstream, start_proxy: ProxyFactory) -> None:
    port = await upstream.listen(lambda up: Sink(up, paused=True))
    proxy = await start_proxy(lambda p: snapshot(1, p, route(p, (cluster("v1", endpoint(port, "v1")), 1))))
    reader, writer = await proxy.connect()
    total, chunk = 256 * MiB, b"u" * MiB

    async def upload() -> None:
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()

    peak = BufferPeak(proxy)
    uploading = asyncio.create_task(upload())
    # The sink does not read yet: once every buffer in between is full the relay must stop reading the
    # downstream instead of queueing the rest of the upload for the sink.
    await poll(lambda: any(c.upstream_transport is not None and not c.transport.is_reading()  # type: ignore[union-attr]
                           for c in proxy.connections()))
    await asyncio.sleep(0.05)
    assert peak.sample() < BUFFER_BOUND
    assert not uploading.done()

    sink = upstream.protocols[0]
    assert isinstance(sink, Sink) and sink.transport is not None
    sink.transport.resume_reading()
    await asyncio.wait_for(uploading, 60)
    assert await asyncio.wait_for(reader.read(), 60) == b"%d" % total
    assert peak.stop() < BUFFER_BOUND
    await proxy.settled()
    (stats,) = proxy.state.metrics.tcp.values()
    assert (stats.received, stats.sent) == (total, len(b"%d" % total))


async def test_download_to_a_stalled_client_keeps_relay_buffers_bounded(
        upstream: Upstream, start_proxy: ProxyFactory) -> None:
    total = 64 * MiB
    port = await upstream.listen(lambda up: Source(up, total))
    proxy = await start_proxy(lambda p: snapshot(1, p, route(p, (cluster("v1", endpoint(port, "v1")), 1))))
    reader, writer = await proxy.connect()
    # The client reads nothing, so the backpressure has to reach back through the relay to the source.
    await poll(lambda: bool(upstream.protocols))
    source = upstream.protocols[0]
    assert isinstance(source, Source)
    await asyncio.wait_for(source.was_paused.wait(), 10)
    assert source.left > 0
    peak = BufferPeak(proxy)
    assert peak.sample() < BUFFER_BOUND
    received = 0
    while data := await asyncio.wait_for(reader.read(MiB), 30):
        received += len(data)
    assert received == total
    assert peak.stop() < BUFFER_BOUND
    writer.write_eof()  # the source's EOF only half-closed the connection
    await proxy.settled()
    (stats,) = proxy.state.metrics.tcp.values()
    assert (stats.sent, stats.received) == (total, 0)
