"""Request mirroring (Istio `mirror` / `mirrors`, Envoy's request_mirror_policies): fire-and-forget
copies of a route's requests to another cluster.

Each mirror policy draws on its own whether to copy a request (`percent`, from `state.rng`, so tests
inject the draw). A copy carries the upstream request's head with the authority suffixed `-shadow`
(before its port, `reviews:9080` → `reviews-shadow:9080`), as Envoy sends it, and the request body,
held up to BODY_LIMIT bytes: a longer body is not mirrored. The copy is sent once the request is
complete, on a connection of its own (the primary's pools and balancer counts are never touched),
and its response is read and discarded. A slow, hanging or failing mirror costs the primary nothing:
the copy runs in its own task with a timeout (the route's, else TIMEOUT), on keep-alive connections
of the mirror's own, and at most MAX_IN_FLIGHT copies are outstanding; beyond that a copy is dropped
(counted with flag `UO`). Outcomes are counted
per mirror cluster in `shiftproxy_mirror_requests_total`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy.l7.codec import CRLF, LAST_CHUNK, CodecError, ResponseHead, chunk_size_line
from proxy.l7.response_decoder import ResponseDecoder
from proxy.routing.snapshot import Cluster, Mirror
from proxy.tls.upstream import connect as tls_connect

if TYPE_CHECKING:
    from proxy.state import ServerState

log = logging.getLogger("shiftproxy.mirror")

BODY_LIMIT = 64 * 1024  # request body bytes held per copy
TIMEOUT = 60.0  # seconds a copy may take when the route has no timeout
MAX_IN_FLIGHT = 512  # copies outstanding at once, process-wide

_in_flight = 0
_tasks: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps only weak references)


def shadow_host(host: bytes) -> bytes:
    """`reviews:9080` → `reviews-shadow:9080`; `reviews` → `reviews-shadow`."""
    if not host.endswith(b"]"):
        name, sep, port = host.rpartition(b":")
        if sep and port.isdigit() and name:
            return name + b"-shadow:" + port
    return host + b"-shadow"


def _shadow_head(out_head: bytes) -> bytes:
    """The upstream request head with its `host` (always the second line, see codec.request_head)
    suffixed."""
    first_end = out_head.index(b"\r\n") + 2
    host_end = out_head.index(b"\r\n", first_end)
    host = out_head[first_end + 6:host_end]  # after b"host: "
    return out_head[:first_end] + b"host: " + shadow_host(host) + out_head[host_end:]


class MirrorCopies:
    """The copies of one request: their heads, and the request body as it arrives (framed as the
    primary's: chunked bodies are re-chunked)."""

    __slots__ = ("state", "targets", "chunked", "parts", "size", "timeout", "sent", "held", "ready")

    def __init__(self, state: ServerState, targets: list[tuple[Cluster, bytes]], chunked: bool,
                 timeout: float | None, pending: list[bytes] | None, pending_size: int) -> None:
        self.state = state
        self.targets = targets
        self.chunked = chunked
        # bytes of the body that arrived before routing (a pipelined request), framed already
        self.parts: list[bytes] | None = list(pending) if pending else []
        self.size = pending_size
        self.timeout = timeout or TIMEOUT
        self.sent = False
        self.held = False  # a fault delay holds the request: the copies wait for it too
        self.ready = False
        if self.size > BODY_LIMIT:
            self._overflow()

    def body(self, data: bytes) -> None:
        parts = self.parts
        if parts is None:
            return
        if self.chunked:
            parts += (chunk_size_line(len(data)), data, CRLF)
            self.size += len(data) + 12
        else:
            parts.append(data)
            self.size += len(data)
        if self.size > BODY_LIMIT:
            self._overflow()

    def complete(self) -> None:
        """The request is complete: send every copy."""
        if self.held:
            self.ready = True
            return
        if self.parts is None or self.sent:
            return
        self.sent = True
        if self.chunked and (not self.parts or self.parts[-1] != LAST_CHUNK):
            self.parts.append(LAST_CHUNK)
        for cluster, head in self.targets:
            send(self.state, cluster, head, self.parts, self.timeout)
        self.parts = None

    def _overflow(self) -> None:
        self.parts = None
        for cluster, _ in self.targets:
            self.state.metrics.mirror_request(cluster.name, 0, "UO")  # too big to hold: not mirrored


    def release(self) -> None:
        """The fault delay is over (Envoy's fault filter runs before the router, which mirrors)."""
        self.held = False
        if self.ready:
            self.complete()


def start(state: ServerState, mirrors: tuple[Mirror, ...], out_head: bytes, chunked: bool, complete: bool,
          timeout: float | None, pending: list[bytes] | None, pending_size: int,
          delay: float | None = None) -> MirrorCopies | None:
    """Draw which mirrors copy this request; None when none does. Sent when the request is complete
    (at once when `complete`), and not before a fault `delay`."""
    targets: list[tuple[Cluster, bytes]] = []
    head = b""
    rng = state.rng
    for mirror in mirrors:
        if mirror.percent < 100.0 and rng.random() * 100.0 >= mirror.percent:
            continue
        if mirror.cluster is None:  # no such subset: Envoy's shadow finds no cluster and sends nothing
            state.metrics.mirror_request(mirror.cluster_name, 0, "NC")
            continue
        if not head:
            head = _shadow_head(out_head)
        targets.append((mirror.cluster, head))
    if not targets:
        return None
    copies = MirrorCopies(state, targets, chunked, timeout, pending, pending_size)
    if delay is not None:
        copies.held = True
        (state.loop or asyncio.get_running_loop()).call_later(delay, copies.release)
    if complete:
        copies.complete()
    return copies


def send(state: ServerState, cluster: Cluster, head: bytes, body: list[bytes], timeout: float) -> None:
    global _in_flight
    if _in_flight >= MAX_IN_FLIGHT:
        state.metrics.mirror_request(cluster.name, 0, "UO")
        return
    endpoint = state.cluster_manager.choose_endpoint(cluster) if cluster.endpoints else None
    if endpoint is None:
        state.metrics.mirror_request(cluster.name, 0, "UH")
        return
    _in_flight += 1
    loop = state.loop or asyncio.get_running_loop()
    task = loop.create_task(_copy(state, cluster, endpoint.key, [head, *body], timeout))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


# idle keep-alive connections to mirror endpoints, apart from the primaries' pools
_idle: dict[tuple[str, ...], list[_MirrorUpstream]] = {}
MAX_IDLE_PER_ENDPOINT = 16


async def _copy(state: ServerState, cluster: Cluster, key: tuple[str, ...], data: list[bytes],
                timeout: float) -> None:
    global _in_flight
    loop = asyncio.get_running_loop()
    conn: _MirrorUpstream | None = None
    code, flags = 0, "-"
    try:
        async with asyncio.timeout(timeout):
            conn = _acquire(key, loop)
            if conn is None:
                try:
                    _, conn = await tls_connect(loop, lambda: _MirrorUpstream(key), key[0], key[1], cluster.tls)
                except OSError:
                    code, flags = 0, "UF"
            if conn is not None:
                code = await conn.send(data, loop.create_future())
                flags = "-" if code else "UC"
    except TimeoutError:
        code, flags = 0, "UT"
    except Exception:  # nothing a mirror does may reach the primary
        log.exception("error sending a mirrored request")
        code, flags = 0, "-"
    finally:
        _in_flight -= 1
        if conn is not None:
            conn.release()
        state.metrics.mirror_request(cluster.name, code, flags)


def _acquire(key: tuple[str, ...], loop: asyncio.AbstractEventLoop) -> _MirrorUpstream | None:
    idle = _idle.get(key)
    while idle:
        conn = idle.pop()
        if conn.loop is loop and conn.transport is not None and not conn.transport.is_closing():
            return conn
    return None


class _MirrorUpstream(asyncio.Protocol):
    """A connection to a mirror endpoint: reads each response to its end (so the mirror sees complete
    exchanges), reports its status, and goes back to the idle list if it can carry another request."""

    def __init__(self, key: tuple[str, ...]) -> None:
        self.key = key
        self.loop = asyncio.get_running_loop()  # an idle connection is only reused on its own loop
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[int] | None = None
        self.status = 0
        self.decoder = ResponseDecoder(self)
        self.decoder.raw_ok = True  # only the status is read

    def send(self, data: list[bytes], done: asyncio.Future[int]) -> asyncio.Future[int]:
        self.done = done
        self.status = 0
        self.decoder.head_request = data[0].startswith(b"HEAD ")
        if self.transport is None or self.transport.is_closing():
            self._finish(0)
        else:
            self.transport.writelines(data)
        return done

    def release(self) -> None:
        """The copy is over: keep the connection if its response ended cleanly, else close it."""
        done, self.done = self.done, None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        idle = _idle.setdefault(self.key, [])
        if (done is not None and done.done() and not done.cancelled() and done.result()
                and self.decoder.keep_alive and self.decoder.complete and len(idle) < MAX_IDLE_PER_ENDPOINT):
            idle.append(self)
        else:
            transport.close()

    def _forget(self) -> None:
        idle = _idle.get(self.key)
        if idle is not None and self in idle:
            idle.remove(self)
            if not idle:
                del _idle[self.key]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.done is None:  # bytes on an idle connection: nothing after them can be trusted
            self._forget()
            self.transport.close()  # type: ignore[union-attr]
            return
        try:
            self.decoder.feed(data)
        except CodecError:
            self.decoder.keep_alive = False
            self._finish(0)

    def eof_received(self) -> bool | None:
        self.decoder.finish()
        self.decoder.keep_alive = False
        self._finish(0)
        self._forget()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(0)
        self._forget()

    def on_response_head(self, head: ResponseHead) -> None:
        if head.status >= 200:
            self.status = head.status

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_complete(self) -> None:
        if self.status:
            self._finish(self.status)

    def _finish(self, status: int) -> None:
        done = self.done
        if done is not None and not done.done():
            done.set_result(status)
