"""Reloading keeps nothing: after many reloads of a running Server, half changing the config, the memory
the process holds has not grown (no loader cache, no old snapshots, no per-reload bookkeeping)."""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.admin.test_admin_api import config_dir, split, start_server  # noqa: F401 - fixture
from tests.paths import BOOKINFO_NET

V3 = (BOOKINFO_NET / "virtual-service-reviews-v3.yaml").read_text()


@pytest.fixture
def quiet() -> Iterator[None]:
    """Reload log lines would pile up in pytest's log capture and count as growth."""
    logger = logging.getLogger("shiftproxy")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


async def test_reloads_do_not_accumulate_memory(config_dir: Path, quiet: None) -> None:  # noqa: F811
    vs = config_dir / "reviews-vs.yaml"
    vs.write_text(V3)
    server = await start_server([str(config_dir)])
    flip = False

    async def reload(i: int) -> None:
        nonlocal flip
        if i % 2:
            flip = not flip
            vs.write_text(V3.replace("subset: v3", "subset: v1") if flip else V3)
        result = await server.reload("test")
        assert result.ok and result.changed == bool(i % 2), result

    try:
        for i in range(20):  # warm-up: caches that are bounded fill here
            await reload(i)
        await split(server, 10)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(20, 220):
                await reload(i)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert server.state is not None and server.state.snapshot.version == 1 + 110
        # one load of this config builds ~100 KiB of objects; keeping them would grow by ~20 MiB
        assert grown < 512 * 1024, grown
    finally:
        await server.shutdown()
