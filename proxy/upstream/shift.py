"""Which weighted destination a request or connection goes to, never one that is empty.

A destination is *empty* when it has no healthy endpoint: none configured (its subset selects nothing,
or the subset does not exist), all ejected by outlier detection, or all failing to connect (each failed
connect marks its endpoint unreachable for `UNREACHABLE_HOLD` seconds; see ClusterManager). An empty
destination's share goes to the route's other destinations, by their weights (or, for a sticky route,
its keys go to the others by rendezvous, the other keys staying put), and the request or connection is
flagged `EMPTY_FLAG` in the access log. With `shiftproxy.io/empty-destination: fail`, or when every
destination is empty, nothing is moved: Istio's 503 UH (TCP: UH, connection closed).

Costs nothing for a route with one destination; for several, one check per pick. No I/O.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

from proxy.routing.snapshot import Cluster, Destination, Endpoint, Snapshot, WeightedDestinations

if TYPE_CHECKING:
    from proxy.upstream.cluster import ClusterManager

# response flag (access log) of a request or connection moved off an empty destination; Envoy has no such
# flag, and none of its flags is spelled this way
EMPTY_FLAG = "ED"


def _weighted(action: WeightedDestinations, random_value: int, excluded: set[int]) -> int:
    """A weighted random index among the destinations not `excluded` (at least one is not)."""
    cumulative: list[int] = []
    total = 0
    for i, dest in enumerate(action.destinations):
        total += 0 if i in excluded else dest.weight
        cumulative.append(total)
    return bisect_right(cumulative, random_value % total)


def empty_indexes(action: WeightedDestinations, manager: ClusterManager) -> set[int]:
    return {i for i, d in enumerate(action.destinations) if not manager.has_endpoint(d.cluster)}


def pick(action: WeightedDestinations, manager: ClusterManager, random_value: int,
         key_hash: int | None) -> tuple[Destination, bool]:
    """(destination, moved off an empty one?) for a route with several destinations. `key_hash`: the
    sticky key's hash (None: not sticky, or the request has no key: a random pick)."""
    sticky = action.sticky
    destinations = action.destinations
    if sticky is not None and key_hash is not None:
        index = sticky.pick(key_hash)
    else:
        index = bisect_right(action.cumulative, random_value % action.cumulative[-1])
    dest = destinations[index]
    if action.empty_fail or manager.has_endpoint(dest.cluster):
        return dest, False
    return _away(action, manager, random_value, key_hash, empty_indexes(action, manager)) or (dest, False)


def _away(action: WeightedDestinations, manager: ClusterManager, random_value: int, key_hash: int | None,
          excluded: set[int]) -> tuple[Destination, bool] | None:
    if len(excluded) >= len(action.destinations):
        return None  # every destination is empty: the caller answers 503 UH
    sticky = action.sticky
    if sticky is not None and key_hash is not None:
        index = sticky.pick(key_hash, excluded)
    else:
        index = _weighted(action, random_value, excluded)
    return (action.destinations[index], True) if index >= 0 else None


def reroute(action: WeightedDestinations, manager: ClusterManager, current: Destination | None,
            random_value: int, key_hash: int | None) -> Destination | None:
    """Another destination for a request or connection whose destination just became empty (its last
    reachable endpoint failed to connect), or None (fail mode, or nothing else to go to)."""
    if action.empty_fail or len(action.destinations) < 2:
        return None
    excluded = empty_indexes(action, manager)
    if current is not None:
        excluded |= {i for i, d in enumerate(action.destinations) if d is current}
    moved = _away(action, manager, random_value, key_hash, excluded)
    return moved[0] if moved is not None else None


def move(action: WeightedDestinations, manager: ClusterManager, cluster: Cluster, random_value: int,
         key_hash: int | None) -> tuple[Destination, Endpoint] | None:
    """Another destination of `action`, and its endpoint, for traffic whose `cluster` just became empty
    (a request's or a connection's failed connect); None when there is nowhere else to go."""
    current = next((d for d in action.destinations if d.cluster is cluster), None)
    dest = reroute(action, manager, current, random_value, key_hash)
    if dest is None or dest.cluster is None:
        return None
    chosen = manager.choose_endpoint(dest.cluster)
    return None if chosen is None else (dest, chosen)


def weighted_routes(snapshot: Snapshot) -> dict[str, tuple[str, WeightedDestinations]]:
    """Every route of the snapshot that sends to weighted destinations: name → (protocol, destinations).
    A route served on several listeners is listed once."""
    out: dict[str, tuple[str, WeightedDestinations]] = {}
    for listener in snapshot.http_listeners.values():
        table = listener.route_table
        hosts = [*table.exact.values(), *(vh for _, vh in table.suffixes)]
        if table.catch_all is not None:
            hosts.append(table.catch_all)
        for vhost in hosts:
            for route in vhost.routes:
                if type(route.action) is WeightedDestinations and route.name not in out:
                    out[route.name] = ("http", route.action)
    for tcp in snapshot.tcp_listeners.values():
        for tcp_route in tcp.routes:
            out.setdefault(tcp_route.name, ("tcp", tcp_route.destinations))
    return out


def empty_stats(snapshot: Snapshot, manager: ClusterManager) -> list[tuple[str, int, int]]:
    """(route, empty destinations now, requests and connections moved so far) per route with several
    destinations, for /metrics (computed at scrape time: nothing per request)."""
    out = []
    for name, (_, action) in weighted_routes(snapshot).items():
        if len(action.destinations) > 1:
            out.append((name, len(empty_indexes(action, manager)), manager.moved.get(name, 0)))
    return out
