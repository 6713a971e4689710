"""Bodies stream with bounded memory: a slow reader on one side stops the proxy reading the other side.

64 MiB go through in each direction against a slow reader. Without flow control the proxy would hold
most of the body in a transport buffer; with it, every buffer stays under BOUND. (The 1 GiB whole-process
RSS check runs end to end, with the proxy in its own process.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.l7.conftest import Proxy, UpstreamServer, cluster, simple_snapshot

StartProxy = Callable[..., Awaitable[Proxy]]
StartUpstream = Callable[[str], Awaitable[UpstreamServer]]

SIZE = 64 * 1024 * 1024
BOUND = 4 * 1024 * 1024  # far below SIZE, far above a few high-water marks plus one read
BLOCK = 256 * 1024


class BufferProbe:
    """Samples the proxy's buffers (transports both ways, bytes held for an upstream) while it runs."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.downstream_max = 0
        self.upstream_max = 0
        self.held_max = 0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for conn in self.proxy.downstreams():
                if conn.transport is not None:
                    self.downstream_max = max(self.downstream_max, conn.transport.get_write_buffer_size())
                ex = conn.exchange
                if ex is not None:
                    self.held_max = max(self.held_max, ex.pending_size)
                    if ex.upstream is not None and ex.upstream.transport is not None:
                        self.upstream_max = max(self.upstream_max, ex.upstream.transport.get_write_buffer_size())
            self.samples += 1
            await asyncio.sleep(0.002)

    def __enter__(self) -> BufferProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_request_body_to_a_slow_upstream_is_bounded(start_proxy: StartProxy,
                                                          upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    block = b"q" * BLOCK
    with BufferProbe(proxy) as probe:
        await client.send(b"POST /sink/1 HTTP/1.1\r\nHost: reviews\r\nContent-Length: %d\r\n\r\n" % SIZE)
        async with asyncio.timeout(60):
            for _ in range(SIZE // BLOCK):
                await client.send(block)  # drain(): the client itself only goes as fast as the proxy reads
            response = await client.response()
    assert response.status == 200
    assert int(response.body) == SIZE
    assert probe.samples > 10
    assert probe.upstream_max < BOUND, probe.upstream_max
    assert probe.held_max < BOUND, probe.held_max


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_response_body_to_a_slow_client_is_bounded(start_proxy: StartProxy,
                                                         upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    proxy = await start_proxy(simple_snapshot((cluster("v1", v1), 100)))
    client = await proxy.connect()
    await client.send(b"GET /big/%d HTTP/1.1\r\nHost: reviews\r\n\r\n" % SIZE)
    with BufferProbe(proxy) as probe:
        async with asyncio.timeout(60):
            head = await client.reader.readuntil(b"\r\n\r\n")
            received = 0
            while received < SIZE:
                data = await client.reader.read(65536)
                assert data
                received += len(data)
                await asyncio.sleep(0.001)  # a slow reader
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: %d" % SIZE in head
    assert received == SIZE
    assert probe.samples > 10
    assert probe.downstream_max < BOUND, probe.downstream_max
