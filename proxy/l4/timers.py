"""The timers of TCP relay connections, without an event-loop timer per connection.

Each relay connection has one timer at a time (connect timeout, then byte-count reports and the idle
check), and it is almost always cancelled or re-armed with one of a few delays. A `loop.call_later` per
connection costs a TimerHandle, a libuv timer and its closing. Here timers of equal delay share a FIFO:
entries are appended in deadline order, so the head is always the next due, and one loop timer per
delay fires for the head. A cancelled entry stays queued, emptied, until its deadline passes.

A timer fires no earlier than its deadline and at most `granularity(delay)` later, so that a busy
listener does not wake the loop once per connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol


class Ticking(Protocol):
    def tick(self) -> None: ...


def granularity(delay: float) -> float:
    """How late a timer of `delay` may fire: 1/64 of the delay, at most 50 ms."""
    return min(delay / 64, 0.05)


class _Queue:
    __slots__ = ("entries", "handle", "late")

    def __init__(self, late: float) -> None:
        self.entries: deque[list[object]] = deque()  # [deadline, owner or None once cancelled]
        self.handle: asyncio.TimerHandle | None = None
        self.late = late


class Timers:
    """Timers of one event loop. `start` returns the entry to pass to `cancel`."""

    __slots__ = ("_loop", "_queues")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[float, _Queue] = {}

    def start(self, loop: asyncio.AbstractEventLoop, delay: float, owner: Ticking) -> list[object]:
        """Call `owner.tick()` in `delay` seconds (not before), unless cancelled."""
        queue = self._queues.get(delay)
        if queue is None or self._loop is not loop:
            if self._loop is not loop:  # a new event loop (tests): the old one's timers are gone
                self._loop = loop
                self._queues = {}
            queue = self._queues[delay] = _Queue(granularity(delay))
        entry: list[object] = [loop.time() + delay, owner]
        queue.entries.append(entry)
        if queue.handle is None:
            queue.handle = loop.call_at(entry[0] + queue.late, self._fire, queue)  # type: ignore[arg-type]
        return entry

    @staticmethod
    def cancel(entry: list[object]) -> None:
        entry[1] = None  # the owner is let go now; the emptied entry leaves the queue at its deadline

    def _fire(self, queue: _Queue) -> None:
        queue.handle = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        entries = queue.entries
        while entries and entries[0][0] <= now:  # type: ignore[operator]
            entry = entries.popleft()
            owner = entry[1]
            if owner is not None:
                entry[1] = None
                try:
                    owner.tick()  # type: ignore[attr-defined]  # may start another timer, here or in another queue
                except Exception as exc:  # one connection's failure stops neither the others nor the queue
                    loop.call_exception_handler({"message": "TCP relay timer failed", "exception": exc})
        if entries:
            queue.handle = loop.call_at(max(entries[0][0], now) + queue.late, self._fire, queue)  # type: ignore[call-overload]
