"""Fixtures for the sample-app tests (helpers live in sample_helpers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
import uvloop
from sample_helpers import RecordingProxy

T = TypeVar("T")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Run every async sample test on both loops: `python -m proxy.samples` uses uvloop, in-process users may not."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def recording_proxy() -> AsyncIterator[RecordingProxy]:
    proxy = RecordingProxy()
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[T], T]]:
    """Register sample servers to close at the end of the test: `server = closing(await start_x(...))`."""
    servers: list[Any] = []

    def register(server: T) -> T:
        servers.append(server)
        return server

    yield register
    for server in reversed(servers):
        server.close()
        await server.wait_closed()
