"""The relay's upstream connect driver (a coroutine stepped without a Task) and its shared timers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.l4.connect import UpstreamConnect
from proxy.l4.timers import Timers, granularity
from tests.l4.conftest import closed_port


class Recorded(UpstreamConnect):
    """A connect driver that records what `connect_done` gets."""

    __slots__ = ("results",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.results: list[BaseException | None] = []

    def connect_done(self, error: BaseException | None) -> None:
        self.results.append(error)


def drive(coro: Any) -> tuple[UpstreamConnect, list[BaseException | None]]:
    connect = Recorded(asyncio.get_running_loop())
    connect.start(coro)
    return connect, connect.results


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_coroutine_runs_to_its_end_through_bare_yields_and_futures() -> None:
    loop = asyncio.get_running_loop()
    steps: list[str] = []
    gate: asyncio.Future[str] = loop.create_future()

    async def work() -> str:
        steps.append("start")
        await asyncio.sleep(0)  # a bare yield
        steps.append(await gate)
        return "done"

    _, results = drive(work())
    assert steps == ["start"]  # started at once, not on a later loop iteration
    await settle()
    assert results == []
    gate.set_result("opened")
    await settle()
    assert steps == ["start", "opened"] and results == [None]


async def test_an_exception_reaches_on_done() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ConnectionRefusedError("no")

    _, results = drive(fails())
    await settle()
    assert len(results) == 1 and isinstance(results[0], ConnectionRefusedError)


@pytest.mark.parametrize("at", ["future", "bare yield"])
async def test_cancel_raises_cancelled_error_at_the_await(at: str) -> None:
    loop = asyncio.get_running_loop()
    cleaned: list[bool] = []

    async def work() -> None:
        try:
            if at == "future":
                await loop.create_future()  # never done
            else:
                await asyncio.sleep(0)
            await loop.create_future()
        except asyncio.CancelledError:
            cleaned.append(True)
            raise

    connect, results = drive(work())
    connect.cancel()
    assert results == []  # never from inside cancel()
    await settle()
    assert cleaned == [True]
    assert len(results) == 1 and isinstance(results[0], asyncio.CancelledError)
    connect.cancel()  # again: nothing more happens
    await settle()
    assert len(results) == 1


async def test_a_real_connect_succeeds_and_a_refused_one_fails() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    made: list[asyncio.BaseTransport] = []

    class Recorder(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(transport)

    try:
        _, ok = drive(loop.create_connection(Recorder, "127.0.0.1", port))
        _, refused = drive(loop.create_connection(Recorder, "127.0.0.1", closed_port()))
        for _ in range(200):
            if ok and refused:
                break
            await asyncio.sleep(0.01)
        assert ok == [None] and len(made) == 1  # connection_made ran before on_done
        assert len(refused) == 1 and isinstance(refused[0], OSError)
    finally:
        for transport in made:
            transport.close()
        server.close()


class Owner:
    def __init__(self, log: list[tuple[str, float]], name: str, fail: bool = False) -> None:
        self.log, self.name, self.fail = log, name, fail

    def tick(self) -> None:
        self.log.append((self.name, asyncio.get_running_loop().time()))
        if self.fail:
            raise RuntimeError("tick failed")


async def test_timers_fire_in_order_not_before_their_deadline_and_not_when_cancelled() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    timers = Timers()
    log: list[tuple[str, float]] = []
    delay = 0.05
    deadlines = {}
    entries = {}
    for name in ("a", "b", "c", "d"):
        entries[name] = timers.start(loop, delay, Owner(log, name, fail=name == "b"))
        deadlines[name] = loop.time() + delay
        await asyncio.sleep(0.005)
    short = timers.start(loop, 0.01, Owner(log, "short"))
    deadlines["short"] = loop.time() + 0.01
    timers.cancel(entries["c"])
    assert entries["c"][1] is None  # the owner is let go at once
    for _ in range(100):
        if len(log) == 4:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(3 * delay)
    assert [name for name, _ in log] == ["short", "a", "b", "d"]  # a failing tick stops no other
    for name, fired in log:
        assert fired >= deadlines[name] - 0.001  # the loop clock's millisecond rounding
    assert len(errors) == 1 and isinstance(errors[0]["exception"], RuntimeError)
    assert short[1] is None
    assert granularity(0.01) < 0.01 and granularity(3600) == 0.05


async def test_a_tick_can_start_its_next_timer() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers()
    fired: list[float] = []

    class Again:
        def tick(self) -> None:
            fired.append(loop.time())
            if len(fired) < 3:
                timers.start(loop, 0.02, self)

    timers.start(loop, 0.02, Again())
    for _ in range(100):
        if len(fired) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(fired) == 3 and fired[1] - fired[0] >= 0.019 and fired[2] - fired[1] >= 0.019
