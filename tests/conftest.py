"""Fixtures shared across test folders."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import Upstream


@pytest.fixture
async def reviews() -> AsyncIterator[dict[str, Upstream]]:
    ups = {v: await Upstream(v).start() for v in ("v1", "v2", "v3")}
    yield ups
    for u in ups.values():
        await u.close()
