"""Cost of the HTTP/1.1 hot path: requests/s and proxy CPU per request over keep-alive connections.

The proxy (`HttpDownstream` on a snapshot built by hand, 50/50 between two upstream ports) runs on uvloop
in this process; a trivial upstream server and the load clients run in a child process, so the proxy's
event loop has a core of its own and its CPU time (`time.process_time`) is the proxy's alone. With
`--direct` the clients talk to the upstream with no proxy in between (the ceiling of the client side).
`--no-io` drives the same protocol objects through stub transports instead: the Python cost of one
proxied request with no system calls (best of five runs); `--headers N` adds N header fields to its
request and its response, to see what each field costs (in instructions, see the README). `--floor` with
`--no-io` drives `benchmarks/floor.py`'s relay (httptools with empty callbacks, bytes forwarded as received)
through the same stubs: the least Python any proxy on httptools runs per request, in the same units.

    python benchmarks/l7_micro.py [--seconds 5] [--connections 1] [--pipeline 1] [--direct | --no-io [--headers N]
                                  [--nginx-response] [--floor]]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import time
from multiprocessing.connection import Connection

import httptools
import uvloop

from benchmarks import floor
from proxy.accesslog import AccessLog
from proxy.admin.metrics import Metrics
from proxy.l7.downstream import HttpDownstream
from proxy.l7.upstream import HttpUpstream
from proxy.routing.snapshot import (
    Cluster,
    Destination,
    Endpoint,
    HttpListener,
    HttpRoute,
    RouteTable,
    ServiceInfo,
    Snapshot,
    VirtualHost,
    WeightedDestinations,
    cluster_name,
)
from proxy.routing.weighted import cumulative
from proxy.state import ServerState
from proxy.upstream.cluster import ClusterManager

LISTENER = "bench"
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n\r\nhello world\n")
REQUEST = b"GET /reviews/0 HTTP/1.1\r\nHost: reviews\r\nUser-Agent: l7-micro\r\nAccept: */*\r\n\r\n"
# what `make bench`'s nginx backend answers: five fields, one of them hop-by-hop
NGINX_RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 15:04:18 GMT\r\n"
                  b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nv1\n")


class Upstream(asyncio.Protocol):
    """Answers every complete request head with the same small response."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(RESPONSE)  # type: ignore[attr-defined]


class LoadClient(asyncio.Protocol):
    """Keeps `pipeline` requests outstanding on one connection until the deadline; counts responses."""

    def __init__(self, pipeline: int, deadline: float, done: asyncio.Future[None]) -> None:
        self.pipeline = pipeline
        self.deadline = deadline
        self.done = done
        self.completed = 0
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(REQUEST * self.pipeline)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.completed += 1
        if time.monotonic() < self.deadline:
            self.transport.write(REQUEST)  # type: ignore[attr-defined]
        elif self.completed % self.pipeline == 0 and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def child(pipe: Connection) -> None:
    """Upstreams, then load on request; reports (responses, seconds)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(Upstream, "127.0.0.1", 0) for _ in range(2)]
        pipe.send([s.sockets[0].getsockname()[1] for s in servers])
        target_port, seconds, connections, pipeline = await loop.run_in_executor(None, pipe.recv)
        start = time.monotonic()
        deadline = start + seconds
        clients = []
        for _ in range(connections):
            done: asyncio.Future[None] = loop.create_future()
            _, client = await loop.create_connection(lambda d=done: LoadClient(pipeline, deadline, d),
                                                     "127.0.0.1", target_port)
            clients.append(client)
        await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), seconds + 10)
        pipe.send((sum(c.completed for c in clients), time.monotonic() - start))

    uvloop.run(main())


def snapshot(ports: list[int]) -> Snapshot:
    service = ServiceInfo("reviews.default.svc.cluster.local", "reviews", "default")
    destinations = []
    for subset, port in zip(("v1", "v2"), ports, strict=True):
        cluster = Cluster(cluster_name(9080, subset, service.fqdn), service, 9080, subset,
                          (Endpoint("127.0.0.1", port, version=subset),))
        destinations.append(Destination(cluster.name, cluster, 50))
    action = WeightedDestinations(tuple(destinations), cumulative([50, 50]))
    vhost = VirtualHost("reviews", ("reviews",), (HttpRoute("reviews", "default/reviews", 0, (), action),),
                        needs_request_view=False)
    listener = HttpListener(LISTENER, "127.0.0.1", 0, "gateway", RouteTable({"reviews": vhost}))
    clusters = {d.cluster.name: d.cluster for d in destinations if d.cluster is not None}
    return Snapshot(1, "bench", {LISTENER: listener}, {}, clusters, {service.fqdn: service})


class StubTransport(asyncio.Transport):
    """Accepts writes and flow-control calls; nothing reaches a socket."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def writelines(self, data: object) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def with_headers(message: bytes, count: int) -> bytes:
    """`message` with `count` more header fields of a typical size (what each field costs is the
    difference in instructions between two counts)."""
    extra = b"".join(b"x-extra-%d: some-value-of-typical-length\r\n" % i for i in range(count))
    end = message.index(b"\r\n") + 2
    return message[:end] + extra + message[end:]


def no_io(requests: int, headers: int = 0, response: bytes = RESPONSE, access_log: str = "off") -> float:
    """Microseconds of Python per proxied request, best of five runs of `requests` requests; `headers`
    more header fields in each request and in each `response`. `access_log`: "text" or "json" writes
    the access log, as `make bench` runs shiftproxy, to /dev/null."""
    request = with_headers(REQUEST, headers)
    response = with_headers(response, headers)

    async def run() -> float:
        ports = [1001, 1002]
        sink = open(os.devnull, "wb")  # noqa: SIM115 - closed below
        state = ServerState(snapshot(ports), Metrics(), ClusterManager(), AccessLog(access_log, sink))
        downstream = HttpDownstream(LISTENER, state)
        downstream.connection_made(StubTransport())
        for port in ports:  # one idle keep-alive connection per endpoint, as in steady state
            pool = state.cluster_manager.pool_for(Endpoint("127.0.0.1", port))
            upstream = HttpUpstream(pool, state.metrics)
            upstream.connection_made(StubTransport())
            pool.release(upstream, 3600.0)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(requests):
                downstream.data_received(request)
                downstream.exchange.upstream.data_received(response)  # type: ignore[union-attr]
            best = min(best, (time.perf_counter() - start) / requests * 1e6)
        assert sum(s.count for s in state.metrics.http.values()) == 5 * requests
        state.access_log.flush()
        sink.close()
        return best

    return uvloop.run(run())


class CountingTransport(StubTransport):
    """A stub that counts the writes it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1


def floor_no_io(requests: int, headers: int = 0, response: bytes = RESPONSE) -> float:
    """`no_io` for the floor relay (`benchmarks/floor.py`): the same messages through the same kind of stub
    transports, one pooled upstream connection."""
    request = with_headers(REQUEST, headers)
    response = with_headers(response, headers)

    async def run() -> float:
        relay = floor.Relay("127.0.0.1", 1001)
        upstream = floor.Upstream()
        upstream_transport = CountingTransport()
        upstream.connection_made(upstream_transport)
        relay.give_back(upstream)
        downstream = floor.Downstream(relay)
        downstream_transport = CountingTransport()
        downstream.connection_made(downstream_transport)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(requests):
                downstream.data_received(request)
                upstream.data_received(response)
            best = min(best, (time.perf_counter() - start) / requests * 1e6)
        assert upstream_transport.writes == downstream_transport.writes == 5 * requests
        return best

    return uvloop.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--pipeline", type=int, default=1, help="requests outstanding per connection")
    parser.add_argument("--direct", action="store_true", help="no proxy: clients talk to the upstream")
    parser.add_argument("--no-io", action="store_true", help="stub transports: the Python cost alone")
    parser.add_argument("--headers", type=int, default=0, help="with --no-io: more header fields each way")
    parser.add_argument("--nginx-response", action="store_true",
                        help="with --no-io: the response head of make bench's nginx backend")
    parser.add_argument("--floor", action="store_true", help="with --no-io: benchmarks/floor.py's relay instead")
    parser.add_argument("--access-log", choices=("off", "text", "json"), default="off",
                        help="with --no-io: shiftproxy's access log, written to /dev/null")
    args = parser.parse_args()
    if args.no_io:
        response = NGINX_RESPONSE if args.nginx_response else RESPONSE
        if args.floor:
            print(f"no I/O, floor relay: {floor_no_io(20000, args.headers, response):.1f} µs of Python per request")
        else:
            cost = no_io(20000, args.headers, response, args.access_log)
            print(f"no I/O: {cost:.1f} µs of Python per proxied request")
        return

    pipe, child_pipe = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=child, args=(child_pipe,), daemon=True)
    process.start()
    ports = pipe.recv()

    async def run() -> tuple[int, float, float, float]:
        loop = asyncio.get_running_loop()
        state = ServerState(snapshot(ports), Metrics(), ClusterManager(), AccessLog("off"))
        server = await loop.create_server(lambda: HttpDownstream(LISTENER, state), "127.0.0.1", 0)
        target = ports[0] if args.direct else server.sockets[0].getsockname()[1]
        before = resource.getrusage(resource.RUSAGE_SELF)
        pipe.send((target, args.seconds, args.connections, args.pipeline))
        completed, elapsed = await loop.run_in_executor(None, pipe.recv)
        after = resource.getrusage(resource.RUSAGE_SELF)
        server.close()
        if not sum(s.count for s in state.metrics.http.values()):
            return completed, elapsed, 0.0, 0.0
        return completed, elapsed, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime

    completed, elapsed, user, system = uvloop.run(run())
    process.join(5)
    rps = completed / elapsed
    mode = "direct" if args.direct else "proxy"
    print(f"{mode}: {completed} requests in {elapsed:.2f} s = {rps:,.0f} req/s "
          f"({args.connections} connection(s), {args.pipeline} in flight each)")
    cpu = user + system
    if cpu:
        print(f"proxy CPU: {cpu / completed * 1e6:.1f} µs per request ({user / completed * 1e6:.1f} user, "
              f"{system / completed * 1e6:.1f} kernel) ≈ {completed / cpu:,.0f} req/s per core at 100 % CPU")


if __name__ == "__main__":
    main()
