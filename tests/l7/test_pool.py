"""The per-endpoint keep-alive pool: LIFO reuse, closed connections skipped, idle expiry, endpoint removal."""

from __future__ import annotations

import asyncio

from proxy.routing.snapshot import Endpoint
from proxy.upstream.cluster import ClusterManager
from proxy.upstream.pool import EndpointPool
from tests.l7.conftest import cluster, eventually


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.idle_deadline = 0.0
        self.closed = False

    @property
    def is_open(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True


async def test_newest_connection_is_reused_first() -> None:
    pool: EndpointPool[Conn] = EndpointPool(("127.0.0.1", 1))
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    for conn in (a, b, c):
        pool.release(conn, 60)
    assert pool.acquire() is c
    pool.release(c, 60)
    assert [pool.acquire(), pool.acquire(), pool.acquire(), pool.acquire()] == [c, b, a, None]


async def test_closed_and_removed_connections_are_not_handed_out() -> None:
    pool: EndpointPool[Conn] = EndpointPool(("127.0.0.1", 1))
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    for conn in (a, b, c):
        pool.release(conn, 60)
    c.closed = True  # closed by the upstream before the pool heard of it
    pool.remove(a)
    pool.remove(a)  # twice is harmless
    assert pool.acquire() is b
    assert pool.acquire() is None
    dead = Conn("dead")
    dead.closed = True
    pool.release(dead, 60)
    assert len(pool) == 0


async def test_idle_connections_expire() -> None:
    pool: EndpointPool[Conn] = EndpointPool(("127.0.0.1", 1))
    short, long = Conn("short"), Conn("long")
    pool.release(short, 0.05)
    pool.release(long, 30)
    await eventually(lambda: short.closed)
    assert not long.closed
    assert pool.acquire() is long
    assert pool.acquire() is None


async def test_closed_pool_closes_idle_and_returned_connections() -> None:
    pool: EndpointPool[Conn] = EndpointPool(("127.0.0.1", 1))
    idle, busy = Conn("idle"), Conn("busy")
    pool.release(idle, 60)
    pool.close()
    assert idle.closed
    pool.release(busy, 60)
    assert busy.closed and pool.acquire() is None


async def test_cluster_manager_keeps_pools_per_endpoint_address() -> None:
    manager = ClusterManager()
    v1, v1_copy = cluster("v1", 9001), cluster("", 9001, 9002)  # a subset and the whole service share :9001
    pool = manager.pool_for(v1.endpoints[0])
    assert manager.pool_for(v1_copy.endpoints[0]) is pool
    assert manager.pool_for(Endpoint("127.0.0.1", 9002)) is not pool
    kept = Conn("kept")
    pool.release(kept, 60)
    gone = Conn("gone")
    manager.pool_for(Endpoint("127.0.0.1", 9002)).release(gone, 60)
    manager.retain([v1])  # a reload dropped the endpoint on :9002
    assert gone.closed and not kept.closed
    assert set(manager.pools) == {("127.0.0.1", 9001)}
    manager.close_idle()
    assert kept.closed
    await asyncio.sleep(0)
