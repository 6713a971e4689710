"""Process-wide state shared by every listener: the current snapshot reference and the shared services.

`state.snapshot` is replaced by one assignment on the event-loop thread when a reload succeeds; a
request reads it once when its headers arrive, a TCP connection once when it is accepted.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.admin.metrics import Metrics
from proxy.admin.ui import TrafficPage
from proxy.l4.timers import Timers
from proxy.l7.watchdog import Watchdog
from proxy.routing.path_normalization import PathNormalization
from proxy.routing.snapshot import Snapshot
from proxy.upstream.shift import empty_stats

if TYPE_CHECKING:
    from proxy.accesslog import AccessLog
    from proxy.upstream.cluster import ClusterManager


@dataclass(slots=True)
class ReloadResult:
    """The answer of a reload or an admin change: serving `version`, `changed` when it is new."""

    ok: bool
    version: int
    changed: bool
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a worker that did not confirm the change


@dataclass(slots=True)
class ServerState:
    snapshot: Snapshot
    metrics: Metrics
    cluster_manager: ClusterManager
    access_log: AccessLog
    # random source for weighted picks; `getrandbits(32)` per pick (tests may seed or replace it)
    rng: random.Random = field(default_factory=random.Random)
    # open downstream protocol objects, so shutdown can ask each one to finish
    connections: set[Any] = field(default_factory=set)
    draining: bool = False
    # the event loop serving it, once known: asyncio.get_running_loop() costs a getpid() system call,
    # too much to pay per accepted connection
    loop: asyncio.AbstractEventLoop | None = None
    # the idle and request-header timeouts of every downstream HTTP connection, on one timer
    http_watchdog: Watchdog = field(default_factory=Watchdog)
    # the timers of TCP relay connections (connect, report and idle), queued by delay
    tcp_timers: Timers = field(default_factory=Timers)
    # edge rules for HTTP requests (`run --path-normalization`, `--preserve-external-request-id`)
    path_normalization: PathNormalization = PathNormalization.BASE
    preserve_external_request_id: bool = False
    # the live traffic page's samples and recent config changes (proxy.admin.ui)
    traffic_page: TrafficPage = field(default_factory=TrafficPage)

    def __post_init__(self) -> None:
        self.metrics.resilience_source = self.cluster_manager.resilience_stats
        self.metrics.shift_source = lambda: empty_stats(self.snapshot, self.cluster_manager)
