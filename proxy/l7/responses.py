"""What a downstream HTTP connection sends back: the upstream's response relayed as it streams in
(head, body, end, reset), the raw byte tunnel after a 101, and the proxy's own answers (local replies,
malformed requests, internal errors). A mixin of `HttpDownstream` (downstream.py).

Theory of operation:
- A response head is gathered with the body bytes read with it, and sent when the upstream read is
  processed (`on_upstream_read_done`): a small response costs one send.
- A complete response releases its upstream connection to the endpoint's pool when it can carry
  another request, else closes it.
- Upgrade (WebSocket): after a 101 the bytes held after the request's head are sent and both
  connections become a raw byte tunnel (EOF relayed as half-close).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proxy.l7 import errors, exchange
from proxy.l7.codec import CRLF, LAST_CHUNK, chunk_size_line, response_head
from proxy.l7.errors import STATUS_LINES
from proxy.l7.exchange import Exchange
from proxy.l7.pausing import PAUSE_BROKEN, PAUSE_UPGRADE, PAUSE_UPSTREAM

if TYPE_CHECKING:
    from proxy.l7.codec import ResponseHead
    from proxy.l7.errors import LocalReply
    from proxy.l7.upstream import HttpUpstream

log = logging.getLogger("shiftproxy.http")


class Responses:
    """Mixed into HttpDownstream: uses its `state`, `loop`, `transport`, `exchange`, `receiving`, `queue`,
    `keep_alive`, `closing`, `out`, `_held`, `_up_out`, `_tunnel_eofs`, `decoder` and its methods
    `_start`, `_finish`, `_forward`, `_drop_upstream`, `_retry`, `_pause_reading`, `_resume_reading` and
    the `Attempts` hooks."""

    __slots__ = ()

    # HttpUpstream callbacks

    def on_upstream_head(self, conn: HttpUpstream, head: ResponseHead) -> None:
        ex = self.exchange
        if ex is None or ex.upstream is not conn:
            return
        status = head.status
        request = ex.head
        assert request is not None
        if status < 200:
            if status == 101 and request.upgrade is not None:
                self._switch_protocols(ex, head)
            elif status == 101:
                self.on_upstream_reset(conn, errors.UPSTREAM_PROTOCOL_ERROR)
            elif status != 100 and not request.http10:  # 100 is ours to send; others are relayed
                self.transport.write(response_head(STATUS_LINES[status], head.headers, ()))  # type: ignore[union-attr]
            return
        if (ex.route.retry is not None or ex.cluster.outlier is not None) and \
                self._on_attempt_head(ex, status):  # type: ignore[union-attr]
            return  # retried: this response is dropped
        ex.status = status
        ex.response_started = True
        ex.replay = None
        close = not (ex.keep_alive and self.keep_alive) or self.state.draining
        self.out = [exchange.response_head(ex, head, close)]  # sent with the body read with it

    def on_upstream_body(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            return
        ex.response_bytes += len(data)
        out = self.out
        if ex.response_chunked:
            if out is not None:
                out += (chunk_size_line(len(data)), data, CRLF)
            else:
                self.transport.writelines((chunk_size_line(len(data)), data, CRLF))  # type: ignore[union-attr]
        elif out is not None:
            out.append(data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    def on_upstream_read_done(self) -> None:
        """The upstream read that produced response bytes is processed: send what it gave."""
        self._flush()

    def _flush(self) -> None:
        out, self.out = self.out, None
        if out and not self.closing:
            if len(out) == 1:
                self.transport.write(out[0])  # type: ignore[union-attr]
            else:
                self.transport.writelines(out)  # type: ignore[union-attr]

    def on_upstream_complete(self, conn: HttpUpstream) -> None:
        ex = self.exchange
        if ex is None or ex.upstream is not conn or ex.tunnel:
            return
        out = self.out
        if ex.response_chunked:
            if out is not None:
                out.append(LAST_CHUNK)
            else:
                self.transport.write(LAST_CHUNK)  # type: ignore[union-attr]
        if out is not None:  # _flush(), inlined: this runs once per response
            self.out = None
            if not self.closing:
                if len(out) == 1:
                    self.transport.write(out[0])  # type: ignore[union-attr]
                else:
                    self.transport.writelines(out)  # type: ignore[union-attr]
        # the response is complete: the connection goes back to the pool if it can carry another request
        ex.upstream = None
        conn.downstream = None  # conn.unbind(), inlined (this and the rest run once per response)
        if conn._read_paused:
            conn.resume_reading()
        if self._read_paused:
            self._resume_reading(PAUSE_UPSTREAM)
        cluster = ex.cluster
        assert cluster is not None
        limit = cluster.max_requests_per_connection
        idle = cluster.http_idle_timeout
        if cluster.max_connection_duration is not None:  # pooled at most until the connection's age is up
            idle = min(idle, conn.opened + cluster.max_connection_duration - self.loop.time())
        # conn.keep_alive, inlined
        if conn.is_open and conn.decoder.keep_alive and not conn.tunnel and ex.request_complete and (
                conn.pool is not None and (limit == 0 or conn.requests < limit)) and idle > 0 and (
                ex.head.upgrade is None):  # type: ignore[union-attr]  # the upstream may have switched anyway
            conn.pool.release(conn, idle)
        else:
            conn.close()
        self._finish(ex, ex.status, "-")

    def on_upstream_reset(self, conn: HttpUpstream, reason: LocalReply) -> None:
        """The upstream closed, reset or broke the protocol before the response was complete."""
        ex = self.exchange
        if ex is None or ex.upstream is not conn:
            conn.close()
            return
        self._drop_upstream(ex, abort=True)
        if ex.response_started:
            ex.close = True  # the client learns by the connection closing mid-response
            self._finish(ex, ex.status, reason.flags)
        elif reason is errors.UPSTREAM_RESET and ex.reused and ex.replay is not None and not ex.retried:
            self._retry(ex)
        elif not self._on_attempt_reset(ex):
            self._reply(ex, reason)

    def on_upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self._pause_reading(PAUSE_UPSTREAM)
        else:
            self._resume_reading(PAUSE_UPSTREAM)

    # tunnel (after 101 Switching Protocols)

    def _switch_protocols(self, ex: Exchange, head: ResponseHead) -> None:
        ex.status = 101
        ex.response_started = True
        ex.tunnel = True
        ex.replay = None
        if ex.timer is not None:  # the route timeout covers the upgrade, not the tunnel's life
            ex.timer.cancel()
            ex.timer = None
        self.transport.write(exchange.switching_protocols_head(ex, head))  # type: ignore[union-attr]
        held, self._held = self._held, b""
        if held:  # the tunnel's first bytes, read with the upgrade request
            ex.request_bytes += len(held)
            self._forward(ex, held)
        self._resume_reading(PAUSE_UPGRADE)

    def on_upstream_upgraded(self, conn: HttpUpstream, data: bytes) -> None:
        ex = self.exchange
        if ex is None or ex.upstream is not conn or not ex.tunnel:
            self.on_upstream_reset(conn, errors.UPSTREAM_PROTOCOL_ERROR)
            return
        conn.tunnel = True
        if data:
            self.on_tunnel_data(data)

    def on_tunnel_data(self, data: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.response_bytes += len(data)
            self.transport.write(data)  # type: ignore[union-attr]

    def on_tunnel_eof(self, conn: HttpUpstream) -> bool | None:
        transport = self.transport
        assert transport is not None
        if transport.can_write_eof() and not self.closing:
            transport.write_eof()
            self._tunnel_eof(2)
            return True
        return None

    def _tunnel_eof(self, direction: int) -> None:
        """Once both directions ended with a half-close, nothing more can pass: close both."""
        self._tunnel_eofs |= direction
        ex = self.exchange
        if self._tunnel_eofs == 3 and ex is not None and ex.upstream is not None:
            self._drop_upstream(ex, abort=False)
            ex.close = True
            self._finish(ex, 101, "-")

    def on_tunnel_closed(self, conn: HttpUpstream) -> None:
        ex = self.exchange
        if ex is not None and ex.upstream is conn:
            ex.upstream = None
            self._resume_reading(PAUSE_UPSTREAM)
            ex.close = True
            self._finish(ex, 101, "-")

    # answers of the proxy's own

    def _reply(self, ex: Exchange, reply: LocalReply, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Answer the request in flight with a response of the proxy's own, and end it."""
        head = ex.head
        http10 = head is not None and head.http10
        close = not (ex.keep_alive and self.keep_alive and ex.request_complete) or self.state.draining
        body = reply.body
        if ex.extra_response is not None:  # a CORS request: Envoy's CORS filter marks local replies too
            headers = headers + exchange.local_reply_headers(ex)
        self.transport.write(errors.render(  # type: ignore[union-attr]
            reply.status, body, close=close, http10_keep_alive=http10 and not close, head_only=ex.head_only,
            headers=headers))
        ex.status = reply.status
        ex.response_started = True
        if not ex.head_only:
            ex.response_bytes = len(body)
        ex.close = close
        self._finish(ex, reply.status, reply.flags)

    def _malformed(self, reply: LocalReply, detail: str) -> None:
        """Bytes that are not a valid request: answer in turn, read nothing more, close after."""
        log.debug("malformed request from %s: %s", self.client_ip.decode(), detail)
        self._pause_reading(PAUSE_BROKEN)
        receiving = self.receiving
        if receiving is not None and not receiving.request_complete and not receiving.done:
            # the bad bytes are in this request's body
            if receiving is self.exchange:
                self._drop_upstream(receiving, abort=True)
                if receiving.response_started:
                    receiving.close = True
                    self._finish(receiving, receiving.status, reply.flags)
                else:
                    self._reply(receiving, reply)
                return
            self.queue.remove(receiving)
        decoder = self.decoder
        failed = Exchange(None, decoder.started if decoder.in_head else self.loop.time())
        failed.failure = reply  # answered with `connection: close` once the requests before it are
        if self.exchange is None and not self.queue:
            self.exchange = failed
            self._start(failed)
        else:
            self.queue.append(failed)

    def on_internal_error(self) -> None:
        """Last resort after an unexpected exception: answer 500 if nothing was sent yet, then close."""
        self.keep_alive = False
        self._pause_reading(PAUSE_BROKEN)
        self._up_out = None
        if self.closing:
            return
        ex = self.exchange
        if ex is None or ex.done:
            ex = self.exchange = Exchange(None, self.loop.time())
        self._drop_upstream(ex, abort=True)
        if ex.response_started:
            ex.close = True
            self._finish(ex, ex.status, "-")
        else:
            self._reply(ex, errors.INTERNAL_ERROR)
