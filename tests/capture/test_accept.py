"""The capture listener's choice per connection, on real sockets without root: the original destination
(what netfilter would report) is given to the listener instead of read from conntrack; everything else
(sniffing, HTTP routing, TCP relays, passthrough to a real server) runs as in production."""

from __future__ import annotations

import asyncio
import io
import json
from collections import deque
from collections.abc import AsyncIterator, Callable

import pytest

from proxy.accesslog import AccessLog
from proxy.admin.metrics import Metrics
from proxy.capture import accept
from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.load import load_text
from proxy.state import ServerState
from proxy.upstream.cluster import ClusterManager
from tests.e2e.harness import Upstream


class Echo:
    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.accepted = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.prefix == b"banner":  # a server-first protocol
            writer.write(b"banner hello\n")
        try:
            while (line := await reader.readline()).endswith(b"\n"):
                writer.write(self.prefix + b" " + line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def config(http_port: int, echo_port: int, banner_port: int) -> str:
    """web: HTTP; echo: 9000 TCP, 8000 and 8001 undeclared (sniffed) on an HTTP and a server-first upstream."""
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web}}
spec:
  hosts: [web]
  addresses: [127.10.0.2]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {http_port}}}, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [echo]
  addresses: [127.10.0.3]
  ports: [{{number: 9000, name: tcp, protocol: TCP}}, {{number: 8000, name: any}}, {{number: 8001, name: other}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {echo_port}, any: {http_port}, other: {banner_port}}}, labels: {{version: v1}}}}
"""


class Harness:
    def __init__(self, state: ServerState, port: int, destinations: deque[tuple[str, int] | None]) -> None:
        self.state = state
        self.port = port
        self.destinations = destinations  # what the next accepted connections report, in order

    async def connect(self, original: tuple[str, int] | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect, as if dialled to `original` and redirected (None: dialled to the listener itself)."""
        self.destinations.append(original)
        return await asyncio.open_connection("127.0.0.1", self.port)

    def access_log(self) -> list[dict[str, object]]:
        log = self.state.access_log
        log.flush()
        return [json.loads(line) for line in log.stream.getvalue().splitlines()]  # type: ignore[attr-defined]

    def tcp_opened(self, cluster: str, flags: str = "-") -> int:
        return sum(s.opened for key, s in self.state.metrics.tcp.items() if key[0] == cluster and key[-1] == flags)


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Upstream, Echo, Echo]]:
    web = await Upstream("v1").start()
    echo, banner = Echo(b"echo"), Echo(b"banner")
    await echo.start()
    await banner.start()
    yield web, echo, banner
    await web.close()
    echo.server.close()
    banner.server.close()


@pytest.fixture
async def start(upstreams: tuple[Upstream, Echo, Echo], monkeypatch: pytest.MonkeyPatch
                ) -> AsyncIterator[Callable[..., object]]:
    web, echo, banner = upstreams
    servers: list[asyncio.Server] = []
    destinations: deque[tuple[str, int] | None] = deque()

    def original_dst(sock: object) -> tuple[str, int] | None:
        return destinations.popleft()  # the tests connect one at a time

    monkeypatch.setattr(accept, "original_dst", original_dst)
    monkeypatch.setattr(accept, "SNIFF_TIMEOUT", 1.0)  # generous: a loaded machine

    async def make(policy: str = "ALLOW_ANY") -> Harness:
        text = config(web.port, echo.server.sockets[0].getsockname()[1], banner.server.sockets[0].getsockname()[1])
        snap = compile_snapshot(load_text(text, "services.yaml").objects,
                                CompileOptions(gateway=False, capture=True, outbound_traffic_policy=policy))
        state = ServerState(snap, Metrics(), ClusterManager(), AccessLog("json", io.StringIO()),
                            loop=asyncio.get_running_loop())
        server = await asyncio.get_running_loop().create_server(
            lambda: accept.CaptureAccept("mesh_http", state), "127.0.0.1", 0)
        servers.append(server)
        return Harness(state, server.sockets[0].getsockname()[1], destinations)

    yield make
    for server in servers:
        server.close()


async def http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str,
                   target: str = "/") -> tuple[int, bytes]:
    writer.write(f"GET {target} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-len"))
    return status, await reader.readexactly(length)


async def test_a_direct_connection_is_routed_by_host(start: Callable[..., object]) -> None:
    h: Harness = await start()  # type: ignore[misc]
    reader, writer = await h.connect(None)  # not redirected: conntrack has nothing
    assert (await http_get(reader, writer, "web:9080"))[0] == 200
    writer.close()


async def test_http_to_a_vip_routes_every_request_on_the_connection(start: Callable[..., object]) -> None:
    h: Harness = await start()  # type: ignore[misc]
    reader, writer = await h.connect(("127.10.0.2", 9080))
    for _ in range(3):
        status, body = await http_get(reader, writer, "127.10.0.2:9080")  # a Host naming no service
        assert status == 200 and b'"version": "v1"' in body
    writer.close()
    assert sum(s.count for key, s in h.state.metrics.http.items()
               if key[0] == "outbound|9080||web.default.svc.cluster.local") == 3


async def test_tcp_to_a_vip_is_relayed_to_the_service(start: Callable[..., object]) -> None:
    h: Harness = await start()  # type: ignore[misc]
    reader, writer = await h.connect(("127.10.0.3", 9000))
    writer.write(b"hi\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"echo hi\n"
    writer.close()


async def test_a_sniffed_port_split_request_line_is_http(start: Callable[..., object]) -> None:
    h: Harness = await start()  # type: ignore[misc]
    reader, writer = await h.connect(("127.10.0.3", 8000))
    writer.write(b"GE")  # not enough to decide
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"T / HTTP/1.1\r\nhost: 127.10.0.3:8000\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()
    await asyncio.sleep(0.05)
    assert sum(s.count for key, s in h.state.metrics.http.items()
               if key[0] == "outbound|8000||echo.default.svc.cluster.local") == 1  # routed as HTTP


async def test_a_silent_client_on_a_sniffed_port_gets_tcp_after_the_timeout(start: Callable[..., object]) -> None:
    """Server-first protocols: after SNIFF_TIMEOUT the connection is relayed and the banner arrives."""
    h: Harness = await start()  # type: ignore[misc]
    reader, writer = await h.connect(("127.10.0.3", 8001))
    assert await asyncio.wait_for(reader.readline(), 5) == b"banner hello\n"
    writer.write(b"x\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"banner x\n"
    writer.close()


async def test_eof_before_any_byte_on_a_sniffed_port_is_relayed_as_tcp(start: Callable[..., object]) -> None:
    h: Harness = await start()  # type: ignore[misc]
    reader, writer = await h.connect(("127.10.0.3", 8001))
    writer.write_eof()
    assert await asyncio.wait_for(reader.readline(), 5) == b"banner hello\n"  # the other direction still works
    writer.close()


async def test_unknown_destination_passthrough_and_blackhole(start: Callable[..., object],
                                                             upstreams: tuple[Upstream, Echo, Echo]) -> None:
    _, echo, _ = upstreams
    target = ("127.0.0.1", echo.server.sockets[0].getsockname()[1])  # a real server no ServiceEntry lists
    allow: Harness = await start()  # type: ignore[misc]
    reader, writer = await allow.connect(target)
    writer.write(b"out\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"echo out\n"
    writer.close()
    deny: Harness = await start("REGISTRY_ONLY")  # type: ignore[misc]
    accepted = echo.accepted
    reader, writer = await deny.connect(target)
    writer.write(b"out\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without a byte
    writer.close()
    await asyncio.sleep(0.05)
    assert echo.accepted == accepted
    assert allow.tcp_opened("PassthroughCluster") == 1
    assert deny.tcp_opened("BlackHoleCluster", "UH") == 1
    for _ in range(100):  # the relay is accounted for once both sides are closed
        if allow.access_log() and deny.access_log():
            break
        await asyncio.sleep(0.02)
    passed, = allow.access_log()
    assert (passed["upstream_cluster"], passed["response_flags"]) == ("PassthroughCluster", "-")
    assert passed["upstream_host"] == f"127.0.0.1:{target[1]}"  # the original destination itself
    refused, = deny.access_log()
    assert (refused["upstream_cluster"], refused["response_flags"], refused["upstream_host"]) == (
        "BlackHoleCluster", "UH", None)


async def test_unknown_address_on_an_http_port_is_routed_by_a_known_host(start: Callable[..., object]) -> None:
    h: Harness = await start("REGISTRY_ONLY")  # type: ignore[misc]
    reader, writer = await h.connect(("127.10.9.9", 9080))
    assert (await http_get(reader, writer, "web:9080"))[0] == 200
    writer.close()
    reader, writer = await h.connect(("127.10.9.9", 9080))  # a host the mesh does not know: blackhole
    writer.write(b"GET / HTTP/1.1\r\nhost: example.com\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await asyncio.sleep(0.05)
    assert h.tcp_opened("BlackHoleCluster", "UH") == 1


async def test_passthrough_load_balancing_goes_to_the_dialled_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """DestinationRule `loadBalancer: PASSTHROUGH`: a redirected connection goes to the endpoint the client
    dialled (a headless service's pod address), not to one the balancer picks; per request for HTTP."""
    one, two = Echo(b"one"), Echo(b"two")
    one_port = await one.start()
    two.server = await asyncio.start_server(two._serve, "127.0.0.2", 0)  # a second loopback address
    tcp_port = two.server.sockets[0].getsockname()[1]
    web1, web2 = Upstream("v1"), Upstream("v2")
    await web1.start()
    web2.server = await asyncio.start_server(web2._serve, "127.0.0.2", 0)
    http_port = web2.server.sockets[0].getsockname()[1]
    text = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: pods}}
spec:
  hosts: [pods]
  ports: [{{number: {tcp_port}, name: tcp, protocol: TCP}}, {{number: {http_port}, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {one_port}, http: {web1.port}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: pods}}
spec:
  host: pods
  trafficPolicy: {{loadBalancer: {{simple: PASSTHROUGH}}}}
"""
    snap = compile_snapshot(load_text(text, "pods.yaml").objects, CompileOptions(gateway=False, capture=True))
    state = ServerState(snap, Metrics(), ClusterManager(), AccessLog("off"), loop=asyncio.get_running_loop())
    originals: deque[tuple[str, int]] = deque()
    monkeypatch.setattr(accept, "original_dst", lambda sock: originals.popleft())
    server = await asyncio.get_running_loop().create_server(lambda: accept.CaptureAccept("mesh_http", state),
                                                            "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        seen = []
        for _ in range(20):
            originals.append(("127.0.0.2", tcp_port))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"x\n")
            seen.append(await asyncio.wait_for(reader.readline(), 5))
            writer.close()
        assert seen == [b"two x\n"] * 20  # LEAST_REQUEST between the two would give "one" about half the time
        originals.append(("127.0.0.2", http_port))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        versions = [json.loads((await http_get(reader, writer, "pods"))[1])["version"] for _ in range(20)]
        writer.close()
        assert versions == ["v2"] * 20
        assert web1.requests == 0 and one.accepted == 0
    finally:
        server.close()
        for s in (one.server, two.server):
            s.close()
        await web1.close()
        await web2.close()
