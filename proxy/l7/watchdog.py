"""One timer for the idle and request-header timeouts of every downstream HTTP connection.

Arming and cancelling a uvloop timer per connection costs about 2.5 µs, a real share of serving a
short connection. Instead the watched connections sit in a set and one tick asks each of them to check
its own timeouts (`check_timeouts(now)`). A timeout therefore fires up to one interval late; the
interval is a tenth of the shortest timeout watched, between 10 ms and 1 s (the defaults, 60 s for a
request head and 300 s idle, get 1 s). The tick runs only while some connection is watched.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

MIN_INTERVAL = 0.01
MAX_INTERVAL = 1.0


class Watched(Protocol):
    def check_timeouts(self, now: float) -> None: ...


class Watchdog:
    __slots__ = ("connections", "_shortest", "_loop", "_timer")

    def __init__(self) -> None:
        self.connections: set[Watched] = set()
        self._shortest = float("inf")  # the shortest timeout watched so far
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def interval(self) -> float:
        return min(MAX_INTERVAL, max(MIN_INTERVAL, self._shortest / 10))

    def watch(self, conn: Watched, loop: asyncio.AbstractEventLoop, shortest_timeout: float) -> None:
        self.connections.add(conn)
        if shortest_timeout < self._shortest:
            before = self.interval
            self._shortest = shortest_timeout
            if self._timer is not None and self.interval < before:  # the next tick is further away than allowed
                self._timer.cancel()
                self._timer = None
        if self._timer is None:
            self._loop = loop
            self._timer = loop.call_later(self.interval, self._tick)

    def unwatch(self, conn: Watched) -> None:
        self.connections.discard(conn)

    def _tick(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        if self.connections:
            self._timer = loop.call_later(self.interval, self._tick)
