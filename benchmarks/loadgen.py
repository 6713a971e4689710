"""Load clients the benchmark needs beyond wrk and iperf3; each prints one JSON line on stdout.

    python -m benchmarks.loadgen pingpong --port P --conns 50 --size 64 --seconds 5
    python -m benchmarks.loadgen bulk --port P --seconds 3            # to a `backend sink` (iperf3 fallback)
    python -m benchmarks.loadgen idle --port P --count 10000 --mode http|tcp   # holds until stdin closes
    python -m benchmarks.loadgen weights-http --port P --requests 2000
    python -m benchmarks.loadgen weights-tcp --port P --connections 1000
    python -m benchmarks.loadgen connect --port P --conns 50 --size 64 --seconds 5   # a new TCP connection each
    python -m benchmarks.loadgen tls-handshake --port P --conns 50 --seconds 5       # a full TLS handshake each

Every loop is bounded by a duration or a count, and every connect/read by a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import uvloop

from benchmarks.backend import VERSION_PROBE

HOST = "127.0.0.1"
IO_TIMEOUT = 10.0
HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n"
TLS_REQUEST = b"GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n"


class _PingPong(asyncio.Protocol):
    """One connection sending a fixed message and waiting for it to come back, until told to stop."""

    def __init__(self, message: bytes, state: dict[str, bool], done: asyncio.Future[None]) -> None:
        self.message, self.state, self.done = message, state, done
        self.pending = 0
        self.round_trips = 0
        self.failed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        self.pending = len(self.message)
        self.transport.write(self.message)

    def data_received(self, data: bytes) -> None:
        self.pending -= len(data)
        if self.pending > 0:
            return
        self.round_trips += 1
        if self.state["running"]:
            self._send()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state["running"] or self.pending > 0:
            self.failed = True
        if not self.done.done():
            self.done.set_result(None)


async def pingpong(port: int, conns: int, size: int, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    state = {"running": True}
    protocols: list[_PingPong] = []
    message = b"p" * size  # never starts with the echo backend's version probe
    for _ in range(conns):
        done: asyncio.Future[None] = loop.create_future()
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda d=done: _PingPong(message, state, d), HOST, port), IO_TIMEOUT)
        protocols.append(proto)
    start_counts = sum(p.round_trips for p in protocols)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    counted = sum(p.round_trips for p in protocols) - start_counts
    elapsed = time.perf_counter() - t0
    state["running"] = False
    await asyncio.wait([p.done for p in protocols], timeout=IO_TIMEOUT)
    return {"round_trips": counted, "seconds": elapsed, "rate": counted / elapsed,
            "errors": sum(p.failed for p in protocols)}


class _BulkSender(asyncio.Protocol):
    CHUNK = b"\0" * 65536

    def __init__(self, done: asyncio.Future[int]) -> None:
        self.done = done
        self.paused = False
        self.sending = True
        self.reply = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self._pump()

    def _pump(self) -> None:
        # write() calls pause_writing() synchronously once the buffer passes the high-water mark
        while self.sending and not self.paused and not self.transport.is_closing():
            self.transport.write(self.CHUNK)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()

    def finish(self) -> None:
        self.sending = False
        if not self.transport.is_closing():
            self.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self.reply += data
        if len(self.reply) >= 8 and not self.done.done():
            self.done.set_result(int.from_bytes(self.reply[:8], "big"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.sending = False
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed before the sink acknowledged: {exc}"))


async def bulk(port: int, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    t0 = time.perf_counter()
    transport, proto = await asyncio.wait_for(loop.create_connection(lambda: _BulkSender(done), HOST, port),
                                              IO_TIMEOUT)
    await asyncio.sleep(seconds)
    proto.finish()
    received = await asyncio.wait_for(done, IO_TIMEOUT + seconds)
    elapsed = time.perf_counter() - t0
    transport.close()
    return {"bytes": received, "seconds": elapsed, "bits_per_second": received * 8 / elapsed}


async def _open_idle(port: int, mode: str) -> asyncio.StreamWriter:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), IO_TIMEOUT)
    # One exchange first, so the proxy has parsed a request / connected its upstream before it sits idle.
    if mode == "http":
        writer.write(HTTP_REQUEST)
        await asyncio.wait_for(_read_http_body(reader), IO_TIMEOUT)
    else:
        writer.write(b"ping")
        await asyncio.wait_for(reader.readexactly(4), IO_TIMEOUT)
    return writer


async def idle(port: int, count: int, batch: int, mode: str) -> None:
    writers: list[asyncio.StreamWriter] = []
    failed = 0
    first_error = ""
    for start in range(0, count, batch):
        results = await asyncio.gather(*(_open_idle(port, mode) for _ in range(min(batch, count - start))),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                failed += 1
                first_error = first_error or repr(result)
            else:
                writers.append(result)
        if failed > count // 100:
            break  # the target is refusing: report what we have rather than hammering on
    print(json.dumps({"opened": len(writers), "failed": failed, "error": first_error}), flush=True)
    # Hold the connections until the harness has measured and closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for writer in writers:
        writer.close()


async def _read_http_body(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length)


async def weights_http(port: int, requests: int, conns: int = 4) -> dict[str, object]:
    counts: Counter[str] = Counter()

    async def worker(n: int) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), IO_TIMEOUT)
        for _ in range(n):
            writer.write(HTTP_REQUEST)
            body = await asyncio.wait_for(_read_http_body(reader), IO_TIMEOUT)
            counts[body.decode(errors="replace").strip() or "?"] += 1
        writer.close()

    share, extra = divmod(requests, conns)
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(conns)))
    return {"counts": dict(counts), "total": sum(counts.values())}


async def weights_tcp(port: int, connections: int, parallel: int = 32) -> dict[str, object]:
    counts: Counter[str] = Counter()

    async def one() -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), IO_TIMEOUT)
        writer.write(VERSION_PROBE)
        line = await asyncio.wait_for(reader.readline(), IO_TIMEOUT)
        counts[line.decode(errors="replace").strip() or "?"] += 1
        writer.close()

    for start in range(0, connections, parallel):
        await asyncio.gather(*(one() for _ in range(min(parallel, connections - start))))
    return {"counts": dict(counts), "total": sum(counts.values())}


class _OneShot(asyncio.Protocol):
    """A connection that sends one message, waits for it to come back, and closes."""

    def __init__(self, message: bytes, done: asyncio.Future[bool]) -> None:
        self.message, self.done = message, done
        self.pending = len(message)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        transport.write(self.message)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.pending -= len(data)
        if self.pending <= 0:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.pending <= 0)


async def _connection_loop(conns: int, seconds: float, open_one: Callable[[asyncio.Future[bool]], Awaitable[object]],
                           failures: tuple[type[BaseException], ...]) -> tuple[int, int, float, float]:
    """`conns` workers, each opening connections one after another until the time is up: `open_one(done)`
    opens one, whose protocol sets `done` to whether its exchange went well. (completed, errors,
    seconds, this client's CPU seconds)."""
    loop = asyncio.get_running_loop()
    deadline = time.perf_counter() + seconds
    done_count = errors = 0

    async def worker() -> None:
        nonlocal done_count, errors
        while time.perf_counter() < deadline:
            finished: asyncio.Future[bool] = loop.create_future()
            try:
                await asyncio.wait_for(open_one(finished), IO_TIMEOUT)
                ok = await asyncio.wait_for(finished, IO_TIMEOUT)
            except failures:
                ok = False
            if ok:
                done_count += 1
            else:
                errors += 1

    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return done_count, errors, time.perf_counter() - t0, time.process_time() - cpu0


async def connect(port: int, conns: int, size: int, seconds: float) -> dict[str, float]:
    """`conns` workers, each opening a connection, echoing `size` bytes once and closing, until the time is up:
    new connections per second through a TCP listener (the relay's per-connection cost)."""
    loop = asyncio.get_running_loop()
    message = b"c" * size  # never starts with the echo backend's version probe
    done_count, errors, elapsed, _ = await _connection_loop(
        conns, seconds, lambda f: loop.create_connection(lambda: _OneShot(message, f), HOST, port),
        (OSError, TimeoutError))
    return {"connections": done_count, "seconds": elapsed, "rate": done_count / elapsed, "errors": errors}


class _TlsOneShot(asyncio.Protocol):
    """A TLS connection that sends one `Connection: close` request and reads until the server closes."""

    def __init__(self, done: asyncio.Future[bool], versions: Counter[str], resumed: list[int]) -> None:
        self.done, self.versions, self.resumed = done, versions, resumed
        self.head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.versions[sslobj.version() or "?"] += 1
            self.resumed[0] += bool(sslobj.session_reused)
        transport.write(TLS_REQUEST)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if len(self.head) < 12:
            self.head += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.head[:10] == b"HTTP/1.1 2")


def client_tls_context() -> ssl.SSLContext:
    """Like wrk's: no certificate verification (the client's CPU goes to the handshake itself), ALPN http/1.1.
    A fresh connection is never given an earlier session, so every handshake is a full one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


async def tls_handshake(port: int, conns: int, seconds: float, server_name: str) -> dict[str, object]:
    """`conns` workers, each opening a TLS connection (full handshake, SNI `server_name`), sending one request
    with `Connection: close` and reading the response until the close, until the time is up."""
    loop = asyncio.get_running_loop()
    context = client_tls_context()
    versions: Counter[str] = Counter()
    resumed = [0]
    done_count, errors, elapsed, cpu = await _connection_loop(
        conns, seconds, lambda f: loop.create_connection(lambda: _TlsOneShot(f, versions, resumed), HOST, port,
                                                         ssl=context, server_hostname=server_name),
        (OSError, TimeoutError, ssl.SSLError))
    # the client's own CPU per connection: near 1 s ÷ rate, the client (not the proxy) is the limit
    return {"connections": done_count, "seconds": elapsed, "rate": done_count / elapsed, "errors": errors,
            "versions": dict(versions), "resumed": resumed[0], "client_cpu": cpu / max(done_count, 1)}


def server_resumes(port: int, server_name: str) -> bool | None:
    """Whether the server lets a second connection resume the session of a first (as wrk's reconnects try);
    None if that could not be found out."""
    import socket

    context = client_tls_context()
    session = None
    try:
        for _ in range(2):
            with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as raw, \
                    context.wrap_socket(raw, server_hostname=server_name, session=session) as conn:
                conn.sendall(TLS_REQUEST)
                while conn.recv(65536):  # to the close: TLS 1.3 tickets arrive after the handshake
                    pass
                if session is not None:
                    return conn.session_reused
                session = conn.session
    except (OSError, ssl.SSLError):
        pass
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pingpong")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    p = sub.add_parser("bulk")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=3.0)
    p = sub.add_parser("idle")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--mode", choices=["http", "tcp"], default="http")
    p = sub.add_parser("weights-http")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--requests", type=int, default=2000)
    p = sub.add_parser("connect")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    p = sub.add_parser("tls-handshake")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--server-name", default="bench.local", help="the SNI sent")
    p = sub.add_parser("weights-tcp")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args(argv)

    async def run() -> dict[str, object] | None:
        if args.command == "pingpong":
            return await pingpong(args.port, args.conns, args.size, args.seconds)
        if args.command == "bulk":
            return await bulk(args.port, args.seconds)
        if args.command == "idle":
            await idle(args.port, args.count, args.batch, args.mode)
            return None
        if args.command == "connect":
            return await connect(args.port, args.conns, args.size, args.seconds)
        if args.command == "tls-handshake":
            return await tls_handshake(args.port, args.conns, args.seconds, args.server_name)
        if args.command == "weights-http":
            return await weights_http(args.port, args.requests)
        return await weights_tcp(args.port, args.connections)

    result = uvloop.run(run())
    if args.command == "tls-handshake" and result is not None:
        result["server_resumes"] = server_resumes(args.port, args.server_name)
    if result is not None:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
