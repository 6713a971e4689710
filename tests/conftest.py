"""Fixtures shared across test folders."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import Upstream


@pytest.fixture
async def reviews() -> AsyncIterator[dict[str, Upstream]]:
    ups = {v: await Upstream(v).start() for v in ("v1", "v2", "v3")}
    yield ups
    for u in ups.values():
        await u.close()


@pytest.fixture(autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every proxy a test starts (in process or not) keeps applied objects in a directory of its own,
    never in the user's default state directory."""
    directory = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("SHIFTPROXY_STATE_DIR", str(directory))
    return directory
