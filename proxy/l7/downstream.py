"""Downstream HTTP/1.x connections: parse each request, route it, stream it to an upstream endpoint and
stream the response back. One `HttpDownstream` per accepted connection, one `Exchange` per request.

Theory of operation:
- Requests are answered one at a time, in order. A pipelined request that arrives while another is in
  flight is queued with the body bytes that came with it, and reading pauses until it can start.
- A request reads `state.snapshot` once, when its head is complete, and keeps what it chose from it
  (listener, route, cluster, endpoint) to the end; the next request on the connection reads it again.
- Bodies stream both ways and are never held whole. Flow control: the upstream transport's
  `pause_writing` pauses reading the downstream and the downstream transport's pauses reading the
  upstream. Bytes that arrive while an upstream connection is being opened are held up to BUFFER_LIMIT,
  then reading pauses. Reading pauses for several reasons at once (a bit each, pausing.py); it resumes
  when none is left.
- The class is composed of mixins, one concern each: `Forwarding` (forwarding.py) opens or takes a
  pooled upstream connection and writes the request to it; `Responses` (responses.py) relays the
  upstream's response or tunnel and sends the proxy's own answers; `Attempts` (attempts.py) decides
  retries. This module keeps the connection's life: reading and queueing requests, routing, ending
  each request, closing, timeouts.
- The route's retry policy (on a response status, reset or per-try timeout), outlier-detection reports
  and circuit-breaker slots are the `Attempts` mixin's (attempts.py): hooks here run only when the route
  or cluster configures them. Failed connects are retried in `Forwarding`, out of the same retry budget.
- `Expect: 100-continue` is answered by the proxy (Envoy's default): `100 Continue` goes to the client
  once the request is routed to an endpoint, and the Expect header is not forwarded. A request answered
  by the proxy before its body arrived (404, 503, ...) gets `connection: close` instead.
- Upgrade (WebSocket): the request is forwarded with `Connection: upgrade`. Bytes after its head are held,
  and reading pauses, until the upstream answers: after a 101 they are sent and both connections become a
  raw byte tunnel (EOF relayed as half-close); after any other answer they are parsed as the next request
  and routed like one. An upstream connection that carried an upgrade attempt is never pooled.
- Nothing a peer sends raises out of a callback: a malformed request gets Envoy's 4xx/5xx (flag DPE)
  and the connection closes once the requests before it are answered.
- Timeouts: an idle keep-alive connection closes after `idle_timeout`; a request head that takes longer
  than `request_headers_timeout` gets 408. Both are checked by the shared `Watchdog` (one timer for
  every connection, see watchdog.py); the route timeout (Istio `timeout`) runs from the end of the
  request, as in Envoy.
- Fault injection (the route's `fault`): an abort is a local reply (flag FI); a delay is a timer in
  `ex.timer` (no task), during which request bytes are held as for a connect. A client that leaves
  during the delay ends the request with DC and nothing is sent upstream. A delayed request's flags get DI.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy.l7 import errors, exchange
from proxy.l7.attempts import Attempts
from proxy.l7.codec import CONTINUE, CRLF, LAST_CHUNK, CodecError, RequestDecoder, RequestHead, chunk_size_line
from proxy.l7.exchange import Exchange
from proxy.l7.forwarding import Forwarding
from proxy.l7.pausing import PAUSE_BROKEN, PAUSE_BUFFER, PAUSE_QUEUED, PAUSE_UPGRADE
from proxy.l7.responses import Responses
from proxy.upstream import outlier

if TYPE_CHECKING:
    from proxy.routing.snapshot import HttpListener
    from proxy.state import ServerState

log = logging.getLogger("shiftproxy.http")

IDLE_TIMEOUT = 300.0  # seconds a keep-alive connection may wait for its next request
REQUEST_HEADERS_TIMEOUT = 60.0  # seconds from a request's first byte to the end of its head
# After answering a request that was not read to its end, the connection is half-closed and what the
# client still sends is read and dropped for this long: closing with unread bytes would reset the
# connection and the client could lose the answer (a "lingering close", as in nginx).
LINGER = 2.0


class HttpDownstream(Attempts, Forwarding, Responses, asyncio.Protocol):
    __slots__ = (
        "listener_name", "state", "loop", "transport", "listener", "client_ip", "decoder",
        "idle_timeout", "headers_timeout",
        "exchange", "receiving", "queue", "keep_alive", "closing",
        "_upgrading", "_read_paused", "_write_paused", "_starting", "_peer_eof", "_tunnel_eofs",
        "_feeding", "_up_out", "out",
        "_idle_since",
        "_fresh",
        "_held",
    )

    def __init__(self, listener_name: str, state: ServerState, idle_timeout: float = IDLE_TIMEOUT,
                 request_headers_timeout: float = REQUEST_HEADERS_TIMEOUT) -> None:
        self.listener_name = listener_name
        self.state = state
        self.loop = state.loop or asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        # kept so a connection whose listener vanished in a reload still serves its requests
        self.listener: HttpListener | None = state.snapshot.http_listeners.get(listener_name)
        self.client_ip = b""
        # made on the connection's first byte (data_received); None again while it idles between requests
        # (see check_timeouts and _finish)
        self.decoder: RequestDecoder | None = None
        self.idle_timeout = idle_timeout
        self.headers_timeout = request_headers_timeout
        # per-connection state
        self.exchange: Exchange | None = None  # the request being answered
        self.receiving: Exchange | None = None  # the request whose bytes are being parsed
        # pipelined requests waiting their turn: a list, as an empty deque holds a 64-slot block (~600 bytes)
        self.queue: list[Exchange] = []
        self.keep_alive = True  # False once shutting down: close after the response in flight
        self.closing = False
        self._upgrading: Exchange | None = None  # bytes after an Upgrade head are raw, for this request
        self._held = b""  # bytes after an upgrade request's head, until the upstream's answer
        self._read_paused = 0
        self._write_paused = False
        self._starting = False
        self._peer_eof = False
        self._tunnel_eofs = 0  # which directions of a tunnel have ended (1: downstream, 2: upstream)
        # Writes made while one read is processed are gathered and written together after it: a small
        # request or response costs one send instead of two or three (head, body, last chunk).
        self._feeding = False
        self._up_out: list[bytes] | None = None  # for the request's upstream, while a downstream read
        # for the client, from a response head to the end of the upstream read (HttpUpstream flushes it)
        self.out: list[bytes] | None = None
        self._idle_since = 0.0
        self._fresh = True  # no response finished yet

    def shutdown(self) -> None:
        """Graceful drain: close now if idle, else after the response in flight (`connection: close`)."""
        self.keep_alive = False
        if not self.closing and self.exchange is None and not self.queue:
            self._close()

    # asyncio.Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:  # (host, port[, flowinfo, scope_id]); None for a socket already reset
            self.client_ip = peer[0].encode()
        state = self.state
        state.connections.add(self)
        state.metrics.downstream_active += 1
        if state.draining:
            self.keep_alive = False
        self._idle_since = self.loop.time()
        state.http_watchdog.watch(self, self.loop, min(self.idle_timeout, self.headers_timeout))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        state = self.state
        state.connections.discard(self)
        state.metrics.downstream_active -= 1
        state.http_watchdog.unwatch(self)
        self.queue.clear()
        if not self._feeding:  # (a stub transport may report its close from inside a read)
            self._drop_decoder()
        ex = self.exchange
        if ex is not None and not ex.done:
            self._drop_upstream(ex, abort=not ex.tunnel)  # a tunnel's upstream still gets what was sent
            if ex.tunnel:
                self._finish(ex, 101, "-")
            else:  # the client left before its response was complete (Envoy: code 0 if none started)
                self._finish(ex, ex.status if ex.response_started else 0, "DC")

    def data_received(self, data: bytes) -> None:
        if self.closing or self._read_paused & PAUSE_BROKEN:
            return
        upgrading = self._upgrading
        if upgrading is not None:
            if upgrading.tunnel:
                upgrading.request_bytes += len(data)
                self._forward(upgrading, data)
            else:  # read before pausing took effect: held with the rest
                self._held += data
            return
        decoder = self.decoder
        if decoder is None:
            decoder = self.decoder = RequestDecoder(self, clock=self.loop.time)
        self._feeding = True
        try:
            offset = decoder.feed(data)
        except CodecError as exc:
            self._feeding = False
            self._flush_upstream()
            self._malformed(errors.protocol_error(exc.status), str(exc))
            return
        except Exception:
            self._feeding = False
            log.exception("error handling a downstream request")
            self.on_internal_error()
            return
        self._feeding = False
        out = self._up_out
        if out is not None:
            ex = self.exchange
            if len(out) == 1 and ex is not None and ex.upstream is not None and ex.upstream.is_open:
                # a request without body, as _flush_upstream() would send it (uvloop's shorter write)
                self._up_out = None
                ex.upstream.transport.write(out[0])  # type: ignore[union-attr]
            else:
                self._flush_upstream()
        if offset is not None and not self.closing:
            ex = self.receiving
            if ex is not None and ex.head is not None and ex.head.upgrade is not None:
                # nothing after an upgrade request's head goes upstream before its 101
                decoder.restart()
                if not ex.done:
                    self._upgrading = ex
                    self._held = data[offset:]
                    self._pause_reading(PAUSE_UPGRADE)
                elif offset < len(data):  # already answered (refused, no route): the next request
                    self.data_received(data[offset:])
            else:  # CONNECT: nothing after it is HTTP we can read
                self.keep_alive = False
                self._pause_reading(PAUSE_BROKEN)

    def eof_received(self) -> bool | None:
        ex = self.exchange
        if ex is not None and not ex.done:
            upstream = ex.upstream
            if ex.tunnel and upstream is not None:
                if upstream.transport.can_write_eof():  # type: ignore[union-attr]
                    upstream.transport.write_eof()  # type: ignore[union-attr]
                    self._tunnel_eof(1)
                    return True
                return None
            receiving = self.receiving
            if receiving is None or receiving.request_complete:
                self._peer_eof = True  # answer what was received, then close
                return True
        return None  # close; connection_lost records a request cut short as DC

    def pause_writing(self) -> None:
        self._write_paused = True
        ex = self.exchange
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        ex = self.exchange
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume_reading()

    # RequestDecoder handler interface

    def on_request_head(self, head: RequestHead) -> None:
        if self.closing:
            return
        ex = Exchange(head, self.decoder.started)
        self.receiving = ex
        if self.exchange is None and not self.queue:
            self.exchange = ex
            self._start(ex)  # (not inlined: a captured connection's subclass routes its own way)
        else:
            self.queue.append(ex)
            self._pause_reading(PAUSE_QUEUED)

    def on_request_body(self, data: bytes) -> None:
        ex = self.receiving
        if ex is None:
            return
        size = len(data)
        ex.request_bytes += size
        if ex.mirror is not None:  # the route mirrors requests: the copies get the body too
            ex.mirror.body(data)
        if not ex.head.chunked:  # type: ignore[union-attr]
            self._forward(ex, data)
            return
        upstream = ex.upstream
        if upstream is not None:
            pieces = (chunk_size_line(size), data, CRLF)
            if self._up_out is not None:
                self._up_out += pieces
            else:
                upstream.transport.writelines(pieces)  # type: ignore[union-attr]
            if ex.replay is not None:
                self._keep_for_replay(ex, b"".join(pieces))
        elif not ex.done:
            self._hold(ex, chunk_size_line(size))
            self._hold(ex, data)
            self._hold(ex, CRLF)

    def request_body_bytes(self) -> int:
        ex = self.receiving
        return ex.request_bytes if ex is not None else 0

    def on_request_complete(self) -> None:
        ex = self.receiving
        if ex is None or ex.request_complete:
            return
        ex.request_complete = True
        if ex.mirror is not None:
            ex.mirror.complete()
        if ex.head.chunked:  # type: ignore[union-attr]
            self._forward(ex, LAST_CHUNK)
        if ex is self.exchange and not ex.done and ex.endpoint is not None:
            self._arm_route_timeout(ex)
            if ex.upstream is not None and ex.route.retry is not None:  # type: ignore[union-attr]
                self._arm_try_timeout(ex)

    # routing

    def _start(self, ex: Exchange) -> None:
        """Route the request at the front of the line and send it on its way (or answer it)."""
        if ex.failure is not None:
            self._reply(ex, ex.failure)
            return
        state = self.state
        listener = state.snapshot.http_listeners.get(self.listener_name)
        if listener is None:
            listener = self.listener
        else:
            self.listener = listener
        answer = exchange.route(ex, listener, state, self.client_ip, self.transport)
        if ex.delay is not None:  # the route's fault delays it: the rest runs when the delay is over
            ex.timer = self.loop.call_later(ex.delay, self._end_delay, ex, answer)
            return
        self._dispatch(ex, answer)

    def _end_delay(self, ex: Exchange, answer: exchange.Answer | None) -> None:
        ex.timer = None
        if ex is not self.exchange or ex.done or self.closing:
            return
        try:
            self._dispatch(ex, answer)
        except Exception:
            log.exception("error sending a delayed request")
            self.on_internal_error()

    def _dispatch(self, ex: Exchange, answer: exchange.Answer | None) -> None:
        """Answer the routed request locally, or send it to its endpoint."""
        if answer is not None:
            self._reply(ex, *answer)
            return
        endpoint = ex.endpoint
        assert endpoint is not None
        state = self.state
        manager = state.cluster_manager
        assert ex.cluster is not None
        # counted only among several endpoints (request_started() says so too, from one more frame)
        ex.counted = len(ex.cluster.endpoints) > 1 and manager.request_started(ex.cluster, endpoint)
        head = ex.head
        if head.expect_continue and not ex.request_complete and not head.http10:  # type: ignore[union-attr]
            self.transport.write(CONTINUE)  # type: ignore[union-attr]
        if ex.request_complete and ex.route.timeout is not None:  # type: ignore[union-attr]
            self._arm_route_timeout(ex)
        if ex.cluster.limits is not None and not self._take_slot(ex):
            return  # waits for a connection slot, or answered 503 UO
        pool = manager.pools.get(endpoint.key)  # manager.pool_for(endpoint), its usual case inlined
        if pool is None:
            pool = manager.pool_for(endpoint)
        conn = pool.acquire()
        if conn is not None:
            state.metrics.pool_hits += 1
            ex.reused = True
            self._attach(ex, conn)
        else:
            state.metrics.pool_misses += 1
            ex.connect_task = self.loop.create_task(self._connect(ex, pool))

    # answers and ends

    def _finish(self, ex: Exchange, code: int, flags: str) -> None:
        """Account for a request that ended, then start the next one or close."""
        ex.done = True
        if self.out is not None:
            self._flush()
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = None
        if ex.connect_task is not None:
            ex.connect_task.cancel()
            ex.connect_task = None
        state = self.state
        if ex.counted:
            ex.counted = False
            state.cluster_manager.request_finished(ex.cluster, ex.endpoint)  # type: ignore[arg-type]
        if ex.resil is not None:
            flags = self._end_attempts(ex, flags)
        if ex.delay is not None:
            flags = errors.with_delay(flags)
        now = self.loop.time()
        duration_ms = (now - ex.start) * 1000.0
        state.metrics.http_request(ex.cluster, ex.endpoint, code, flags, duration_ms, ex.request_bytes,
                                   ex.response_bytes)
        if state.access_log.enabled:
            exchange.log(state.access_log, ex, code, flags, duration_ms)
        if self.exchange is ex:
            self.exchange = None
        if self.receiving is ex and ex.request_complete and (ex.head is None or ex.head.upgrade is None):
            self.receiving = None  # an idle keep-alive connection holds nothing of its last request
        held = None
        if self._upgrading is ex:  # refused or ended: what followed its head is the next request
            self._upgrading = None
            held, self._held = self._held, b""
        if self.closing:
            return
        if ex.close or not self.keep_alive or not ex.request_complete:
            self._close(linger=not ex.request_complete or bool(self._read_paused & (PAUSE_BROKEN | PAUSE_UPGRADE)))
            return
        self._idle_since = now
        if self._fresh:
            self._fresh = False
            decoder = self.decoder
            if (decoder is not None and not decoder.in_head and not self._feeding and held is None and not self.queue
                    and self.receiving is None):
                # Most idle keep-alive connections go quiet after their first request (preconnects, probes,
                # a client pool's spare connection): this one gives up its decoder now rather than at the next
                # watchdog tick, which keeps a burst of new connections small; one that comes back pays for
                # a new decoder once.
                self._drop_decoder()
        if self._read_paused & PAUSE_BUFFER:
            self._resume_reading(PAUSE_BUFFER)
        if self.queue:
            self._run_queue()
        if held is not None:
            self._resume_reading(PAUSE_UPGRADE)
            if held:
                self.data_received(held)
                return
        if self._peer_eof and self.exchange is None and not self.queue:
            self._close()

    def _run_queue(self) -> None:
        if self._starting:  # a request started below ended at once: the loop here goes on
            return
        self._starting = True
        try:
            while self.exchange is None and self.queue and not self.closing:
                ex = self.queue.pop(0)
                self.exchange = ex
                self._start(ex)
        finally:
            self._starting = False
        if not self.queue:
            self._resume_reading(PAUSE_QUEUED)

    def _close(self, linger: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        self.queue.clear()
        transport = self.transport
        assert transport is not None
        if linger and transport.can_write_eof():
            transport.write_eof()  # FIN after the buffered response
            transport.resume_reading()  # data_received drops everything now
            self.loop.call_later(LINGER, transport.close)
        else:
            transport.close()  # after the buffered response is sent

    # flow control and timers

    def _pause_reading(self, reason: int) -> None:
        if not self._read_paused and not self.closing:
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._read_paused |= reason

    def _resume_reading(self, reason: int) -> None:
        if self._read_paused & reason:
            self._read_paused &= ~reason
            if not self._read_paused and not self.closing:
                self.transport.resume_reading()  # type: ignore[union-attr]

    def _arm_route_timeout(self, ex: Exchange) -> None:
        timeout = ex.route.timeout if ex.route is not None else None
        if timeout is not None and ex.timer is None:
            ex.timer = self.loop.call_later(timeout, self._on_route_timeout, ex)

    def _on_route_timeout(self, ex: Exchange) -> None:
        ex.timer = None
        if ex is not self.exchange or ex.done:
            return
        cluster = ex.cluster
        if cluster is not None and cluster.outlier is not None and ex.upstream is not None and \
                not ex.response_started:  # the try in flight timed out (Envoy reports it to outlier detection)
            self.state.cluster_manager.outlier_report(cluster, ex.endpoint, outlier.TIMEOUT)  # type: ignore[arg-type]
        self._drop_upstream(ex, abort=True)
        if ex.response_started:
            ex.close = True
            self._finish(ex, ex.status, errors.UPSTREAM_TIMEOUT.flags)
        else:
            self._reply(ex, errors.UPSTREAM_TIMEOUT)

    def check_timeouts(self, now: float) -> None:
        """Called by the shared watchdog: close an idle keep-alive connection; answer 408 to a request
        head that takes too long."""
        if self.closing or self.exchange is not None or self.queue:
            return  # a request in flight has its route timeout instead
        decoder = self.decoder
        if decoder is not None and decoder.in_head:
            if now - decoder.started >= self.headers_timeout:
                self._request_header_timeout()
        elif now - self._idle_since >= self.idle_timeout:
            self._close()
        elif decoder is not None and self.receiving is None and self._upgrading is None:
            # Idle between requests: the decoder and its llhttp parser (about 1.3 KiB) are dropped and made
            # again on the next byte, so thousands of idle keep-alive connections hold only their protocol
            # object. A busy connection loses them at most once per watchdog tick.
            self._drop_decoder()

    def _drop_decoder(self) -> None:
        decoder, self.decoder = self.decoder, None
        if decoder is not None:
            decoder.release()

    def _request_header_timeout(self) -> None:
        self.keep_alive = False
        self._pause_reading(PAUSE_BROKEN)
        ex = Exchange(None, self.decoder.started)
        ex.failure = errors.REQUEST_HEADER_TIMEOUT
        self.exchange = ex
        self._start(ex)
