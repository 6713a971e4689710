"""The upstream side of a downstream HTTP request: open (or take from the pool) a connection to the
chosen endpoint, write the request's bytes to it, hold them while no connection is ready and keep them
for a resend. A mixin of `HttpDownstream` (downstream.py).

Theory of operation:
- A pooled connection is used synchronously; only opening a new one runs a task. A pooled connection
  that turns out closed before any response byte is replaced once by a fresh one, if every request byte
  written to it is still at hand (at most REPLAY_LIMIT bytes are kept for that).
- Bytes that arrive while an upstream connection is being opened are held up to BUFFER_LIMIT, then
  reading the downstream pauses.
- Failed connects are retried here (the route's `connect_retries`), out of the request's retry budget.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy.l7 import errors, exchange, retry
from proxy.l7.pausing import PAUSE_BUFFER, PAUSE_UPSTREAM
from proxy.l7.upstream import HttpUpstream
from proxy.tls import upstream as tls
from proxy.upstream import keepalive, outlier

if TYPE_CHECKING:
    from proxy.l7.exchange import Exchange
    from proxy.routing.snapshot import Cluster, Endpoint
    from proxy.upstream.pool import EndpointPool

log = logging.getLogger("shiftproxy.http")

BUFFER_LIMIT = 64 * 1024  # request body bytes held while no upstream connection is ready
REPLAY_LIMIT = 64 * 1024  # request bytes kept to resend once if a pooled connection was stale


class Forwarding:
    """Mixed into HttpDownstream: uses its `state`, `loop`, `exchange`, `_feeding`, `_up_out`,
    `_write_paused` and its methods `_reply`, `_pause_reading`, `_resume_reading` and the `Attempts` hooks."""

    __slots__ = ()

    async def _connect(self, ex: Exchange, pool: EndpointPool[HttpUpstream]) -> None:
        """Open an upstream connection and attach it. A failed connect is retried (the route's
        `connect_retries`, Istio's default 2, out of the request's retry budget) on another endpoint
        when there is one, after Envoy's jittered back-off; nothing has been sent yet, so this is
        always safe."""
        endpoint, cluster = ex.endpoint, ex.cluster
        assert endpoint is not None and cluster is not None
        metrics = self.state.metrics
        route = ex.route
        retries = route.connect_retries if route is not None else 0
        policy = route.retry if route is not None else None
        while True:
            try:
                async with asyncio.timeout(cluster.connect_timeout):
                    _, conn = await tls.connect(self.loop, lambda p=pool: HttpUpstream(p, metrics),
                                                endpoint.address, endpoint.port, cluster.tls)
            except TimeoutError:
                failure = errors.CONNECT_TIMEOUT
            except (OSError, ValueError) as exc:  # refused, unreachable, DNS failure, bad address
                log.debug("connect to %s:%d failed: %s", endpoint.address, endpoint.port, exc)
                failure = errors.CONNECT_FAILURE
            else:
                if ex.connect_task is None or self.exchange is not ex or ex.done:
                    conn.close()  # the request ended while connecting
                    return
                ex.connect_task = None
                conn.opened = self.loop.time()
                if cluster.outlier is not None:
                    self.state.cluster_manager.outlier_report(cluster, endpoint, outlier.CONNECTED)
                if cluster.tcp_keepalive is not None:
                    keepalive.apply(conn.transport, cluster.tcp_keepalive)
                try:
                    self._attach(ex, conn)
                except Exception:
                    log.exception("error sending a request upstream")
                    self._drop_upstream(ex, abort=True)
                    self._reply(ex, errors.INTERNAL_ERROR)
                return
            if cluster.outlier is not None:
                self.state.cluster_manager.outlier_report(cluster, endpoint, outlier.CONNECT_FAILED)
            empty = self.state.cluster_manager.connect_failed(cluster, endpoint)
            if self.exchange is not ex or ex.done:
                return
            if not retries or not self._may_retry(ex, retries):
                break
            await asyncio.sleep(retry.backoff_seconds(policy.backoff_base if policy is not None else 0.025,
                                                      ex.retries, self.state.rng.random()))
            if self.exchange is not ex or ex.done:
                return
            if empty and exchange.reroute_empty(ex, self.state, endpoint):  # its share goes to another destination
                cluster, endpoint = ex.cluster, ex.endpoint  # type: ignore[assignment]
            else:
                endpoint = self._other_endpoint(ex, cluster, endpoint, ex.resil.tried if ex.resil else None)
            ex.out_head = exchange.attempt_head(ex.out_head, ex.retries + 1)
            pool = self.state.cluster_manager.pool_for(endpoint)
            conn = pool.acquire()
            if conn is not None:  # the new endpoint has an idle connection ready
                ex.connect_task = None
                ex.reused = True
                self._attach(ex, conn)
                return
        ex.connect_task = None
        self._reply(ex, failure)

    def _other_endpoint(self, ex: Exchange, cluster: Cluster, previous: Endpoint,
                        tried: set[tuple[str, int]] | None = None) -> Endpoint:
        """An endpoint other than `previous` (and those `tried`) if the balancer offers one in 5 tries
        (Envoy's previous-hosts predicate and host-selection retries), else `previous` again;
        active-request counts follow the move."""
        manager = self.state.cluster_manager
        chosen = previous
        for _ in range(5):
            candidate = manager.choose_endpoint(cluster)
            if candidate is not None and candidate.key != previous.key and (not tried or candidate.key not in tried):
                chosen = candidate
                break
        if chosen is not previous:
            if ex.counted:
                manager.request_finished(cluster, previous)
                manager.request_started(cluster, chosen)
            ex.endpoint = chosen
        return chosen

    def _attach(self, ex: Exchange, conn: HttpUpstream) -> None:
        """Bind an open upstream connection to the request in flight and write what is ready."""
        ex.upstream = conn
        conn.downstream = self  # conn.bind(), inlined: this runs once per request
        decoder = conn.decoder
        decoder.head_request = ex.head_only
        decoder.raw_ok = not ex.response_ops and ex.extra_response is None  # nothing reads its fields
        conn.requests += 1
        if self._write_paused:
            conn.pause_reading()
        transport = conn.transport
        assert transport is not None
        pending = ex.pending
        if pending is None:
            if self._feeding:  # the body may follow in this same read: one send for both
                self._up_out = [ex.out_head]
            else:
                transport.write(ex.out_head)
            if ex.reused or ex.route.retry is not None:  # type: ignore[union-attr]
                ex.replay = [ex.out_head]
                ex.replay_size = len(ex.out_head)
                if ex.request_complete and ex.route.retry is not None:  # type: ignore[union-attr]
                    self._arm_try_timeout(ex)
            return
        ex.pending = None
        if self._feeding:
            self._up_out = [ex.out_head, *pending]
        else:
            transport.writelines([ex.out_head, *pending])
        if (ex.reused or ex.route.retry is not None) and ex.pending_size <= REPLAY_LIMIT:  # type: ignore[union-attr]
            ex.replay = [ex.out_head, *pending]
            ex.replay_size = len(ex.out_head) + ex.pending_size
        ex.pending_size = 0
        if ex.request_complete and ex.route.retry is not None:  # type: ignore[union-attr]
            self._arm_try_timeout(ex)
        self._resume_reading(PAUSE_BUFFER)

    def _forward(self, ex: Exchange, data: bytes) -> None:
        """Request bytes (framed already) to the upstream, or held until it is attached."""
        upstream = ex.upstream
        if upstream is not None:
            if self._up_out is not None:
                self._up_out.append(data)
            else:
                upstream.transport.write(data)  # type: ignore[union-attr]
            if ex.replay is not None:
                self._keep_for_replay(ex, data)
        elif not ex.done:
            self._hold(ex, data)

    def _hold(self, ex: Exchange, data: bytes) -> None:
        pending = ex.pending
        if pending is None:
            pending = ex.pending = []
        pending.append(data)
        ex.pending_size += len(data)
        if ex.pending_size > BUFFER_LIMIT:
            self._pause_reading(PAUSE_BUFFER)

    def _keep_for_replay(self, ex: Exchange, data: bytes) -> None:
        ex.replay_size += len(data)
        if ex.replay_size > REPLAY_LIMIT:
            ex.replay = None  # too much to keep: a stale connection now fails the request (503 UC)
        else:
            ex.replay.append(data)  # type: ignore[union-attr]

    def _flush_upstream(self) -> None:
        out, self._up_out = self._up_out, None
        ex = self.exchange
        if out and ex is not None and ex.upstream is not None and ex.upstream.is_open:
            if len(out) == 1:  # a request without body: write() is uvloop's shorter path
                ex.upstream.transport.write(out[0])  # type: ignore[union-attr]
            else:
                ex.upstream.transport.writelines(out)  # type: ignore[union-attr]

    def _drop_upstream(self, ex: Exchange, abort: bool) -> None:
        self._up_out = None
        conn = ex.upstream
        if conn is not None:
            ex.upstream = None
            conn.close(abort=abort)
        if ex.connect_task is not None:
            ex.connect_task.cancel()
            ex.connect_task = None
        self._resume_reading(PAUSE_UPSTREAM)

    def _retry(self, ex: Exchange) -> None:
        """The reused connection was stale: send the same bytes once more, on a fresh connection."""
        replay = ex.replay
        assert replay is not None and ex.endpoint is not None
        ex.replay = None
        ex.retried = True
        ex.reused = False
        ex.pending = replay[1:]  # replay[0] is out_head, written again by _attach
        ex.pending_size = ex.replay_size - len(replay[0])
        self.state.metrics.pool_misses += 1
        pool = self.state.cluster_manager.pool_for(ex.endpoint)
        ex.connect_task = self.loop.create_task(self._connect(ex, pool))
