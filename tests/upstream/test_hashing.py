"""Consistent hashing: ring hash and Maglev tables, through the cluster manager the request path uses.

A key keeps its endpoint on every request and across a reload with the same endpoints (new Cluster
objects, new balancers, even a cleared table cache); adding a 4th endpoint moves about a quarter of the
keys (Envoy's promise: ~1/N), removing one moves only the keys it owned.
"""

from __future__ import annotations

import random

import pytest

from proxy.routing.snapshot import Cluster, Endpoint, HashPolicy, ServiceInfo
from proxy.upstream import hashing
from proxy.upstream.cluster import ClusterManager
from proxy.upstream.hashing import generated_cookie, hash64, request_key

SERVICE = ServiceInfo("reviews.default.svc.cluster.local", "reviews", "default")
KEYS = [f"user-{i}".encode() for i in range(1000)]
POLICIES = {
    "ring": HashPolicy(header="x-user", table="ring", table_size=1024),
    "maglev": HashPolicy(header="x-user", table="maglev", table_size=65537),
}


def make_cluster(ports: list[int], policy: HashPolicy) -> Cluster:
    endpoints = tuple(Endpoint("127.0.0.1", p) for p in ports)
    return Cluster("outbound|9080||reviews", SERVICE, 9080, "", endpoints, "RANDOM", hash_policy=policy)


def mapping(manager: ClusterManager, cluster: Cluster) -> dict[bytes, int]:
    out = {}
    for key in KEYS:
        endpoint = manager.choose_endpoint(cluster, hash64(key))
        assert endpoint is not None
        out[key] = endpoint.port
    return out


@pytest.mark.parametrize("table", ["ring", "maglev"])
def test_a_key_keeps_its_endpoint_across_requests_and_reloads(table: str) -> None:
    policy = POLICIES[table]
    manager = ClusterManager(random.Random(1))
    cluster = make_cluster([9001, 9002, 9003], policy)
    first = mapping(manager, cluster)
    for _ in range(9):  # ten lookups of each key in all
        assert mapping(manager, cluster) == first
    assert set(first.values()) == {9001, 9002, 9003}
    # a reload: new objects for the same endpoints, in another order, and no remembered tables
    hashing.ring.cache_clear()
    hashing.maglev.cache_clear()
    reloaded = make_cluster([9001, 9002, 9003], policy)
    assert reloaded is not cluster
    assert mapping(ClusterManager(random.Random(2)), reloaded) == first


@pytest.mark.parametrize("table", ["ring", "maglev"])
def test_adding_an_endpoint_moves_about_a_quarter_of_the_keys(table: str) -> None:
    policy = POLICIES[table]
    manager = ClusterManager()
    before = mapping(manager, make_cluster([9001, 9002, 9003], policy))
    after = mapping(manager, make_cluster([9001, 9002, 9003, 9004], policy))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert 0.15 <= len(moved) / len(KEYS) <= 0.35, len(moved)
    if table == "ring":  # on a ring, a key only ever moves to the new endpoint
        assert {after[k] for k in moved} == {9004}
    # and removing it again puts every key back
    assert mapping(manager, make_cluster([9001, 9002, 9003], policy)) == before


def test_removing_an_endpoint_moves_only_its_keys_on_a_ring() -> None:
    manager = ClusterManager()
    before = mapping(manager, make_cluster([9001, 9002, 9003, 9004], POLICIES["ring"]))
    after = mapping(manager, make_cluster([9001, 9002, 9004], POLICIES["ring"]))
    assert all(after[k] == before[k] for k in KEYS if before[k] != 9003)


@pytest.mark.parametrize("minimum", [1024, 3000, 6])
def test_ring_size_follows_minimum_ring_size(minimum: int) -> None:
    """Each endpoint of equal weight gets `minimum` points: the ring has at least that many."""
    points, owners = hashing.ring(hashing.endpoint_keys([Endpoint("127.0.0.1", p) for p in (1, 2, 3)]), minimum)
    assert len(points) == 3 * minimum
    assert list(points) == sorted(points) and [owners.count(i) for i in range(3)] == [minimum] * 3


def test_weights_share_the_ring_and_the_maglev_table() -> None:
    endpoints = [Endpoint("127.0.0.1", 1, weight=3), Endpoint("127.0.0.1", 2, weight=1)]
    keys = hashing.endpoint_keys(endpoints)
    _, owners = hashing.ring(keys, 1024)
    assert (owners.count(0), owners.count(1)) == (1024, 341)  # points in proportion to weight
    table = hashing.maglev(keys, 10007)
    assert len(table) == 10007 and abs(table.count(0) / len(table) - 0.75) < 0.01


def test_hash_is_stable() -> None:
    """Fixed values: the same in every process (Python's own hash() is salted per process)."""
    assert hash64(b"user-1") == hash64(b"user-1") != hash64(b"user-2")
    assert hash64(b"") == int.from_bytes(__import__("hashlib").blake2b(b"", digest_size=8).digest(), "little")


HEADERS = [(b"x-user", b"alice"), (b"cookie", b'a=1; session="abc"')]


@pytest.mark.parametrize(("policy", "path", "expected"), [
    (HashPolicy(header="x-user"), b"/", b"alice"),
    (HashPolicy(header="x-missing"), b"/", None),
    (HashPolicy(header=":authority"), b"/", b"reviews:9080"),  # the codec keeps these three apart
    (HashPolicy(header="host"), b"/", b"reviews:9080"),
    (HashPolicy(header="x-request-id"), b"/", b"rid-1"),
    (HashPolicy(header="x-forwarded-for"), b"/", None),
    (HashPolicy(cookie="session"), b"/", b"abc"),
    (HashPolicy(cookie="other"), b"/", None),
    (HashPolicy(source_ip=True), b"/", b"10.1.2.3"),
    (HashPolicy(query_parameter="id"), b"/p?x=1&id=42&id=43", b"42"),
    (HashPolicy(query_parameter="id"), b"/p", None),
])
def test_request_key(policy: HashPolicy, path: bytes, expected: bytes | None) -> None:
    assert request_key(policy, HEADERS, path, b"10.1.2.3", b"reviews:9080", b"rid-1", None) == expected


def test_generated_cookie_is_envoys() -> None:
    policy = HashPolicy(cookie="session", cookie_path="/app", cookie_ttl=3600)
    value, header = generated_cookie(policy, "('127.0.0.1', 5000)", "('127.0.0.1', 80)")
    assert header == b'session="' + value + b'"; Max-Age=3600; Path=/app; HttpOnly'
    assert len(value) == 16
    # stable for a connection; a session cookie (ttl 0s) has no Max-Age
    assert generated_cookie(policy, "('127.0.0.1', 5000)", "('127.0.0.1', 80)")[0] == value
    _, session = generated_cookie(HashPolicy(cookie="s", cookie_ttl=0.0), "p", "l")
    assert b"Max-Age" not in session and session.endswith(b"; HttpOnly")
    _, attributed = generated_cookie(HashPolicy(cookie="s", cookie_ttl=0.0,
                                                cookie_attributes=(("SameSite", "Lax"), ("Secure", ""))), "p", "l")
    assert attributed.endswith(b"; SameSite=Lax; Secure; HttpOnly")


def test_the_table_follows_the_choosable_endpoints() -> None:
    """When the balancer's endpoints shrink (an endpoint taken out of rotation), keys of the others stay
    and the missing endpoint's keys spread over the rest; when it comes back, every key is home again."""
    manager = ClusterManager()
    cluster = make_cluster([9001, 9002, 9003], POLICIES["ring"])
    before = mapping(manager, cluster)
    balancer = manager._balancer(cluster)
    balancer.endpoints = tuple(e for e in cluster.endpoints if e.port != 9002)
    during = mapping(manager, cluster)
    assert 9002 not in during.values()
    assert all(during[k] == before[k] for k in KEYS if before[k] != 9002)
    balancer.endpoints = cluster.endpoints
    assert mapping(manager, cluster) == before
