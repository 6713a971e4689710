"""What a TCP relay connection's one timer (proxy.l4.timers) does when it fires.

While connecting it enforces the connect timeout. Once connected it reports byte counts to the metrics
every REPORTING_INTERVAL (Istio's `tcp_reporting_duration`), and closes the connection when no byte has
moved for the cluster's idle timeout (by comparing byte counts between ticks, so traffic never
reschedules a timer). None of this runs per connection unless it lives longer than a timer period.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.l4.relay import TcpDownstream

REPORTING_INTERVAL = 5.0  # seconds between byte-count reports of a long connection (Istio's default)
# The idle check runs this many times per idle period, so an idle connection is closed between
# idle_timeout and idle_timeout * (1 + 1/IDLE_CHECKS) after its last byte.
IDLE_CHECKS = 4
# A closing connection whose peer stops reading is aborted after this long without progress, when the
# cluster's idle timeout (which applies otherwise) is disabled.
CLOSE_LINGER = 60.0


def tick(conn: TcpDownstream) -> None:
    """The connect timeout while connecting; then byte-count reports now and then, and the close when
    nothing has moved for the idle timeout."""
    conn._timer = None
    if conn._connect is not None:
        left = conn._connect_left
        if left > 0:  # a connect timeout longer than the first period: wait the rest
            conn._connect_left = 0.0
            conn._timer = conn.state.tcp_timers.start(conn.loop, left, conn)
        else:
            conn._connect.cancel()  # _connect_done: UF, or another destination
        return
    now = conn.loop.time()
    moved = conn._received_reported + conn.received + conn._sent_reported + conn.sent
    limit = conn._idle_timeout
    mark = (moved, 0, 0)
    if conn._closing:
        # flushing after a close: progress is a peer draining what we buffered for it
        down, up = conn.transport, conn._up
        mark = (moved, down.get_write_buffer_size() if down is not None else 0,
                up.get_write_buffer_size() if up is not None else 0)
        limit = limit or CLOSE_LINGER
    if mark != conn._mark:
        conn._mark = mark
        conn._last_active = now
    elif limit is not None and now - conn._last_active >= limit:
        conn.close(abort=True)  # as Envoy: an idle session is closed without flushing
        return
    if now >= conn._next_report:
        report(conn)
        conn._next_report = now + REPORTING_INTERVAL
    conn._timer = conn.state.tcp_timers.start(conn.loop, conn._interval, conn)


def report(conn: TcpDownstream) -> None:
    """Move the bytes counted since the last report to the connection's stats."""
    stats = conn._stats
    if stats is None:
        return
    if conn.received:
        stats.received += conn.received
        conn._received_reported += conn.received
        conn.received = 0
    if conn.sent:
        stats.sent += conn.sent
        conn._sent_reported += conn.sent
        conn.sent = 0
