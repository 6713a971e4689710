"""Upstream HTTP/1.1 connections: one `HttpUpstream` per TCP connection to an endpoint.

A connection serves one request at a time for the `Downstream` it is bound to (an `HttpDownstream`),
reporting the response (head, body bytes, completion) and any failure back to it; between requests it sits
idle in its endpoint's pool. It never writes request bytes itself: the downstream writes to `transport`
directly, so the request body path has no extra hop.

States: *busy* (`downstream` set), *idle* (in a pool, `downstream` None), *tunnel* (after a 101: bytes
relayed raw both ways until either side closes), *closed*. An idle connection that receives bytes, EOF
or a close is dropped from its pool and closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from proxy.l7.codec import CodecError, ResponseHead
from proxy.l7.errors import UPSTREAM_PROTOCOL_ERROR, UPSTREAM_RESET, LocalReply
from proxy.l7.response_decoder import ResponseDecoder

if TYPE_CHECKING:
    from proxy.admin.metrics import Metrics
    from proxy.upstream.pool import EndpointPool

log = logging.getLogger("shiftproxy.http")


class _ResponseCount(Protocol):
    response_bytes: int


class Downstream(Protocol):
    """What a busy connection reports to: the downstream connection whose request it carries
    (`HttpDownstream`). A structural type, so this module needs nothing from downstream.py."""

    out: list[bytes] | None  # response bytes gathered during an upstream read, sent by on_upstream_read_done

    @property
    def exchange(self) -> _ResponseCount | None: ...  # the request in flight
    def on_upstream_head(self, conn: HttpUpstream, head: ResponseHead) -> None: ...
    def on_upstream_body(self, data: bytes) -> None: ...
    def on_upstream_read_done(self) -> None: ...
    def on_upstream_complete(self, conn: HttpUpstream) -> None: ...
    def on_upstream_reset(self, conn: HttpUpstream, reason: LocalReply) -> None: ...
    def on_upstream_write_paused(self, paused: bool) -> None: ...
    def on_upstream_upgraded(self, conn: HttpUpstream, data: bytes) -> None: ...
    def on_tunnel_data(self, data: bytes) -> None: ...
    def on_tunnel_eof(self, conn: HttpUpstream) -> bool | None: ...
    def on_tunnel_closed(self, conn: HttpUpstream) -> None: ...
    def on_internal_error(self) -> None: ...


class HttpUpstream(asyncio.Protocol):
    __slots__ = ("transport", "downstream", "decoder", "pool", "metrics", "requests", "idle_deadline",
                 "tunnel", "is_open", "_read_paused", "opened")

    def __init__(self, pool: EndpointPool[Any] | None, metrics: Metrics) -> None:
        self.transport: asyncio.Transport | None = None
        self.downstream: Downstream | None = None
        self.decoder = ResponseDecoder(self)
        self.pool = pool
        self.metrics = metrics
        self.requests = 0  # requests sent on this connection, for max_requests_per_connection
        self.idle_deadline = 0.0
        self.tunnel = False
        self.is_open = False
        self._read_paused = False
        self.opened = 0.0  # loop time of the connect (set by the opener), for max connection duration

    @property
    def keep_alive(self) -> bool:
        """Whether another request may follow the response just completed."""
        return self.is_open and self.decoder.keep_alive and not self.tunnel

    # used by the bound downstream

    def bind(self, downstream: Downstream, head_request: bool, raw_ok: bool = False) -> None:
        self.downstream = downstream
        self.decoder.head_request = head_request
        self.decoder.raw_ok = raw_ok
        self.requests += 1

    def unbind(self) -> None:
        self.downstream = None
        if self._read_paused:
            self.resume_reading()

    def pause_reading(self) -> None:
        if not self._read_paused and self.is_open:
            self._read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if self._read_paused:
            self._read_paused = False
            if self.is_open:
                self.transport.resume_reading()  # type: ignore[union-attr]

    def close(self, abort: bool = False) -> None:
        """Close for good (not back to the pool). `abort` drops unsent bytes, as for a reset stream."""
        self.downstream = None
        if self.is_open:
            self.is_open = False
            transport = self.transport
            assert transport is not None
            if abort:
                transport.abort()
            else:
                transport.close()

    # asyncio.Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.is_open = True
        self.metrics.upstream_active += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        self.metrics.upstream_active -= 1
        downstream = self.downstream
        if downstream is not None:
            self.downstream = None
            if self.tunnel:
                downstream.on_tunnel_closed(self)
            else:
                downstream.on_upstream_reset(self, UPSTREAM_RESET)
        elif self.pool is not None:
            self.pool.remove(self)
        self.decoder.release()  # (see RequestDecoder.release)

    def data_received(self, data: bytes) -> None:
        downstream = self.downstream
        if downstream is None:  # bytes on an idle connection: nothing can be trusted after them
            self.close()
            if self.pool is not None:
                self.pool.remove(self)
            return
        if self.tunnel:
            downstream.on_tunnel_data(data)
            return
        try:
            offset = self.decoder.feed(data)
        except CodecError as exc:
            log.debug("upstream protocol error: %s", exc)
            downstream.on_upstream_read_done()
            if self.downstream is downstream:
                downstream.on_upstream_reset(self, UPSTREAM_PROTOCOL_ERROR)
            return
        except Exception:
            log.exception("error handling an upstream response")
            self.close(abort=True)
            downstream.on_internal_error()
            return
        if downstream.out is not None:  # the response bytes this read gave go out in one send
            downstream.on_upstream_read_done()
        if offset is not None and self.downstream is downstream:
            downstream.on_upstream_upgraded(self, data[offset:])

    def eof_received(self) -> bool | None:
        downstream = self.downstream
        if downstream is not None:
            if self.tunnel:
                return downstream.on_tunnel_eof(self)
            if self.decoder.finish():  # a response delimited by the connection close is complete
                return None
        elif self.pool is not None:
            self.pool.remove(self)
        self.is_open = False
        return None  # close; connection_lost reports a reset to a bound downstream

    def pause_writing(self) -> None:
        if self.downstream is not None:
            self.downstream.on_upstream_write_paused(True)

    def resume_writing(self) -> None:
        if self.downstream is not None:
            self.downstream.on_upstream_write_paused(False)

    # ResponseDecoder handler interface: forwarded to the bound downstream

    # (the downstream may let go of this connection in the middle of a read: the rest is dropped)

    def on_response_head(self, head: ResponseHead) -> None:
        if self.downstream is not None:
            self.downstream.on_upstream_head(self, head)

    def on_response_body(self, data: bytes) -> None:
        if self.downstream is not None:
            self.downstream.on_upstream_body(data)

    def on_response_complete(self) -> None:
        if self.downstream is not None:
            self.downstream.on_upstream_complete(self)

    def response_body_bytes(self) -> int:
        ex = self.downstream.exchange if self.downstream is not None else None
        return ex.response_bytes if ex is not None else 0
