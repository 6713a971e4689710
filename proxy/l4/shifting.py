"""The weighted pick of a TCP connection with several destinations: sticky by source IP, and never an
empty destination (proxy.upstream.shift). A cookie or header sticky key has no meaning at L4: such a
route picks at random, by weight."""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

from proxy.routing.snapshot import Cluster, Destination, Endpoint, TcpRoute, WeightedDestinations
from proxy.upstream import shift
from proxy.upstream.hashing import hash64

if TYPE_CHECKING:
    from proxy.l4.relay import TcpDownstream


def _key_hash(conn: TcpDownstream, action: WeightedDestinations) -> int | None:
    sticky = action.sticky
    if sticky is None or not sticky.key.source_ip:
        return None
    client = conn.source_ip
    return hash64(client.encode()) if client else None


def _moved(conn: TcpDownstream, route_name: str) -> None:
    conn.flags = shift.EMPTY_FLAG  # access log: moved off an empty destination
    moved = conn.state.cluster_manager.moved
    moved[route_name] = moved.get(route_name, 0) + 1


def pick(conn: TcpDownstream, route: TcpRoute) -> Destination:
    """The destination of a new connection on `route`."""
    action = route.destinations
    destinations = action.destinations
    if len(destinations) == 1:
        return destinations[0]
    state = conn.state
    manager = state.cluster_manager
    random_value = state.rng.getrandbits(32)
    if action.sticky is None and not manager.failing:
        # shift.pick's common case inlined: the weighted pick, kept when its destination has endpoints
        # that nothing can have ejected or marked failing
        cumulative = action.cumulative
        destination = destinations[bisect_right(cumulative, random_value % cumulative[-1])]
        cluster = destination.cluster
        if action.empty_fail or (cluster is not None and cluster.endpoints and cluster.outlier is None):
            return destination
    destination, moved = shift.pick(action, manager, random_value, _key_hash(conn, action))
    if moved:
        _moved(conn, route.name)
    return destination


def reroute(conn: TcpDownstream, cluster: Cluster, endpoint: Endpoint) -> tuple[Cluster, Endpoint] | None:
    """A connect to `endpoint` failed: when its cluster has no reachable endpoint left, the cluster and
    endpoint of another destination of the route (the connection's fields are moved to them), or None."""
    state = conn.state
    manager = state.cluster_manager
    route = conn.route
    if not manager.connect_failed(cluster, endpoint) or route is None:
        return None
    action = route.destinations
    moved = shift.move(action, manager, cluster, state.rng.getrandbits(32), _key_hash(conn, action))
    if moved is None:
        return None
    dest, chosen = moved
    if conn.counted:
        manager.request_finished(cluster, endpoint)
        conn.counted = manager.request_started(dest.cluster, chosen)
    conn.cluster_name, conn.cluster, conn.endpoint = dest.cluster_name, dest.cluster, chosen
    _moved(conn, route.name)
    return dest.cluster, chosen
