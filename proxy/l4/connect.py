"""The upstream half of a TCP relay: the connect, and the protocol object of the upstream connection.

`loop.create_connection` is a coroutine. Run as a Task it costs, per connection, a Task object, its entry
in asyncio's weak set of tasks, a context copy, a loop iteration before the connect starts and a timeout
context manager around it. `UpstreamConnect` steps the coroutine itself instead: it starts at once, and
resumes from the done callback of the future it waits on (the connect, or a DNS look-up first). A
cancel cancels that future, which the coroutine sees at its `await` as a Task's coroutine would, so
`create_connection` closes its half-made transport as usual. The connect timeout is the relay's own
connection timer (proxy.l4.relay), not a timer of its own.

`TcpUpstream` is both the stepper of its connect and the protocol of the connection it makes (it is its
own protocol factory), so a connection costs one upstream object, not a stepper, a factory and a protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from proxy.routing.snapshot import Cluster, Endpoint
from proxy.tls.upstream import connect as tls_connect

if TYPE_CHECKING:
    from proxy.l4.relay import TcpDownstream


class UpstreamConnect:
    """One connect in progress (`start(coro)`). `connect_done(None)` once connected (the protocol's
    `connection_made` ran before), or `connect_done(exc)` when it failed or was cancelled (exc is then a
    CancelledError). Subclasses implement `connect_done`."""

    __slots__ = ("loop", "coro", "waiting", "cancelled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.coro: Coroutine[Any, Any, Any] | None = None
        self.waiting: asyncio.Future[Any] | None = None
        self.cancelled = False

    def start(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` up to its first wait, at once."""
        self.coro = coro
        self._step()

    def cancel(self) -> None:
        """Stop connecting; `connect_done` gets a CancelledError (not before this returns)."""
        if self.cancelled:
            return
        self.cancelled = True
        if self.waiting is not None:
            self.waiting.cancel()  # its done callback resumes the coroutine with the CancelledError
        # else: a step is scheduled (a bare yield), which throws it in

    def connect_done(self, error: BaseException | None) -> None:
        raise NotImplementedError

    def _step(self, _future: asyncio.Future[Any] | None = None) -> None:
        self.waiting = None
        coro = self.coro
        assert coro is not None
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
        self.coro = None  # done: later cancels do nothing
        self.connect_done(error)


class TcpUpstream(UpstreamConnect, asyncio.Protocol):
    """The upstream half of a relay: connects for its `TcpDownstream`, then forwards to it."""

    __slots__ = ("downstream", "attached")

    def __init__(self, downstream: TcpDownstream) -> None:
        # UpstreamConnect.__init__'s fields, set here: one call less per connection
        self.loop = downstream.loop
        self.coro = None
        self.waiting = None
        self.cancelled = False
        self.downstream = downstream
        self.attached = False

    def __call__(self) -> TcpUpstream:
        """The protocol factory `create_connection` calls: this object."""
        return self

    def connect(self, cluster: Cluster, endpoint: Endpoint) -> None:
        """Start connecting to `endpoint`: plain, or TLS when the cluster originates it. The address may
        be a DNS name: create_connection resolves it now."""
        if cluster.tls is None:
            self.coro = self.loop.create_connection(self, endpoint.address, endpoint.port)
        else:
            self.coro = tls_connect(self.loop, self, endpoint.address, endpoint.port, cluster.tls)
        self._step()  # as `start`

    def connect_done(self, error: BaseException | None) -> None:
        if error is not None or not self.attached:  # upstream_made did the rest
            self.downstream._connect_done(error)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
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
        down = self.downstream
        down.state.metrics.upstream_active -= 1
        if self.attached:
            down.upstream_lost()
