"""The Python floor: about the least any HTTP/1.1 proxy built on uvloop and httptools does per request.

Bytes are forwarded as they arrive. httptools parses both directions with empty callbacks (URL, each
header, message end), because a proxy must find where messages end and must see the headers; there is
no routing, no header rewriting, no metrics and no access log. Upstream connections to the one backend
are kept in a pool, as a real proxy keeps them: a downstream connection takes one when it opens and gives
it back when it closes, if the upstream's last response was complete.

This is a yardstick for the benchmark's "floor" column, not a proxy: it has no flow control, no timeouts
and no error answers (a failure closes both sides).

    python -m benchmarks.floor --listen 127.0.0.1:8000 --upstream 127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import asyncio

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.downstream: Downstream | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.in_response = False  # a request was sent and its response is not complete yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        if self.downstream is not None:
            self.downstream.transport.write(data)  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        self.in_response = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.downstream is not None:
            self.downstream.transport.close()  # type: ignore[union-attr]


class Downstream(asyncio.Protocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.held: list[bytes] = []  # request bytes that came before the upstream connection was open
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        upstream = self.relay.take()
        if upstream is not None:
            self.attach(upstream)
        else:
            asyncio.get_running_loop().create_task(self.relay.connect(self))

    def attach(self, upstream: Upstream) -> None:
        self.upstream = upstream
        upstream.downstream = self
        if self.held:
            upstream.in_response = True
            upstream.transport.writelines(self.held)  # type: ignore[union-attr]
            self.held = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        upstream = self.upstream
        if upstream is None:
            self.held.append(data)
        else:
            upstream.in_response = True
            upstream.transport.write(data)  # type: ignore[union-attr]

    def on_url(self, url: bytes) -> None:
        pass

    def on_header(self, name: bytes, value: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.downstream = None
            self.relay.give_back(upstream)


class Relay:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.idle: list[Upstream] = []

    def take(self) -> Upstream | None:
        while self.idle:
            upstream = self.idle.pop()
            if upstream.transport is not None:
                return upstream
        return None

    def give_back(self, upstream: Upstream) -> None:
        if upstream.transport is None:
            return
        if upstream.in_response:  # the response was cut short: the connection cannot be reused
            upstream.transport.close()
        else:
            self.idle.append(upstream)

    async def connect(self, downstream: Downstream) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(Upstream, self.upstream_host, self.upstream_port)
        except OSError:
            downstream.transport.close()  # type: ignore[union-attr]
            return
        if downstream.transport is None or downstream.transport.is_closing():
            self.give_back(upstream)
        else:
            downstream.attach(upstream)


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


async def serve(listen: tuple[str, int], upstream: tuple[str, int]) -> None:
    relay = Relay(*upstream)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Downstream(relay), *listen, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT to accept on")
    parser.add_argument("--upstream", type=_address, required=True, help="HOST:PORT of the one backend")
    args = parser.parse_args()
    uvloop.run(serve(args.listen, args.upstream))


if __name__ == "__main__":
    main()
