"""The weighted pick of an HTTP request with several destinations: sticky keys and empty destinations.

The sticky key comes from the request as a consistent-hash key does (`hashing.request_key`); a sticky
cookie the request lacks is generated and set on the response, as Envoy does for a hash cookie, so the
client keeps its version from its next request on. The choice itself is `proxy.upstream.shift`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.routing.snapshot import Destination, WeightedDestinations
from proxy.upstream import shift
from proxy.upstream.hashing import generated_cookie, hash64, request_key

EMPTY_FLAG = shift.EMPTY_FLAG

if TYPE_CHECKING:
    from proxy.l7.exchange import Exchange
    from proxy.routing.snapshot import Endpoint
    from proxy.state import ServerState


def _key_hash(ex: Exchange, action: WeightedDestinations, state: ServerState, client_ip: bytes,
              transport: Any) -> int | None:
    sticky = action.sticky
    if sticky is None:
        return None
    head = ex.head
    assert head is not None
    policy = sticky.key
    key = request_key(policy, head.headers, ex.path, client_ip, ex.authority, head.request_id, head.forwarded_for)
    if key is None and policy.cookie is not None:
        peer = transport.get_extra_info("peername") if transport is not None else None
        # the connection's addresses and a random part: two clients never share a generated key
        key, set_cookie = generated_cookie(policy, f"{peer}#{state.rng.getrandbits(64)}", "")
        if ex.extra_response is None:
            ex.extra_response = []
        ex.extra_response.append((b"set-cookie", set_cookie))
    return hash64(key) if key is not None else None


def pick(ex: Exchange, action: WeightedDestinations, state: ServerState, client_ip: bytes,
         transport: Any, random_value: int | None = None) -> Destination:
    """The destination of a request on a route with several destinations. `random_value`: the draw
    already made for this request, if any (the same draw gives the same unsticky pick)."""
    key_hash = ex.key_hash = _key_hash(ex, action, state, client_ip, transport)
    manager = state.cluster_manager
    if random_value is None:
        random_value = state.rng.getrandbits(32)
    dest, moved = shift.pick(action, manager, random_value, key_hash)
    if moved:
        ex.moved = True
        route = ex.route.name if ex.route is not None else ""
        manager.moved[route] = manager.moved.get(route, 0) + 1
    return dest


def reroute(ex: Exchange, state: ServerState, endpoint: Endpoint) -> bool:
    """A connect to `endpoint` failed and left its cluster with no reachable endpoint
    (`ClusterManager.connect_failed`): move the request to another destination of its route
    (ex.cluster and ex.endpoint change; nothing was sent yet). False: retry in the same cluster."""
    cluster, route = ex.cluster, ex.route
    manager = state.cluster_manager
    if cluster is None or route is None:
        return False
    action = route.action
    if type(action) is not WeightedDestinations:
        return False
    moved = shift.move(action, manager, cluster, state.rng.getrandbits(32), ex.key_hash)
    if moved is None:
        return False
    dest, chosen = moved
    if ex.counted:
        manager.request_finished(cluster, endpoint)
        ex.counted = manager.request_started(dest.cluster, chosen)
    ex.cluster, ex.cluster_name, ex.endpoint = dest.cluster, dest.cluster_name, chosen
    ex.moved = True
    manager.moved[route.name] = manager.moved.get(route.name, 0) + 1
    return True
