"""Request mirroring (Istio `mirror` / `mirrors`, Envoy's request_mirror_policies): fire-and-forget
copies of a route's requests to another cluster.

Each mirror policy draws on its own whether to copy a request (`percent`, from `state.rng`, so tests
inject the draw). A copy carries the upstream request's head with the authority suffixed `-shadow`
(before its port, `reviews:9080` → `reviews-shadow:9080`), as Envoy sends it, and the request body,
held up to BODY_LIMIT bytes: a longer body is not mirrored. The copy is sent once the request is
complete, on a connection of its own (the primary's pools and balancer counts are never touched),
and its response is read and discarded. A slow, hanging or failing mirror costs the primary nothing:
the copy runs in its own task with a timeout (the route's, else TIMEOUT), and at most MAX_IN_FLIGHT
copies are outstanding; beyond that a copy is dropped (counted with flag `UO`). Outcomes are counted
per mirror cluster in `shiftproxy_mirror_requests_total`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy.l7.codec import CRLF, LAST_CHUNK, CodecError, ResponseDecoder, ResponseHead, chunk_size_line
from proxy.routing.snapshot import Cluster, Mirror

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

    __slots__ = ("state", "targets", "chunked", "parts", "size", "timeout", "sent")

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


def start(state: ServerState, mirrors: tuple[Mirror, ...], out_head: bytes, chunked: bool, complete: bool,
          timeout: float | None, pending: list[bytes] | None, pending_size: int) -> MirrorCopies | None:
    """Draw which mirrors copy this request; None when none does. Sent at once when `complete`."""
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
    task = loop.create_task(_copy(state, cluster, endpoint.address, endpoint.port, [head, *body], timeout))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _copy(state: ServerState, cluster: Cluster, address: str, port: int, data: list[bytes],
                timeout: float) -> None:
    global _in_flight
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    transport: asyncio.BaseTransport | None = None
    code, flags = 0, "-"
    try:
        async with asyncio.timeout(timeout):
            try:
                transport, _ = await loop.create_connection(lambda: _MirrorUpstream(done), address, port)
            except OSError:
                code, flags = 0, "UF"
            else:
                transport.writelines(data)  # type: ignore[attr-defined]
                code = await done
                flags = "-" if code else "UC"
    except TimeoutError:
        code, flags = 0, "UT"
    except Exception:  # nothing a mirror does may reach the primary
        log.exception("error sending a mirrored request")
        code, flags = 0, "-"
    finally:
        _in_flight -= 1
        if transport is not None:
            transport.close()
        state.metrics.mirror_request(cluster.name, code, flags)


class _MirrorUpstream(asyncio.Protocol):
    """Reads one response to the end (so the mirror sees a complete exchange) and reports its status."""

    def __init__(self, done: asyncio.Future[int]) -> None:
        self.done = done
        self.status = 0
        self.decoder = ResponseDecoder(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.decoder.feed(data)
        except CodecError:
            self._finish(0)

    def eof_received(self) -> bool | None:
        self.decoder.finish()
        self._finish(0)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(0)

    def on_response_head(self, head: ResponseHead) -> None:
        if head.status >= 200:
            self.status = head.status

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_complete(self) -> None:
        if self.status:
            self._finish(self.status)

    def _finish(self, status: int) -> None:
        if not self.done.done():
            self.done.set_result(status)
