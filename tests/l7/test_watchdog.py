"""The shared timeout tick: interval from the shortest timeout, every watched connection checked, no
tick left running once nothing is watched."""

from __future__ import annotations

import asyncio

from proxy.l7.watchdog import MAX_INTERVAL, MIN_INTERVAL, Watchdog


class Conn:
    def __init__(self) -> None:
        self.checks: list[float] = []

    def check_timeouts(self, now: float) -> None:
        self.checks.append(now)


async def test_interval_is_a_tenth_of_the_shortest_timeout_within_bounds() -> None:
    loop = asyncio.get_running_loop()
    dog = Watchdog()
    dog.watch(Conn(), loop, 300.0)
    assert dog.interval == MAX_INTERVAL
    dog.watch(Conn(), loop, 0.5)
    assert dog.interval == 0.05
    dog.watch(Conn(), loop, 0.0001)
    assert dog.interval == MIN_INTERVAL
    for conn in list(dog.connections):
        dog.unwatch(conn)


async def test_every_watched_connection_is_checked_each_tick_and_the_tick_stops_when_empty() -> None:
    loop = asyncio.get_running_loop()
    dog = Watchdog()
    a, b = Conn(), Conn()
    start = loop.time()
    dog.watch(a, loop, 0.2)  # tick every 20 ms
    dog.watch(b, loop, 0.2)
    await asyncio.sleep(0.15)
    assert 3 <= len(a.checks) <= 8 and len(b.checks) == len(a.checks)
    assert all(now >= start + 0.015 for now in a.checks)  # not at once (uvloop clocks in whole ms)
    dog.unwatch(a)
    await asyncio.sleep(0.05)
    assert len(b.checks) > len(a.checks)
    dog.unwatch(b)
    await asyncio.sleep(0.05)
    assert dog._timer is None  # nothing watched: no tick keeps running
    seen = len(b.checks)
    await asyncio.sleep(0.05)
    assert len(b.checks) == seen


async def test_a_shorter_timeout_brings_the_next_tick_forward() -> None:
    loop = asyncio.get_running_loop()
    dog = Watchdog()
    slow, fast = Conn(), Conn()
    dog.watch(slow, loop, 300.0)  # first tick 1 s away
    dog.watch(fast, loop, 0.1)  # now every 10 ms
    await asyncio.sleep(0.1)
    assert len(fast.checks) >= 3
    dog.unwatch(slow)
    dog.unwatch(fast)
