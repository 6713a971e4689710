"""Watch config paths and call back after changes settle (debounced).

watchfiles (inotify) sees in-place edits, new files, renames and the Kubernetes ConfigMap `..data`
symlink swap, since it watches the directories themselves. Each burst of events becomes one callback.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

import watchfiles

log = logging.getLogger("shiftproxy.watch")


async def watch_config(paths: list[str], on_change: Callable[[], Awaitable[None]], stop: asyncio.Event,
                       debounce_ms: int = 150, ignore: tuple[str, ...] = ()) -> None:
    """`ignore`: directories whose changes are not config (e.g. rollout state kept in the state directory)."""
    # Watch a file's directory rather than the file: editors and `kubectl cp` replace files by rename,
    # which ends an inotify watch on the old inode.
    targets = sorted({p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p)) for p in paths})
    skipped = tuple(os.path.abspath(d).rstrip(os.sep) + os.sep for d in ignore)
    default = watchfiles.DefaultFilter()

    def wanted(change: watchfiles.Change, path: str) -> bool:
        return not os.path.abspath(path).startswith(skipped) and default(change, path)

    try:
        async for _changes in watchfiles.awatch(*targets, stop_event=stop, debounce=debounce_ms, step=50,
                                               recursive=True, ignore_permission_denied=True,
                                               watch_filter=wanted if skipped else default):
            try:
                await on_change()
            except Exception:  # a reload bug must not end watching
                log.exception("config reload after file change failed")
    except FileNotFoundError as exc:
        log.error("cannot watch config paths: %s", exc)
