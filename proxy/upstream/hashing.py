"""Consistent hashing of requests to endpoints: Envoy's ring hash and Maglev tables, and the hash key of
a request (DestinationRule `consistentHash`).

A table depends only on the endpoints (address, port, weight) and its size, so it is built once per
endpoint set and remembered: a reload that keeps the endpoints keeps every key on its endpoint, even
across processes (the hash is a fixed function, not Python's per-process `hash`). Adding or removing
one of N endpoints moves about 1/N of the keys. No I/O.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Sequence
from functools import lru_cache
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl

from proxy.routing.snapshot import Endpoint, HashPolicy

Header = tuple[bytes, bytes]

# Envoy's maximum_ring_size is 8M points; built in Python that takes seconds, and a quarter million
# points already spread keys as evenly as any request mix can show
MAX_RING_SIZE = 256 * 1024
DEFAULT_MAGLEV_SIZE = 65537  # Envoy's default table size
MAX_MAGLEV_SIZE = 262139  # a prime; Envoy allows up to 5000011, seconds to build in Python for no gain
_MASK64 = (1 << 64) - 1


def hash64(data: bytes) -> int:
    """A stable 64-bit hash (the same in every process and version)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


EndpointKeys = tuple[tuple[str, int, int], ...]  # (address, port, weight) in endpoint order


def endpoint_keys(endpoints: Sequence[Endpoint]) -> EndpointKeys:
    return tuple((e.address, e.port, max(e.weight, 1)) for e in endpoints)


@lru_cache(maxsize=64)
def ring(keys: EndpointKeys, minimum_size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A ring hash: each endpoint gets `minimum_size` points scaled by its weight relative to the
    heaviest (so the ring has at least `minimum_size`, Envoy's `minimum_ring_size`). Unlike Envoy, an
    endpoint's points do not depend on how many others there are: adding one moves keys only to it,
    removing one moves only its keys. Returns (sorted point hashes, endpoint index of each point)."""
    heaviest = max(w for _, _, w in keys)
    per_heaviest = max(minimum_size, 1)
    total = sum(max(round(per_heaviest * w / heaviest), 1) for _, _, w in keys)
    if total > MAX_RING_SIZE:  # Envoy's maximum_ring_size bounds memory
        per_heaviest = max(per_heaviest * MAX_RING_SIZE // total, 1)
    # each point as one int, hash above the endpoint index: sorting ints is much faster than tuples
    shift = max(len(keys).bit_length(), 1)
    points: list[int] = []
    for index, (address, port, weight) in enumerate(keys):
        count = max(round(per_heaviest * weight / heaviest), 1)
        prefix = f"{address}:{port}_".encode()
        points += ((hash64(prefix + b"%d" % i) << shift) | index for i in range(count))
    points.sort()
    mask = (1 << shift) - 1
    return tuple(p >> shift for p in points), tuple(p & mask for p in points)


@lru_cache(maxsize=16)
def maglev(keys: EndpointKeys, size: int) -> tuple[int, ...]:
    """Maglev's lookup table (Eisenbud et al., NSDI 2016, as Envoy builds it, weighted): entry → endpoint
    index. `size` should be prime (validation insists)."""
    n = len(keys)
    offsets, skips = [], []
    for address, port, _ in keys:
        name = f"{address}:{port}".encode()
        offsets.append(hash64(name) % size)
        skips.append(hash64(name + b"#skip") % (size - 1) + 1 if size > 1 else 1)
    weights = [w for _, _, w in keys]
    heaviest = max(weights)
    table = [-1] * size
    nexts = [0] * n
    progress = [0.0] * n
    filled = 0
    while True:
        for i in range(n):
            progress[i] += weights[i]
            if progress[i] < heaviest:  # lighter endpoints take a turn less often
                continue
            progress[i] -= heaviest
            offset, skip, j = offsets[i], skips[i], nexts[i]
            slot = (offset + j * skip) % size
            while table[slot] >= 0:
                j += 1
                slot = (offset + j * skip) % size
            table[slot] = i
            nexts[i] = j + 1
            filled += 1
            if filled == size:
                return tuple(table)


class HashTable:
    """The lookup structure of one cluster (built lazily by its balancer)."""

    __slots__ = ("endpoints", "_points", "_owners", "_maglev")

    def __init__(self, endpoints: Sequence[Endpoint], policy: HashPolicy) -> None:
        self.endpoints = endpoints if isinstance(endpoints, tuple) else tuple(endpoints)
        keys = endpoint_keys(endpoints)
        self._maglev: tuple[int, ...] | None = None
        self._points: tuple[int, ...] = ()
        self._owners: tuple[int, ...] = ()
        if policy.table == "maglev":
            self._maglev = maglev(keys, min(policy.table_size or DEFAULT_MAGLEV_SIZE, MAX_MAGLEV_SIZE))
        else:
            self._points, self._owners = ring(keys, policy.table_size)

    def pick(self, key_hash: int) -> Endpoint:
        table = self._maglev
        if table is not None:
            return self.endpoints[table[key_hash % len(table)]]
        points = self._points
        i = bisect_left(points, key_hash)
        return self.endpoints[self._owners[i if i < len(points) else 0]]


# the request's key ---------------------------------------------------------------------------------


def cookie_value(headers: Sequence[Header], name: str) -> str | None:
    for header_name, value in headers:
        if header_name != b"cookie":
            continue
        try:
            jar = SimpleCookie(value.decode("latin-1"))
        except CookieError:
            continue
        morsel = jar.get(name)
        if morsel is not None:
            return morsel.value
    return None


# headers the codec keeps out of the header list (see codec.RequestHead)
_KEPT_APART = {b":authority": "authority", b"host": "authority", b"x-request-id": "request_id",
               b"x-forwarded-for": "forwarded_for"}


def request_key(policy: HashPolicy, headers: Sequence[Header], path: bytes, client_ip: bytes,
                authority: bytes | None = None, request_id: bytes | None = None,
                forwarded_for: bytes | None = None) -> bytes | None:
    """The bytes hashed for this request, or None when its source is absent (a cookie the proxy may
    generate is handled by the caller)."""
    if policy.header is not None:
        wanted = policy.header.encode("latin-1")
        apart = _KEPT_APART.get(wanted)
        if apart is not None:
            value = {"authority": authority, "request_id": request_id, "forwarded_for": forwarded_for}[apart]
            return value or None
        values = [v for n, v in headers if n == wanted]
        return b",".join(values) if values else None
    if policy.cookie is not None:
        value = cookie_value(headers, policy.cookie)
        return value.encode("latin-1") if value is not None else None
    if policy.source_ip:
        return client_ip or None
    if policy.query_parameter is not None:
        _, sep, query = path.partition(b"?")
        if not sep:
            return None
        for key, value in parse_qsl(query.decode("latin-1").partition("#")[0], keep_blank_values=True):
            if key == policy.query_parameter:
                return value.encode("latin-1")
    return None


def generated_cookie(policy: HashPolicy, peer: str, local: str) -> tuple[bytes, bytes]:
    """(value, Set-Cookie header value) for a request without the hash cookie, as Envoy makes it: the
    value is a hash of the connection's addresses (stable for the connection), quoted, HttpOnly."""
    value = b"%016x" % hash64(f"{peer}{local}".encode())
    parts = [policy.cookie.encode("latin-1") + b'="' + value + b'"']  # type: ignore[union-attr]
    if policy.cookie_ttl:
        parts.append(b"Max-Age=%d" % int(policy.cookie_ttl))
    if policy.cookie_path:
        parts.append(b"Path=" + policy.cookie_path.encode("latin-1"))
    for name, attribute in policy.cookie_attributes:
        parts.append(f"{name}={attribute}".encode("latin-1") if attribute else name.encode("latin-1"))
    parts.append(b"HttpOnly")
    return value, b"; ".join(parts)
