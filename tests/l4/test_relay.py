"""The TCP relay on real loopback sockets: per-connection pick, byte relay, half-close, failures, metrics."""

from __future__ import annotations

import asyncio
import io
import json
import socket

import pytest

from proxy.accesslog import AccessLog
from proxy.l4 import ticks
from tests.l4.conftest import (
    Echo,
    ProxyFactory,
    ScriptedRandom,
    Sink,
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


async def test_every_line_of_a_connection_gets_the_same_prefix(echo: Echo, start_proxy: ProxyFactory) -> None:
    v1, v2 = cluster("v1", endpoint(echo.v1, "v1")), cluster("v2", endpoint(echo.v2, "v2"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 50), (v2, 50))))
    # alternate picks (cumulative 50/100: 0 → v1, 50 → v2) so both destinations carry connections
    proxy.state.rng = ScriptedRandom([0, 50] * 5)
    seen = []
    for i in range(10):
        lines = [b"conn %d line %d\n" % (i, j) for j in range(6)]
        replies = await exchange(proxy.port, lines)
        prefix = replies[0].split(b" ", 1)[0]
        assert replies == [prefix + b" " + line for line in lines]
        seen.append(prefix)
    assert seen == [b"one", b"two"] * 5


@pytest.mark.parametrize(("value", "expected"), [
    (0, b"one"), (79, b"one"), (80, b"two"), (99, b"two"), (100, b"one"), (2**32 - 1, b"two"),
])
async def test_injected_random_value_picks_the_destination(
        echo: Echo, start_proxy: ProxyFactory, value: int, expected: bytes) -> None:
    v1, v2 = cluster("v1", endpoint(echo.v1, "v1")), cluster("v2", endpoint(echo.v2, "v2"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 80), (v2, 20))))
    proxy.state.rng = ScriptedRandom([value])
    # Envoy: value % total (100) against the cumulative ends (80, 100), config order
    assert await exchange(proxy.port, [b"x\n"]) == [expected + b" x\n"]


async def test_bytes_sent_before_the_upstream_connects_are_delivered(
        echo: Echo, start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (cluster("v1", endpoint(echo.v1, "v1")), 1))))
    # Blocking calls while the loop is not running: the kernel completes the handshake and holds the
    # bytes and the FIN, so the relay sees all of it before it has even started the upstream connect.
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    try:
        sock.sendall(b"early 1\nearly 2\npartial")
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        received = b""
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), 5):
            received += chunk
    finally:
        sock.close()
    # tcp-echo drops the trailing partial line at EOF
    assert received == b"one early 1\none early 2\n"
    await proxy.settled()
    stats = proxy.state.metrics.tcp
    assert [(s.received, s.sent) for s in stats.values()] == [(len(b"early 1\nearly 2\npartial"), len(received))]


async def test_eof_before_the_upstream_connects_is_relayed(upstream: Upstream, start_proxy: ProxyFactory) -> None:
    port = await upstream.listen(lambda up: Sink(up))
    proxy = await start_proxy(lambda p: snapshot(1, p, route(p, (cluster("v1", endpoint(port, "v1")), 1))))
    # connect and half-close with nothing sent, all before the relay accepts (see above)
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        received = b""
        while chunk := await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 1024), 5):
            received += chunk
    finally:
        sock.close()
    assert received == b"0"  # the sink saw the EOF and answered with its (empty) count
    await proxy.settled()
    assert [(s.opened, s.closed, s.received, s.sent) for s in proxy.state.metrics.tcp.values()] == [(1, 1, 0, 1)]


async def test_downstream_half_close_still_gets_the_reply(echo: Echo, start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (cluster("v1", endpoint(echo.v1, "v1")), 1))))
    reader, writer = await proxy.connect()
    writer.write(b"first\nsecond\n")
    writer.write_eof()  # like `echo ... | nc`: the request direction is done, the reply must still arrive
    assert await read_to_close(reader) == b"one first\none second\n"


async def test_upstream_half_close_keeps_the_request_direction_open(
        upstream: Upstream, start_proxy: ProxyFactory) -> None:
    port = await upstream.listen(lambda up: Sink(up, greeting=b"hello\n"))
    proxy = await start_proxy(lambda p: snapshot(1, p, route(p, (cluster("v1", endpoint(port, "v1")), 1))))
    reader, writer = await proxy.connect()
    assert await asyncio.wait_for(reader.read(), 5) == b"hello\n"  # the upstream's EOF arrived ...
    writer.write(b"z" * 100_000)  # ... and the other direction still carries data
    writer.write_eof()
    await proxy.settled()
    sink = upstream.protocols[0]
    assert isinstance(sink, Sink) and sink.count == 100_000
    assert [(s.opened, s.closed, s.received, s.sent) for s in proxy.state.metrics.tcp.values()] == [
        (1, 1, 100_000, 6)]


async def test_client_reset_closes_the_upstream(echo: Echo, start_proxy: ProxyFactory) -> None:
    v1 = cluster("v1", endpoint(echo.v1, "v1"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 1))))
    reader, writer = await proxy.connect()
    writer.write(b"hello\n")
    assert await reader.readline() == b"one hello\n"
    assert len(echo.upstream.transports) == 1
    reset(writer)
    await proxy.settled()
    for _ in range(100):  # the upstream side sees the close on a later loop iteration
        if not echo.upstream.transports:
            break
        await asyncio.sleep(0.01)
    assert echo.upstream.transports == set()
    stats = proxy.state.metrics.tcp_stats(v1, v1.endpoints[0])
    assert (stats.opened, stats.closed, stats.received, stats.sent) == (1, 1, 6, 10)
    assert (proxy.state.metrics.downstream_active, proxy.state.metrics.upstream_active) == (0, 0)


async def test_upstream_refused_closes_the_downstream_with_UF(start_proxy: ProxyFactory) -> None:
    log = io.StringIO()
    dead = cluster("v1", endpoint(closed_port(), "v1"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (dead, 1))),
                              access_log=AccessLog("json", log))
    reader, writer = await proxy.connect()
    writer.write(b"anyone?\n")
    # closed at once; a reset when the unread request is still in the kernel (Linux sends RST then)
    assert await read_to_close(reader, timeout=2.0) in (b"", b"<reset>")
    await proxy.settled()
    metrics = proxy.state.metrics
    (key, (opened, closed, received, sent)), = series(metrics).items()
    assert (key, opened, closed, sent) == ((dead.name, "v1", "UF"), 1, 1, 0)
    assert received in (0, len(b"anyone?\n"))  # whether the request was read before the refusal
    (stats,) = metrics.tcp.values()
    assert stats.cluster is dead and stats.endpoint is dead.endpoints[0]
    assert (metrics.downstream_active, metrics.upstream_active) == (0, 0)
    proxy.state.access_log.flush()
    entry = json.loads(log.getvalue())
    assert (entry["response_flags"], entry["upstream_cluster"]) == ("UF", dead.name)


async def test_connect_timeout_is_UF(start_proxy: ProxyFactory) -> None:
    # A listener with a full accept queue drops further SYNs, so connecting to it hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    try:
        slow = cluster("v1", endpoint(port, "v1"), connect_timeout=0.2)
        proxy = await start_proxy(lambda p: snapshot(1, p, route(p, (slow, 1))))
        reader, _ = await proxy.connect()
        assert await read_to_close(reader) == b""
        await proxy.settled()
        assert series(proxy.state.metrics) == {(slow.name, "v1", "UF"): (1, 1, 0, 0)}
    finally:
        for s in (listener, *fillers):
            s.close()


async def test_a_connect_timeout_longer_than_the_idle_check_period_is_waited_in_full(
        start_proxy: ProxyFactory) -> None:
    # the connection's one timer first ticks after the idle check period (0.2 s / 4 here), then waits
    # the rest of the connect timeout; a timer never fires before its deadline
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # a full accept queue: connecting to it hangs
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    try:
        slow = cluster("v1", endpoint(port, "v1"), connect_timeout=0.3, idle_timeout=0.2)
        proxy = await start_proxy(lambda p: snapshot(1, p, route(p, (slow, 1))))
        loop = asyncio.get_running_loop()
        started = loop.time()
        reader, _ = await proxy.connect()
        assert await read_to_close(reader) == b""
        assert loop.time() - started >= 0.3 - 0.002  # the loop clock's millisecond rounding
        await proxy.settled()
        assert series(proxy.state.metrics) == {(slow.name, "v1", "UF"): (1, 1, 0, 0)}
    finally:
        for s in (listener, *fillers):
            s.close()


@pytest.mark.parametrize("flag", ["UH", "NC", "NR"])
async def test_unroutable_connections_are_closed_with_their_flag(
        echo: Echo, start_proxy: ProxyFactory, flag: str) -> None:
    def build(port: int):  # type: ignore[no-untyped-def]
        if flag == "UH":  # the subset exists but has no endpoint
            return snapshot(1, port, route(port, (cluster("v1"), 1)))
        if flag == "NC":  # the route names a subset that does not exist
            return snapshot(1, port, route(port, ("v9", 1)))
        # a route for another port only
        return snapshot(1, port, route(port, (cluster("v1", endpoint(echo.v1, "v1")), 1), match_port=port + 1))

    log = io.StringIO()
    proxy = await start_proxy(build, access_log=AccessLog("text", log))
    reader, writer = await proxy.connect()
    writer.write(b"hello\n")
    assert await read_to_close(reader, timeout=2.0) in (b"", b"<reset>")
    await proxy.settled()
    assert {key[2]: counts[:2] for key, counts in series(proxy.state.metrics).items()} == {flag: (1, 1)}
    assert echo.upstream.transports == set()  # nothing reached an upstream
    proxy.state.access_log.flush()
    assert log.getvalue().count("\n") == 1 and f" {flag} " in log.getvalue()


async def test_metrics_gauges_and_access_log(echo: Echo, start_proxy: ProxyFactory) -> None:
    log = io.StringIO()
    v1 = cluster("v1", endpoint(echo.v1, "v1"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 1))), access_log=AccessLog("json", log))
    metrics = proxy.state.metrics
    reader, writer = await proxy.connect()
    writer.write(b"hello\n")
    assert await reader.readline() == b"one hello\n"
    assert (metrics.downstream_active, metrics.upstream_active) == (1, 1)
    stats = metrics.tcp_stats(v1, v1.endpoints[0])
    assert (stats.opened, stats.closed) == (1, 0)
    writer.write(b"world!\n")
    assert await reader.readline() == b"one world!\n"
    writer.write_eof()
    assert await read_to_close(reader) == b""
    await proxy.settled()
    assert (metrics.downstream_active, metrics.upstream_active) == (0, 0)
    assert list(series(metrics)) == [(v1.name, "v1", "-")]
    # received = from the downstream ("hello\n" + "world!\n"), sent = to it ("one hello\n" + "one world!\n")
    assert (stats.opened, stats.closed, stats.received, stats.sent) == (1, 1, 13, 21)
    proxy.state.access_log.flush()
    entry = json.loads(log.getvalue())
    assert entry["response_flags"] == "-"
    assert (entry["bytes_received"], entry["bytes_sent"]) == (13, 21)
    assert entry["upstream_host"] == f"127.0.0.1:{echo.v1}"
    assert entry["upstream_cluster"] == v1.name
    assert entry["downstream_remote_address"] == "{}:{}".format(*writer.get_extra_info("sockname"))


async def test_long_connections_report_bytes_before_closing(
        echo: Echo, start_proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ticks, "REPORTING_INTERVAL", 0.05)
    v1 = cluster("v1", endpoint(echo.v1, "v1"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 1))))
    reader, writer = await proxy.connect()
    writer.write(b"hello\n")
    assert await reader.readline() == b"one hello\n"
    stats = proxy.state.metrics.tcp_stats(v1, v1.endpoints[0])
    for _ in range(500):  # the periodic report arrives while the connection stays open
        if stats.received:
            break
        await asyncio.sleep(0.01)
    assert (stats.received, stats.sent, stats.closed) == (6, 10, 0)
    writer.write(b"bye\n")
    assert await reader.readline() == b"one bye\n"
    writer.write_eof()
    assert await read_to_close(reader) == b""
    await proxy.settled()
    assert (stats.received, stats.sent, stats.closed) == (10, 18, 1)  # nothing counted twice


async def test_idle_timeout_closes_an_idle_connection(echo: Echo, start_proxy: ProxyFactory) -> None:
    v1 = cluster("v1", endpoint(echo.v1, "v1"), idle_timeout=0.2)
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 1))))
    reader, writer = await proxy.connect()
    writer.write(b"hello\n")
    assert await reader.readline() == b"one hello\n"
    assert await read_to_close(reader) in (b"", b"<reset>")  # then nothing moves, and the relay closes
    await proxy.settled()
    assert echo.upstream.transports == set()
    stats = proxy.state.metrics.tcp_stats(v1, v1.endpoints[0])
    assert (stats.opened, stats.closed) == (1, 1)


async def test_traffic_resets_the_idle_timeout(echo: Echo, start_proxy: ProxyFactory) -> None:
    v1 = cluster("v1", endpoint(echo.v1, "v1"), idle_timeout=0.3)
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 1))))
    reader, writer = await proxy.connect()
    for i in range(30):  # ~0.9 s in all, three idle periods, but never 0.3 s without a byte
        writer.write(b"tick %d\n" % i)
        assert await reader.readline() == b"one tick %d\n" % i
        await asyncio.sleep(0.03)
    assert not proxy.connections()[0].transport.is_closing()  # type: ignore[union-attr]


async def test_idle_timeout_disabled(echo: Echo, start_proxy: ProxyFactory,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ticks, "REPORTING_INTERVAL", 0.02)  # many timer ticks in a short test
    v1 = cluster("v1", endpoint(echo.v1, "v1"), idle_timeout=None)
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (v1, 1))))
    reader, writer = await proxy.connect()
    writer.write(b"hello\n")
    assert await reader.readline() == b"one hello\n"
    await asyncio.sleep(0.3)
    writer.write(b"still here\n")
    assert await reader.readline() == b"one still here\n"
