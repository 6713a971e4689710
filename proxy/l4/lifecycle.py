"""What reloads and shutdown do to open TCP connections (proxy.l4.relay).

After every snapshot swap, connections chosen on an older version are counted
(metrics.connections_on_old_config), and a route that opts into drain-on-shift
(`shiftproxy.io/tcp-drain-on-shift`) has a connection whose destination lost its weight closed after
that grace, like Envoy closing a drained filter chain. At shutdown, `drain_tcp` waits for the
connections, then closes the rest. None of this is on the per-connection path.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from proxy.l4.relay import TcpDownstream

if TYPE_CHECKING:
    from proxy.routing.snapshot import Snapshot
    from proxy.state import ServerState


def check_shift(conn: TcpDownstream, snapshot: Snapshot) -> None:
    """After a swap: schedule (or cancel) the drain-on-shift close of this connection."""
    route = conn.route
    if route is None or conn._closing:
        return
    new_route = conn.find_route(snapshot)
    grace = new_route.drain_on_shift if new_route is not None else route.drain_on_shift
    kept = False
    if new_route is not None:
        destinations = new_route.destinations.destinations
        kept = any(d.cluster_name == conn.cluster_name and (d.weight > 0 or len(destinations) == 1)
                   for d in destinations)
    if kept or grace is None:
        if conn._drain_timer is not None:  # the destination got its weight back in time
            conn._drain_timer.cancel()
            conn._drain_timer = None
    elif conn._drain_timer is None:
        conn._drain_timer = conn.loop.call_later(max(grace, 0.0), _drain_close, conn)


def _drain_close(conn: TcpDownstream) -> None:
    conn._drain_timer = None
    conn.close()


def on_snapshot_swap(state: ServerState, old: Snapshot, new: Snapshot) -> None:
    """Called after every successful swap: mark connections on an older version and apply the
    drain-on-shift policy of the new routes."""
    on_old = 0
    for conn in list(state.connections):
        if not isinstance(conn, TcpDownstream) or conn.finished:
            continue
        if conn.version < new.version:
            conn.on_old_config = True
            on_old += 1
        check_shift(conn, new)
    state.metrics.connections_on_old_config = on_old


async def drain_tcp(state: ServerState, timeout: float) -> int:
    """Wait up to `timeout` for the TCP connections to finish, then close the rest at once (as Envoy
    does at the end of its drain time). Returns how many had to be closed."""
    conns = [c for c in list(state.connections) if isinstance(c, TcpDownstream) and not c.finished]
    for conn in conns:
        conn.shutdown()
    if conns and timeout > 0:
        await asyncio.wait([c.closed_waiter() for c in conns], timeout=timeout)
    left = [c for c in conns if not c.finished]
    for conn in left:
        conn.close(abort=True)
    if left:
        # aborted transports report connection_lost on the next loop iterations
        await asyncio.wait([c.closed_waiter() for c in left], timeout=1.0)
    return len(left)
