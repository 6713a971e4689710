"""tcp-echo: for each newline-terminated line `L` it writes back `<prefix> L`, on every listed port.

As in Istio's Go sample: no greeting, one reply per complete line, the connection is closed at EOF and
a trailing partial line without `\\n` is dropped. Replies on a connection all come from one process
(one prefix), which is what makes TCP shifting observable per connection.
"""

from __future__ import annotations

import asyncio
from typing import cast

from proxy.samples.server import SampleServer

MAX_LINE = 16 << 20  # a "line" longer than this closes the connection instead of growing without bound


class TcpEchoProtocol(asyncio.Protocol):
    def __init__(self, prefix: bytes, server: SampleServer) -> None:
        self.head = prefix + b" "
        self.separator = b"\n" + self.head
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.partial = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.server.track(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server.untrack(self.transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        end = data.rfind(b"\n")
        if end < 0:
            self.partial += data
            if len(self.partial) > MAX_LINE:
                self.transport.close()
            return
        if self.partial:
            self.partial += data[: end + 1]
            complete = bytes(self.partial)
            self.partial = bytearray(data[end + 1:])
        else:
            complete = data[: end + 1]
            self.partial += data[end + 1:]
        lines = complete[:-1].split(b"\n")
        self.transport.write(self.head + self.separator.join(lines) + b"\n")

    def eof_received(self) -> bool:
        return False  # close now; an unterminated last line gets no reply

    # flow control: a slow reader stops us reading more lines from it
    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()


async def start_tcp_echo(ports: list[int] | tuple[int, ...] = (9000,), prefix: str = "hello",
                         host: str = "127.0.0.1") -> SampleServer:
    """Listen on every port of `ports` (0 = an ephemeral one) with the same prefix."""
    server = SampleServer("tcp-echo", f", prefix: {prefix}")
    encoded = prefix.encode()
    try:
        for port in ports:
            await server.listen(lambda: TcpEchoProtocol(encoded, server), host, port)
    except OSError:
        server.close()
        await server.wait_closed()
        raise
    return server
