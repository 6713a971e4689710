"""Keep-alive connection pools, one per upstream endpoint (address, port).

A pool holds only *idle* connections. A request takes the most recently used one (LIFO: traffic stays on
few warm connections and the rest reach their idle timeout) or opens a new one itself, and gives it back
when its response is complete and the connection may carry another request. An idle connection leaves
the pool when the upstream closes it (the connection calls `remove`), when it has been idle for its
cluster's idle timeout (one lazy timer per pool, re-armed only when it fires), or when the endpoint
leaves the config (`close`).

No HTTP here: anything with `idle_deadline`, `is_open` and `close()` can be pooled.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar


class Poolable(Protocol):
    idle_deadline: float

    @property
    def is_open(self) -> bool: ...

    def close(self) -> None: ...


C = TypeVar("C", bound=Poolable)


class EndpointPool(Generic[C]):
    __slots__ = ("key", "closed", "_idle", "_timer", "_loop")

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.closed = False
        self._idle: list[C] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._idle)

    def acquire(self) -> C | None:
        """The newest idle connection that is still open, or None (the caller opens one)."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.is_open:
                return conn
        return None

    def release(self, conn: C, idle_timeout: float) -> None:
        if self.closed or not conn.is_open:
            conn.close()
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        conn.idle_deadline = loop.time() + idle_timeout
        self._idle.append(conn)
        if self._timer is None:
            self._timer = loop.call_at(conn.idle_deadline, self._sweep)

    def remove(self, conn: C) -> None:
        """An idle connection closed (by the upstream or by us)."""
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """The endpoint is gone: close idle connections now and busy ones when they are released."""
        self.closed = True
        self.close_idle()

    def _sweep(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        idle, self._idle = self._idle, []
        keep: list[C] = []
        for conn in idle:
            if conn.idle_deadline <= now:
                conn.close()
            else:
                keep.append(conn)
        self._idle = keep
        if keep:
            self._timer = self._loop.call_at(min(c.idle_deadline for c in keep), self._sweep)
