"""TCP proxy (Envoy's `tcp_proxy`): one weighted pick per downstream connection, then a byte relay.

`TcpDownstream` reads `state.snapshot` once in `connection_made`, matches the listener's TCP routes
against the connection's destination (local) address, picks a weighted destination, chooses an endpoint
and connects to it. Every byte of the connection then goes to that endpoint, whatever later reloads do,
unless the route opts into drain-on-shift (proxy.l4.lifecycle, with what reloads and shutdown do).

Failures close the downstream with Envoy's response flag: NR (no route), NC (the destination's cluster
does not exist), UH (no endpoint), UF (connect refused, failed or timed out: Envoy's tcp_proxy sets
UF for a connect timeout as well, not UT), DC (the downstream left while the upstream was connecting),
UO (over the cluster's `connectionPool` limits: maxConnections reached and http1MaxPendingRequests
connections already waiting for one).

Invariants:
- memory per connection is bounded: a full write buffer on one side pauses reading on the other, and
  bytes that arrive before the upstream is connected (uvloop can deliver a read after `pause_reading()`
  in `connection_made`) are held only while reading stays paused;
- half-close is relayed: EOF from one side becomes `write_eof()` on the other; the connection closes
  once both directions are done or when either side closes (the other is closed after its buffer drains);
- the hot path only adds to plain ints. Counts reach `Metrics` at close and from the connection's one
  timer (proxy.l4.timers; what it does: proxy.l4.ticks), which also enforces the connect timeout and
  the idle timeout, so traffic never reschedules a timer;
- a feature costs a connection nothing when not configured: no listener address look-up without a
  destination-subnet match, no balancer for a one-endpoint cluster, no source-address formatting
  without hashing or an access log. The upstream connect is proxy.l4.connect.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from proxy.l4 import shifting, ticks
from proxy.l4.connect import TcpUpstream
from proxy.routing.snapshot import Cluster, Endpoint, Snapshot, TcpRoute
from proxy.upstream import keepalive, outlier
from proxy.upstream.hashing import hash64

if TYPE_CHECKING:
    from proxy.admin.metrics import _TcpStats
    from proxy.state import ServerState
    from proxy.upstream.circuit_breaker import CircuitBreaker


class TcpDownstream(asyncio.Protocol):
    """One downstream connection and the relay to the upstream endpoint it was given."""

    transport: asyncio.Transport | None
    _started: float
    _interval: float
    _connect_left: float

    __slots__ = (
        "listener_name", "state", "loop", "transport",
        "version", "route", "cluster_name", "cluster", "endpoint", "_destination_ip", "_peer",
        "flags", "on_old_config", "counted",
        "_up", "_connect", "_connecting", "_early",
        "_down_eof", "_up_eof", "_down_lost", "_up_paused", "_closing", "_finished", "_closed_waiter",
        "received", "sent", "_received_reported", "_sent_reported", "_stats", "_started",
        "_timer", "_interval", "_idle_timeout", "_connect_left", "_mark", "_last_active", "_next_report",
        "_drain_timer",
        "_breaker", "_queued", "_life_timer",
    )

    def __init__(self, listener_name: str, state: ServerState) -> None:
        self.listener_name = listener_name
        self.state = state
        self.loop = state.loop or asyncio.get_running_loop()
        # set before anything reads them: `transport`, `_peer` and `_started` in connection_made;
        # `_interval` and `_connect_left` (of the connect timeout, after the timer's current period) in
        # _start_connect
        # chosen once at connect time and kept for the connection's life
        self.version = 0
        self.route: TcpRoute | None = None
        self.cluster_name = ""
        self.cluster: Cluster | None = None
        self.counted = False  # in the cluster's active counts (LEAST_REQUEST among several endpoints)
        self.endpoint: Endpoint | None = None
        self._destination_ip: str | None = None  # read when a route needs it (`destination_ip`)
        self.flags = "-"
        self.on_old_config = False  # counted in metrics.connections_on_old_config
        # upstream side
        self._up: asyncio.Transport | None = None
        self._connect: TcpUpstream | None = None  # while connecting
        self._connecting = False
        self._early: bytes | None = None  # read before the upstream is connected
        # half-close, flow control and lifecycle
        self._down_eof = False
        self._up_eof = False
        self._down_lost = False
        self._up_paused = False  # the upstream write buffer is full: downstream reading is paused
        self._closing = False
        self._finished = False
        self._closed_waiter: asyncio.Future[None] | None = None
        # accounting: `received`/`sent` are bytes not yet reported to the stats
        self.received = 0  # from the downstream
        self.sent = 0  # to the downstream
        self._received_reported = 0
        self._sent_reported = 0
        self._stats: _TcpStats | None = None
        # the reporting / idle timer
        self._timer: list[object] | None = None  # an entry of state.tcp_timers
        self._idle_timeout: float | None = None
        self._mark: tuple[int, int, int] = (0, 0, 0)
        self._last_active = 0.0
        self._next_report = 0.0
        self._drain_timer: asyncio.TimerHandle | None = None
        # DestinationRule connectionPool: the circuit breaker holding this connection's slot, and the
        # timer of tcp.maxConnectionDuration
        self._breaker: CircuitBreaker | None = None
        self._queued: CircuitBreaker | None = None  # waiting in its pending queue for a connection slot
        self._life_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol interface (downstream side) ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        state = self.state
        state.connections.add(self)
        state.metrics.downstream_active += 1
        self._started = self.loop.time()
        # the downstream's (address, port), kept for the access log: a TLS transport forgets it at close
        self._peer = transport.get_extra_info("peername") if state.access_log.enabled else None
        self.route_connection(state.snapshot)

    @property
    def peer(self) -> tuple[str, int] | None:
        """The downstream's (address, port), when known."""
        if self._peer is not None:
            return self._peer
        transport = self.transport
        return transport.get_extra_info("peername") if transport is not None else None

    @property
    def source_ip(self) -> str:
        """The downstream's address (for source-IP hashing), or "" when unknown."""
        peer = self.peer
        return peer[0] if peer else ""

    @property
    def destination_ip(self) -> str:
        """The local address the connection was accepted on, for routes that match destination subnets."""
        ip = self._destination_ip
        if ip is None:
            transport = self.transport
            local = transport.get_extra_info("sockname") if transport is not None else None
            ip = self._destination_ip = local[0] if local else ""
        return ip

    def route_connection(self, snapshot: Snapshot) -> None:
        """Pick the route, destination and endpoint, and start connecting (at accept; after the
        ClientHello for SNI routing)."""
        state = self.state
        transport = self.transport
        assert transport is not None
        self.version = snapshot.version
        route = self.find_route(snapshot)
        destinations = route.destinations.destinations if route is not None else None
        if not destinations:
            self._fail("NR", None, None)
            return
        self.route = route
        # sticky, never an empty destination (shifting); nothing to pick among one
        destination = destinations[0] if len(destinations) == 1 else shifting.pick(self, route)  # type: ignore[arg-type]
        self.cluster_name = destination.cluster_name
        cluster = destination.cluster
        if cluster is None:
            self._fail("NC", None, None)
            return
        self.cluster = cluster
        endpoint = self.choose_endpoint(cluster)
        if endpoint is None:
            self._fail("UH", cluster, None)
            return
        self.endpoint = endpoint
        if cluster.limits is not None:
            # over tcp.maxConnections the connection waits for a slot, reading paused, as in Envoy's TCP
            # pool (at most http1MaxPendingRequests wait); past the limits it is closed, flag UO
            breaker = state.cluster_manager.breaker(cluster)
            taken = breaker.acquire(self._slot_granted)
            if taken is False:
                self._fail("UO", cluster, endpoint)
                return
            if taken:
                self._breaker = breaker
            else:
                self._queued = breaker
        if len(cluster.endpoints) > 1:  # LEAST_REQUEST counts (nothing to count with one endpoint)
            self.counted = state.cluster_manager.request_started(cluster, endpoint)
        self._connecting = True
        if self._queued is None:
            transport.pause_reading()
            self._start_connect(cluster, endpoint)
        # else: reading stays on while queued, so a client that gives up is noticed (its first bytes
        # pause it, as during a connect)

    def _slot_granted(self) -> None:
        """A connection slot of the cluster is ours now (counted already): connect."""
        self._breaker, self._queued = self._queued, None
        self._start_connect(self.cluster, self.endpoint)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        up = self._up
        if up is not None:
            up.write(data)
        elif self._connecting:
            early = self._early
            self._early = data if early is None else early + data  # rarely twice: reading is paused now
            self.transport.pause_reading()  # type: ignore[union-attr]
        # else: the connection is failing or closing; the bytes have nowhere to go

    def eof_received(self) -> bool:
        self._down_eof = True
        up = self._up
        if self._up_eof or (up is None and not self._connecting):
            self.close()  # both directions done: closing sends the FIN a write_eof would (one system call less)
        elif up is not None and not up.is_closing():
            up.write_eof()
        # keep the transport open: the other direction may still be carrying the reply
        return True

    def pause_writing(self) -> None:
        if self._up is not None:
            self._up.pause_reading()

    def resume_writing(self) -> None:
        if self._up is not None and not self._up_eof:
            self._up.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._down_lost = True
        self._closing = True
        self.state.metrics.downstream_active -= 1
        if self._up is not None:
            self._up.close()  # after what is buffered for it has been written (Envoy's drainer)
        elif self._connect is not None:
            self._connect.cancel()
        elif self._queued is not None:  # left while waiting for a connection slot
            self._queued.cancel(self._slot_granted)
            self._queued = None
            self._connecting = False
        if self._up is None and not self._connecting and not self._finished:  # _maybe_finish, inlined
            self._finish()

    # connection management ------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Graceful stop. TCP has no message boundary to stop at, so the connection keeps relaying
        until either side closes; `lifecycle.drain_tcp` closes whatever is left at its deadline."""

    def close(self, abort: bool = False) -> None:
        """Close both sides: flushing what is buffered, or at once (`abort`)."""
        self._closing = True
        down, up = self.transport, self._up
        if abort:
            if down is not None:
                down.abort()
            if up is not None:
                up.abort()
        else:
            if down is not None:
                down.close()
            if up is not None:
                up.close()
        if self._connect is not None:
            self._connect.cancel()

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def upstream_transport(self) -> asyncio.Transport | None:
        return self._up

    def closed_waiter(self) -> asyncio.Future[None]:
        """A future resolved once the connection is fully closed and accounted for."""
        if self._closed_waiter is None:
            self._closed_waiter = self.loop.create_future()
            if self._finished:
                self._closed_waiter.set_result(None)
        return self._closed_waiter

    # The SNI the connection was routed by (SNI passthrough, a property there), for the access log: a
    # plain class attribute here, read without a call.
    requested_server_name = ""

    def find_route(self, snapshot: Snapshot) -> TcpRoute | None:
        """The route of this connection in `snapshot` (a captured connection finds it by original destination)."""
        listener = snapshot.tcp_listeners.get(self.listener_name)
        if listener is None:
            return None
        routes = listener.routes
        if routes and not routes[0].matches:  # matches every connection: no address to look up
            return routes[0]
        return listener.route(self.destination_ip)

    def choose_endpoint(self, cluster: Cluster) -> Endpoint | None:
        endpoints = cluster.endpoints
        if len(endpoints) == 1 and cluster.outlier is None:  # nothing to balance, hash or eject
            return endpoints[0]
        hashing = cluster.hash_policy  # consistentHash.useSourceIp applies to TCP too (Envoy's tcp_proxy)
        key = None
        if hashing is not None and hashing.source_ip:
            client = self.source_ip
            key = hash64(client.encode()) if client else None
        return self.state.cluster_manager.choose_endpoint(cluster, key)

    def _reroute(self, cluster: Cluster, endpoint: Endpoint) -> bool:
        """The connect failed and left its cluster empty: connect to another destination instead
        (nothing was relayed yet; proxy.l4.shifting)."""
        moved = shifting.reroute(self, cluster, endpoint)
        if moved is None:
            return False
        self._start_connect(*moved)
        return True

    # upstream side ------------------------------------------------------------------------------

    def _start_connect(self, cluster: Cluster, endpoint: Endpoint) -> None:
        """Connect to `endpoint`, and start the connection's one timer: its first period is the connect
        timeout or the report/idle period, the shorter, so that a connection made in time keeps it
        (`tick` waits the rest of a longer connect timeout)."""
        idle = cluster.tcp_idle_timeout
        if idle is not None and idle > 0:
            self._idle_timeout = idle
            self._interval = min(ticks.REPORTING_INTERVAL, idle / ticks.IDLE_CHECKS)
        else:
            self._idle_timeout = None  # (connecting again, to another destination's cluster)
            self._interval = ticks.REPORTING_INTERVAL
        timeout = cluster.connect_timeout
        first = timeout if timeout <= self._interval else self._interval
        self._connect_left = timeout - first
        timers = self.state.tcp_timers
        if self._timer is not None:
            timers.cancel(self._timer)  # connecting again, to another destination
        self._timer = timers.start(self.loop, first, self)
        connect = self._connect = TcpUpstream(self)
        connect.connect(cluster, endpoint)

    def _connect_done(self, exc: BaseException | None) -> None:
        self._connect = None
        if exc is not None and not (isinstance(exc, asyncio.CancelledError) and self._closing):
            # refused, unreachable, unresolvable, or cancelled at the connect timeout: all UF, as Envoy
            cluster, endpoint = self.cluster, self.endpoint
            assert cluster is not None and endpoint is not None
            if cluster.outlier is not None:
                self.state.cluster_manager.outlier_report(cluster, endpoint, outlier.CONNECT_FAILED)
            if self._up is None and not self._closing and self._breaker is None and self._reroute(cluster, endpoint):
                return  # connecting again, to another destination
            if self._up is None and not self._closing:
                self._fail("UF", cluster, endpoint)
        # else: connected, or the downstream went away (connection_lost did the bookkeeping)
        self._connecting = False
        self._maybe_finish()

    def upstream_made(self, transport: asyncio.Transport) -> bool:
        """The upstream connected (counted as active until `TcpUpstream.connection_lost`); False when
        nobody is waiting for it any more."""
        metrics = self.state.metrics
        metrics.upstream_active += 1
        if not self._connecting or self._closing:
            return False
        self._up = transport
        # connected: for plain TCP the connect's end (`_connect_done`) brings nothing more; a failure
        # after this (TLS origination's name check) still goes there
        self._connect = None
        self._connecting = False
        cluster = self.cluster
        stats = self._stats = metrics.tcp_stats(cluster, self.endpoint)
        stats.opened += 1
        early = self._early
        if early is not None:
            self._early = None
            transport.write(early)  # may call pause_writing at once
        if self._down_eof:
            transport.write_eof()
        elif not self._up_paused:
            self.transport.resume_reading()  # type: ignore[union-attr]
        # the timer now reports byte counts and enforces the idle timeout, from now on
        loop = self.loop
        now = loop.time()
        self._last_active = now
        self._next_report = now + ticks.REPORTING_INTERVAL
        timer = self._timer
        if timer is None or timer[0] > now + self._interval:  # type: ignore[operator]  # [0]: its deadline
            # connected after the timer's first period: a period starts now
            timers = self.state.tcp_timers
            if timer is not None:
                timers.cancel(timer)
            self._timer = timers.start(loop, self._interval, self)
        if cluster is not None and (cluster.outlier is not None or cluster.tcp_keepalive is not None or
                                    cluster.max_connection_duration is not None):
            self._upstream_policies(cluster, transport)
        return True

    def _upstream_policies(self, cluster: Cluster, transport: asyncio.Transport) -> None:
        """What the DestinationRule asks of a connected upstream: outlier report, keepalive, lifetime."""
        if cluster.outlier is not None and self.endpoint is not None:
            self.state.cluster_manager.outlier_report(cluster, self.endpoint, outlier.CONNECTED)
        if cluster.tcp_keepalive is not None:
            keepalive.apply(transport, cluster.tcp_keepalive)
        if cluster.max_connection_duration is not None:  # Envoy's max_downstream_connection_duration
            self._life_timer = self.loop.call_later(cluster.max_connection_duration, self.close)

    def upstream_eof(self) -> bool:
        self._up_eof = True
        if self._down_eof:
            self.close()  # both directions done: closing sends the FIN a write_eof would
            return True
        down = self.transport
        if down is not None and not down.is_closing():
            down.write_eof()
        return True

    def upstream_pause_writing(self) -> None:
        self._up_paused = True
        self.transport.pause_reading()  # type: ignore[union-attr]

    def upstream_resume_writing(self) -> None:
        self._up_paused = False
        if not self._down_eof:
            self.transport.resume_reading()  # type: ignore[union-attr]

    def upstream_lost(self) -> None:
        self._up = None
        self._closing = True
        if not self._down_lost:
            self.transport.close()  # type: ignore[union-attr]  # after its buffer drains
        elif not self._connecting and not self._finished:  # _maybe_finish, inlined
            self._finish()

    # accounting ---------------------------------------------------------------------------------

    def _fail(self, flag: str, cluster: Cluster | None, endpoint: Endpoint | None) -> None:
        self.flags = flag
        stats = self._stats = self.state.metrics.tcp_stats(cluster, endpoint, flag)
        stats.opened += 1
        self.close()

    def tick(self) -> None:
        """The connection's timer fired (proxy.l4.ticks)."""
        ticks.tick(self)

    def _maybe_finish(self) -> None:
        if self._down_lost and self._up is None and not self._connecting and not self._finished:
            self._finish()

    def _finish(self) -> None:
        self._finished = True
        timer = self._timer
        if timer is not None:
            timer[1] = None  # Timers.cancel, inlined (once per connection)
            self._timer = None
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self._life_timer is not None:
            self._life_timer.cancel()
            self._life_timer = None
        if self._breaker is not None:
            self._breaker.release()
            self._breaker = None
        self._early = None
        state = self.state
        stats = self._stats
        if stats is None:  # the downstream left while the upstream was connecting
            self.flags = "DC"
            stats = self._stats = state.metrics.tcp_stats(self.cluster, self.endpoint, "DC")
            stats.opened += 1
        ticks.report(self)  # the last one
        stats.closed += 1
        if self.counted:
            self.counted = False
            state.cluster_manager.request_finished(self.cluster, self.endpoint)  # type: ignore[arg-type]
        state.connections.discard(self)
        if self.on_old_config:
            self.on_old_config = False
            state.metrics.connections_on_old_config -= 1
        log = state.access_log
        if log.enabled:
            endpoint, cluster = self.endpoint, self.cluster
            log.tcp(self.flags, self._received_reported, self._sent_reported,
                    (self.loop.time() - self._started) * 1000.0,
                    self._peer,
                    endpoint.host_bytes if endpoint is not None else b"",
                    cluster.name_bytes if cluster is not None else self.cluster_name.encode(),
                    self.requested_server_name)
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)

