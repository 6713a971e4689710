"""`SampleServer`: the listening sockets of one sample app plus its open connections.

It mirrors the part of `asyncio.Server` callers use (`sockets`, `close()`, `wait_closed()`), but
`close()` also closes the connections that are still open: keep-alive clients (a proxy's upstream pool)
would otherwise hold `wait_closed()` forever on uvloop and Python >= 3.12.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any


class SampleServer:
    def __init__(self, name: str, note: str = "") -> None:
        self.name = name
        self.note = note  # appended to the "listening on" line, e.g. ", prefix: one"
        self.servers: list[asyncio.AbstractServer] = []
        self.transports: set[asyncio.BaseTransport] = set()
        self._closing = False
        self._drained: asyncio.Event | None = None

    async def listen(self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, host, port, reuse_address=True)
        self.servers.append(server)

    # connection bookkeeping, called by the protocols

    def track(self, transport: asyncio.BaseTransport) -> None:
        if self._closing:
            transport.close()
        self.transports.add(transport)

    def untrack(self, transport: asyncio.BaseTransport) -> None:
        self.transports.discard(transport)
        if not self.transports and self._drained is not None:
            self._drained.set()

    # asyncio.Server-like interface

    @property
    def sockets(self) -> list[socket.socket]:
        return [s for server in self.servers for s in (server.sockets or ())]  # type: ignore[misc]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for s in self.sockets]

    @property
    def ports(self) -> list[int]:
        return [address[1] for address in self.addresses]

    @property
    def port(self) -> int:
        return self.ports[0]

    def close(self) -> None:
        self._closing = True
        for server in self.servers:
            server.close()
        for transport in list(self.transports):
            transport.close()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        if self.transports:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                for transport in list(self.transports):
                    abort = getattr(transport, "abort", None)
                    if abort is not None:
                        abort()
        for server in self.servers:
            await server.wait_closed()

    async def __aenter__(self) -> SampleServer:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()
