"""TCP relay fixtures: tcp-echo-like upstreams, snapshots built by hand, and a relay listener on 127.0.0.1.

Every test runs on uvloop (the production loop) and on the default asyncio loop, whose Protocol
callbacks differ in ordering (uvloop can deliver a read after `pause_reading()`); heavy tests pick
uvloop only with `@pytest.mark.asyncio(loop_factories=["uvloop"])`.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from proxy.accesslog import AccessLog
from proxy.admin.metrics import Metrics
from proxy.l4 import lifecycle, relay
from proxy.routing.match import TcpMatch
from proxy.routing.snapshot import (
    Cluster,
    Destination,
    Endpoint,
    ServiceInfo,
    Snapshot,
    TcpListener,
    TcpRoute,
    WeightedDestinations,
    cluster_name,
)
from proxy.routing.weighted import cumulative
from proxy.state import ServerState
from proxy.upstream.cluster import ClusterManager

LISTENER = "0.0.0.0_31400"
SERVICE = ServiceInfo("tcp-echo.default.svc.cluster.local", "tcp-echo", "default")
SERVICE_PORT = 9000


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


# upstream servers ---------------------------------------------------------------------------------


class Upstream:
    """Listening upstream servers plus the connections they accepted, all closed at teardown."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.transports: set[asyncio.BaseTransport] = set()
        self.protocols: list[asyncio.Protocol] = []

    async def listen(self, factory: Callable[[Upstream], asyncio.Protocol]) -> int:
        def make() -> asyncio.Protocol:
            protocol = factory(self)
            self.protocols.append(protocol)
            return protocol

        server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for transport in list(self.transports):
            transport.abort()
        for _ in range(100):  # connection_lost callbacks run on the next loop iterations
            if not self.transports:
                break
            await asyncio.sleep(0.01)
        for server in self.servers:
            await server.wait_closed()


class _Tracked(asyncio.Protocol):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.upstream.transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.upstream.transports.discard(self.transport)  # type: ignore[arg-type]


class LineEcho(_Tracked):
    """tcp-echo: `<prefix> <line>` for every newline-terminated line; closes on EOF, dropping a partial line."""

    def __init__(self, upstream: Upstream, prefix: bytes) -> None:
        super().__init__(upstream)
        self.prefix = prefix + b" "
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        if lines:
            self.transport.write(b"".join(self.prefix + line + b"\n" for line in lines))  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        return False  # close


class Sink(_Tracked):
    """Counts what it receives; at EOF answers with the count and closes. Can start with reading paused,
    and can greet and half-close first (to test the upstream-to-downstream EOF)."""

    def __init__(self, upstream: Upstream, paused: bool = False, greeting: bytes = b"") -> None:
        super().__init__(upstream)
        self.count = 0
        self.paused = paused
        self.greeting = greeting

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.paused:
            self.transport.pause_reading()  # type: ignore[union-attr]
        if self.greeting:
            self.transport.write(self.greeting)  # type: ignore[union-attr]
            self.transport.write_eof()  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.count += len(data)

    def eof_received(self) -> bool:
        if not self.greeting:
            self.transport.write(b"%d" % self.count)  # type: ignore[union-attr]
        self.transport.close()  # type: ignore[union-attr]
        return True


class Source(_Tracked):
    """Sends `total` bytes as fast as flow control lets it, then closes; records whether it was paused."""

    CHUNK = b"s" * (256 * 1024)

    def __init__(self, upstream: Upstream, total: int) -> None:
        super().__init__(upstream)
        self.left = total
        self.was_paused = asyncio.Event()
        self.writing = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._push()

    def _push(self) -> None:
        while self.writing and self.left > 0:
            chunk = self.CHUNK[: min(len(self.CHUNK), self.left)]
            self.left -= len(chunk)
            self.transport.write(chunk)  # type: ignore[union-attr]
        if self.left == 0:
            self.transport.close()  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        self.writing = False
        self.was_paused.set()

    def resume_writing(self) -> None:
        self.writing = True
        self._push()


@dataclass
class Echo:
    """tcp-echo v1 ("one") and v2 ("two") on ephemeral ports."""

    upstream: Upstream
    v1: int
    v2: int


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    yield up
    await up.close()


@pytest.fixture
async def echo(upstream: Upstream) -> Echo:
    v1 = await upstream.listen(lambda up: LineEcho(up, b"one"))
    v2 = await upstream.listen(lambda up: LineEcho(up, b"two"))
    return Echo(upstream, v1, v2)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed client or a firewall would."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def closed_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# snapshots ----------------------------------------------------------------------------------------


def endpoint(port: int, version: str, address: str = "127.0.0.1") -> Endpoint:
    return Endpoint(address, port, labels={"app": "tcp-echo", "version": version}, version=version,
                    workload=f"tcp-echo-{version}", canonical_service="tcp-echo", canonical_revision=version)


def cluster(subset: str, *endpoints: Endpoint, connect_timeout: float = 10.0,
            idle_timeout: float | None = 3600.0) -> Cluster:
    return Cluster(cluster_name(SERVICE_PORT, subset, SERVICE.fqdn), SERVICE, SERVICE_PORT, subset,
                   tuple(endpoints), lb_policy="ROUND_ROBIN", connect_timeout=connect_timeout,
                   tcp_idle_timeout=idle_timeout)


def route(listener_port: int, *weighted: tuple[Cluster | str, int], drain_on_shift: float | None = None,
          match_port: int | None = None) -> TcpRoute:
    """A tcp route; a `str` in place of a cluster is a destination whose subset does not exist."""
    destinations = []
    for target, weight in weighted:
        if isinstance(target, Cluster):
            destinations.append(Destination(target.name, target, weight))
        else:
            destinations.append(Destination(cluster_name(SERVICE_PORT, target, SERVICE.fqdn), None, weight))
    if len(destinations) > 1:  # Istio: with several destinations only non-zero weights get traffic
        destinations = [d for d in destinations if d.weight > 0]
    port = listener_port if match_port is None else match_port
    return TcpRoute("default/tcp-echo#0", "default/tcp-echo", (TcpMatch(port=port),),
                    WeightedDestinations(tuple(destinations), cumulative([d.weight for d in destinations])),
                    drain_on_shift)


def snapshot(version: int, listener_port: int, *routes: TcpRoute) -> Snapshot:
    clusters = {d.cluster.name: d.cluster for r in routes for d in r.destinations.destinations
                if d.cluster is not None}
    listener = TcpListener(LISTENER, "127.0.0.1", listener_port, "gateway", tuple(routes))
    return Snapshot(version, f"hash-{version}", {}, {LISTENER: listener}, clusters, {SERVICE.fqdn: SERVICE})


def series(metrics: Metrics) -> dict[tuple[str, str, str], tuple[int, int, int, int]]:
    """The TCP counters by (cluster name, endpoint version, response flags):
    (opened, closed, received, sent)."""
    return {(s.cluster.name if s.cluster else "", s.endpoint.version if s.endpoint else "", key[-1]):
            (s.opened, s.closed, s.received, s.sent) for key, s in metrics.tcp.items()}


# the relay under test -----------------------------------------------------------------------------


@dataclass
class Proxy:
    state: ServerState
    server: asyncio.Server
    port: int
    clients: list[asyncio.StreamWriter] = field(default_factory=list)

    def swap(self, new: Snapshot) -> None:
        """What the server does on a successful reload."""
        old = self.state.snapshot
        self.state.snapshot = new
        lifecycle.on_snapshot_swap(self.state, old, new)

    def connections(self) -> list[relay.TcpDownstream]:
        return [c for c in self.state.connections if isinstance(c, relay.TcpDownstream)]

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.clients.append(writer)
        return reader, writer

    async def settled(self, timeout: float = 5.0) -> None:
        """Wait until every relayed connection is closed and accounted for."""
        conns = self.connections()
        if conns:
            await asyncio.wait_for(asyncio.gather(*(c.closed_waiter() for c in conns)), timeout)


ProxyFactory = Callable[..., Any]


@pytest.fixture
async def start_proxy() -> AsyncIterator[ProxyFactory]:
    """`await start_proxy(lambda port: snapshot(...), access_log=...)` → a running `Proxy`."""
    proxies: list[Proxy] = []

    async def start(build: Callable[[int], Snapshot], access_log: AccessLog | None = None) -> Proxy:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        state = ServerState(build(port), Metrics(), ClusterManager(), access_log or AccessLog("off"))
        server = await asyncio.get_running_loop().create_server(
            lambda: relay.TcpDownstream(LISTENER, state), sock=sock)
        proxy = Proxy(state, server, port)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.server.close()
        for writer in proxy.clients:
            writer.transport.abort()
        await lifecycle.drain_tcp(proxy.state, 0)
        await proxy.server.wait_closed()


class ScriptedRandom(random.Random):
    """Hands out the given values from `getrandbits`, in order: the injected weighted-pick input."""

    def __init__(self, values: list[int]) -> None:
        super().__init__(0)
        self.values = list(values)

    def getrandbits(self, k: int) -> int:
        return self.values.pop(0)


async def read_to_close(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything until the relay closes the connection (EOF, or a reset after an abort)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b"<reset>"


async def exchange(port: int, lines: list[bytes]) -> list[bytes]:
    """One connection: send each line, read its reply, then half-close and read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        replies = []
        for line in lines:
            writer.write(line)
            replies.append(await asyncio.wait_for(reader.readline(), 10))
        writer.write_eof()
        rest = await asyncio.wait_for(reader.read(), 10)
        assert rest == b"", rest
        return replies
    finally:
        writer.close()
        await writer.wait_closed()
