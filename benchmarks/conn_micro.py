"""Per-connection costs of the HTTP listener, with stub transports (no system calls):

- `close_io(n)`: `n` connections that each carry one `Connection: close` request (accepted, parsed,
  routed to a pooled upstream connection, answered, closed), five rounds as `l7_micro.no_io`;
- `tcp_io(n)`: `n` L4 relay connections to the point where the upstream connect starts (route match,
  weighted pick, endpoint choice, metrics, the connect's socket and `connect()`), then closed by the client
  before it completes;
- `tcp_echo(n)`: `n` L4 relay connections end to end over loopback sockets, 50 at a time, all in one
  process: accept, route, upstream connect, 64 bytes echoed once through the relay, close. The client and
  the echo server cost the same on every version of the relay, so a difference between two runs is the
  relay's (`loop.create_connection`, its task and the uvloop transports included);
- `idle_bytes(n)`: bytes held per idle keep-alive `HttpDownstream` (tracemalloc, after one request each);
- `idle_tcp_bytes(n)`: bytes of Python objects held per idle relayed TCP connection (both halves).

Python cost is best measured in instructions, which do not depend on the machine's load:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python -c \\
        "from benchmarks.conn_micro import close_io; close_io(1000)"   # and 3000: (diff) / (5 * 2000)
    # tcp_io as close_io; tcp_echo(1000) and tcp_echo(3000): (diff) / 2000
    python -m benchmarks.conn_micro            # µs per connection (wall clock) and idle bytes
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import tracemalloc
from functools import partial

import uvloop

from benchmarks.l7_micro import LISTENER, RESPONSE, StubTransport, snapshot
from proxy.accesslog import AccessLog
from proxy.admin.metrics import Metrics
from proxy.l4.relay import TcpDownstream
from proxy.l7.downstream import HttpDownstream
from proxy.l7.upstream import HttpUpstream
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

CLOSE_REQUEST = b"GET /reviews/0 HTTP/1.1\r\nHost: reviews\r\nUser-Agent: conn-micro\r\nConnection: close\r\n\r\n"
KEEP_ALIVE_REQUEST = b"GET /reviews/0 HTTP/1.1\r\nHost: reviews\r\nUser-Agent: conn-micro\r\n\r\n"
TCP_LISTENER = "bench-tcp"


class ClosingStub(StubTransport):
    """A stub that reports its close to the protocol, as uvloop does after the buffer drains."""

    def __init__(self, sockname: tuple[str, int] = ("127.0.0.1", 8080)) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None
        self.sockname = sockname

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "sockname":
            return self.sockname
        return super().get_extra_info(name, default)

    def close(self) -> None:
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.connection_lost(None)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False


def _http_state() -> tuple[ServerState, list[HttpUpstream]]:
    ports = [1001, 1002]
    state = ServerState(snapshot(ports), Metrics(), ClusterManager(), AccessLog("off"))
    upstreams = []
    for port in ports:  # one idle keep-alive connection per endpoint, as in steady state
        pool = state.cluster_manager.pool_for(Endpoint("127.0.0.1", port))
        upstream = HttpUpstream(pool, state.metrics)
        upstream.connection_made(StubTransport())
        pool.release(upstream, 3600.0)
        upstreams.append(upstream)
    return state, upstreams


def _one_http(state: ServerState, request: bytes) -> HttpDownstream:
    downstream = HttpDownstream(LISTENER, state)
    transport = ClosingStub()
    transport.protocol = downstream
    downstream.connection_made(transport)
    downstream.data_received(request)
    downstream.exchange.upstream.data_received(RESPONSE)  # type: ignore[union-attr]
    return downstream


def close_io(connections: int) -> float:
    """Microseconds of Python per `Connection: close` connection, best of five runs."""

    async def run() -> float:
        state, _ = _http_state()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(connections):
                _one_http(state, CLOSE_REQUEST)
            best = min(best, (time.perf_counter() - start) / connections * 1e6)
        assert sum(s.count for s in state.metrics.http.values()) == 5 * connections
        assert state.metrics.downstream_active == 0
        return best

    return uvloop.run(run())


def _tcp_snapshot(ports: tuple[int, int] = (1001, 1002)) -> Snapshot:
    service = ServiceInfo("reviews.default.svc.cluster.local", "reviews", "default")
    destinations = []
    for subset, port in zip(("v1", "v2"), ports, strict=True):
        cluster = Cluster(cluster_name(9080, subset, service.fqdn), service, 9080, subset,
                          (Endpoint("127.0.0.1", port, version=subset),))
        destinations.append(Destination(cluster.name, cluster, 50))
    route = TcpRoute("reviews", "default/reviews", (), WeightedDestinations(tuple(destinations), cumulative([50, 50])))
    listener = TcpListener(TCP_LISTENER, "127.0.0.1", 9000, "gateway", (route,))
    clusters = {d.cluster.name: d.cluster for d in destinations if d.cluster is not None}
    return Snapshot(1, "bench", {}, {TCP_LISTENER: listener}, clusters, {service.fqdn: service})


def tcp_io(connections: int) -> float:
    """Microseconds per L4 connection up to its upstream connect, best of five runs. The connect starts
    (to a port nothing listens on) and is cancelled before it completes."""

    async def run() -> float:
        state = ServerState(_tcp_snapshot(), Metrics(), ClusterManager(), AccessLog("off"))
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(connections):
                downstream = TcpDownstream(TCP_LISTENER, state)
                transport = ClosingStub()
                transport.protocol = downstream
                downstream.connection_made(transport)
                downstream.connection_lost(None)  # the client leaves while connecting (DC)
            best = min(best, (time.perf_counter() - start) / connections * 1e6)
            await asyncio.sleep(0)  # the cancelled connect tasks end
        assert state.metrics.downstream_active == 0
        return best

    return uvloop.run(run())


class _Echo(asyncio.Protocol):
    """The upstream: echoes, and closes when the client's EOF arrives."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False


class _OneShot(asyncio.Protocol):
    """The client: sends 64 bytes, closes once they came back (loadgen's `connect` load)."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.pending = len(ECHO_MESSAGE)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport.write(ECHO_MESSAGE)

    def data_received(self, data: bytes) -> None:
        self.pending -= len(data)
        if self.pending <= 0:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


ECHO_MESSAGE = b"c" * 64


async def _relay_servers(loop: asyncio.AbstractEventLoop,
                         state_ports: list[int]) -> tuple[ServerState, list[asyncio.Server]]:
    echo = await loop.create_server(_Echo, "127.0.0.1", 0, backlog=1024)
    echo_port = echo.sockets[0].getsockname()[1]
    # access log on, as in `make bench`, to a sink
    log = AccessLog("text", open(os.devnull, "wb"))  # noqa: SIM115  # lives as long as the process
    state = ServerState(_tcp_snapshot((echo_port, echo_port)), Metrics(), ClusterManager(), log)
    state.loop = loop
    relay = await loop.create_server(partial(TcpDownstream, TCP_LISTENER, state), "127.0.0.1", 0, backlog=1024)
    state_ports.append(relay.sockets[0].getsockname()[1])
    return state, [echo, relay]


def tcp_echo(connections: int, parallel: int = 50, direct: bool = False) -> float:
    """Microseconds per connection (wall clock, client and echo server included): `connections` relayed
    connections over loopback, `parallel` at a time, each echoing 64 bytes once. `direct`: straight to the
    echo server, the relay's share left out (its counts are then not checked)."""

    async def run() -> float:
        loop = asyncio.get_running_loop()
        ports: list[int] = []
        state, servers = await _relay_servers(loop, ports)
        port = servers[0].sockets[0].getsockname()[1] if direct else ports[0]
        left = connections

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                done: asyncio.Future[None] = loop.create_future()
                await loop.create_connection(lambda d=done: _OneShot(d), "127.0.0.1", port)  # type: ignore[misc]
                await done

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(parallel)))
        elapsed = time.perf_counter() - start
        while state.connections:  # the relay's last closes
            await asyncio.sleep(0.001)
        for server in servers:
            server.close()
        state.access_log.flush()
        stats = state.metrics.tcp.values()
        assert sum(s.closed for s in stats) == (0 if direct else connections)
        assert sum(s.received for s in stats) == (0 if direct else 64 * connections)
        return elapsed / connections * 1e6

    return uvloop.run(run())


def idle_tcp_bytes(connections: int = 2000) -> float:
    """Bytes of Python objects (uvloop transports included) held per idle relayed TCP connection, by
    tracemalloc: connections through the relay less the same number straight to the echo server."""

    async def held(loop: asyncio.AbstractEventLoop, port: int) -> tuple[int, list[asyncio.BaseTransport]]:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        kept = []
        for _ in range(connections):
            transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            kept.append(transport)
        for _ in range(20):  # the accepts and the upstream connects complete
            await asyncio.sleep(0.01)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, kept

    async def run() -> float:
        loop = asyncio.get_running_loop()
        ports: list[int] = []
        state, servers = await _relay_servers(loop, ports)
        echo_port = servers[0].sockets[0].getsockname()[1]
        tracemalloc.start()
        await held(loop, echo_port)  # warm-up: first-use allocations out of the counts
        direct, kept_direct = await held(loop, echo_port)
        relayed, kept_relayed = await held(loop, ports[0])
        tracemalloc.stop()
        assert sum(s.opened for s in state.metrics.tcp.values()) == connections
        for transport in kept_direct + kept_relayed:
            transport.abort()
        for server in servers:
            server.close()
        return (relayed - direct) / connections

    return uvloop.run(run())


def idle_bytes(connections: int = 10_000, ticked: bool = True) -> float:
    """Bytes held per idle keep-alive HTTP connection (after one request each), by tracemalloc.

    With `ticked`, after the idle-timeout watchdog has looked at each connection once (it drops the
    request decoder of a connection idle between requests); without, right after the response.
    """

    async def run() -> float:
        state, _ = _http_state()
        _one_http(state, KEEP_ALIVE_REQUEST)  # first-use caches (content-length lines, ...) out of the count
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        kept = [_one_http(state, KEEP_ALIVE_REQUEST) for _ in range(connections)]
        if ticked:
            now = asyncio.get_running_loop().time()
            for downstream in kept:
                downstream.check_timeouts(now)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert all(d.exchange is None and not d.closing for d in kept)
        return (after - before) / connections

    return uvloop.run(run())


def main() -> None:
    print(f"HTTP Connection: close, no I/O: {close_io(5000):.1f} µs of Python per connection")
    print(f"L4 relay up to the connect, no I/O: {tcp_io(5000):.1f} µs of Python per connection")
    print(f"L4 relay over loopback, 64 B echoed once: {tcp_echo(5000):.1f} µs per connection (client and echo "
          "server included)")
    print(f"idle keep-alive HTTP connection: {idle_bytes(ticked=False):,.0f} bytes each right after the response, "
          f"{idle_bytes():,.0f} after a watchdog tick (10,000 held)")
    print(f"idle relayed TCP connection: {idle_tcp_bytes():,.0f} bytes of Python objects each (2,000 held)")


if __name__ == "__main__":
    main()
