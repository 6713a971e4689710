"""The upstream half of a TCP relay: the connect, and the protocol object of the upstream connection.

`loop.create_connection` is a coroutine. Run as a Task it costs, per connection, a Task object, its entry
in asyncio's weak set of tasks, a context copy, a loop iteration before the connect starts and a timeout
context manager around it. `UpstreamConnect` steps the coroutine itself instead: it starts at once, and
resumes from the done callback of the future it waits on (the connect, or a DNS look-up first). A
cancel cancels that future, which the coroutine sees at its `await` as a Task's coroutine would, so
`create_connection` closes its half-made transport as usual. The connect timeout is the relay's own
connection timer (proxy.l4.relay), not a timer of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from proxy.routing.snapshot import Cluster, Endpoint
from proxy.tls.upstream import connect as tls_connect

if TYPE_CHECKING:
    from proxy.l4.relay import TcpDownstream


def open_connection(loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol], cluster: Cluster,
                    endpoint: Endpoint) -> Coroutine[Any, Any, Any]:
    """The connect coroutine: plain, or TLS when the cluster originates it. The address may be a DNS
    name: create_connection resolves it now."""
    if cluster.tls is None:
        return loop.create_connection(factory, endpoint.address, endpoint.port)
    return tls_connect(loop, factory, endpoint.address, endpoint.port, cluster.tls)


class UpstreamConnect:
    """One connect in progress. `on_done(None)` once connected (the protocol's `connection_made` ran
    before), or `on_done(exc)` when it failed or was cancelled (exc is then a CancelledError)."""

    __slots__ = ("loop", "coro", "on_done", "waiting", "cancelled")

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                 on_done: Callable[[BaseException | None], None]) -> None:
        self.loop = loop
        self.coro = coro
        self.on_done = on_done
        self.waiting: asyncio.Future[Any] | None = None
        self.cancelled = False

    def cancel(self) -> None:
        """Stop connecting; `on_done` gets a CancelledError (not before this returns)."""
        if self.cancelled:
            return
        self.cancelled = True
        if self.waiting is not None:
            self.waiting.cancel()  # its done callback resumes the coroutine with the CancelledError
        # else: a step is scheduled (a bare yield), which throws it in

    def _step(self, _future: asyncio.Future[Any] | None = None) -> None:
        self.waiting = None
        coro = self.coro
        error: BaseException | None = None
        try:
            if self.cancelled and _future is None:
                yielded = coro.throw(asyncio.CancelledError())
            else:
                yielded = coro.send(None)  # a done future's await returns its result or raises
        except StopIteration:
            pass
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # refused, unreachable, unresolvable, TLS, cancelled
            error = exc
        else:
            if yielded is None:  # a bare yield (asyncio.sleep(0)): resume on the next iteration, as a Task does
                self.loop.call_soon(self._step, None)
            else:
                yielded._asyncio_future_blocking = False  # the Future protocol: the driver takes over the wait
                self.waiting = yielded
                yielded.add_done_callback(self._step)
            return
        on_done, self.on_done = self.on_done, _ignore  # no reference cycle left through the downstream
        on_done(error)

    start = _step  # runs up to the coroutine's first wait at once


def _ignore(_exc: BaseException | None) -> None:
    pass


class TcpUpstream(asyncio.Protocol):
    """The upstream half of a relay: forwards to its `TcpDownstream`."""

    __slots__ = ("downstream", "attached")

    def __init__(self, downstream: TcpDownstream) -> None:
        self.downstream = downstream
        self.attached = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.downstream.state.metrics.upstream_active += 1
        self.attached = self.downstream.upstream_made(transport)  # type: ignore[arg-type]
        if not self.attached:  # connected after the downstream gave up (timeout or close)
            transport.abort()

    def data_received(self, data: bytes) -> None:
        down = self.downstream
        down.sent += len(data)
        down.transport.write(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        return self.downstream.upstream_eof()

    def pause_writing(self) -> None:
        self.downstream.upstream_pause_writing()

    def resume_writing(self) -> None:
        self.downstream.upstream_resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.downstream.state.metrics.upstream_active -= 1
        if self.attached:
            self.downstream.upstream_lost()
