"""Process lifecycle: build the first snapshot, bind listeners, reload live, drain on SIGTERM.

A reload builds a new snapshot off to the side and swaps `state.snapshot` in one assignment; an invalid
config is rejected whole and the running one stays. Listeners are diffed by (protocol, address, port):
new ones are bound, removed ones stop accepting while their open connections finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy import workers
from proxy.accesslog import AccessLog
from proxy.admin.metrics import Metrics
from proxy.config.compile import CompileOptions, build_snapshot
from proxy.config.diagnostics import ConfigError
from proxy.config.watch import watch_config
from proxy.l4 import relay
from proxy.l7.downstream import HttpDownstream
from proxy.routing.path_normalization import PathNormalization
from proxy.routing.snapshot import Snapshot
from proxy.state import ServerState
from proxy.upstream.cluster import ClusterManager

log = logging.getLogger("shiftproxy")


@dataclass(slots=True)
class RunOptions:
    config_paths: list[str]
    compile: CompileOptions = field(default_factory=CompileOptions)
    admin_host: str = "127.0.0.1"
    admin_port: int = 15000
    access_log: str = "text"
    drain_timeout: float = 15.0  # seconds to finish in-flight work on SIGTERM
    watch: bool = True
    path_normalization: PathNormalization = PathNormalization.BASE
    preserve_external_request_id: bool = False


@dataclass(slots=True)
class ReloadResult:
    ok: bool
    version: int
    changed: bool
    errors: list[str] = field(default_factory=list)


class Server:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.state: ServerState | None = None
        self.listeners: dict[tuple[str, str, int], asyncio.Server] = {}
        self.loaded_at = 0.0
        self.last_error: dict[str, Any] | None = None
        self.sources: list[str] = []
        self.objects: list[Any] = []
        self.ready = False
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._version = 0

    # start-up -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the first snapshot and bind everything; raises ConfigError / OSError on failure."""
        snapshot, loaded = build_snapshot(self.options.config_paths, self.options.compile, version=1)
        self._version = 1
        metrics = Metrics()
        metrics.config_version = 1
        self.state = ServerState(snapshot, metrics, ClusterManager(), AccessLog(self.options.access_log),
                                 loop=asyncio.get_running_loop(), path_normalization=self.options.path_normalization,
                                 preserve_external_request_id=self.options.preserve_external_request_id)
        self._remember(loaded)
        for notice in (*loaded.notices, *snapshot.notices):
            log.info("%s", notice)
        for warning in snapshot.warnings:
            log.warning("%s", warning)
        await self._sync_listeners(snapshot, strict=True)
        from proxy.admin.handlers import install

        self.admin = install(self)
        if workers.worker_index() == 0:
            host, port = await self.admin.start(self.options.admin_host, self.options.admin_port)
        else:  # a secondary worker: loopback only, found by worker 0 through the run directory
            host, port = await self.admin.start("127.0.0.1", 0)
            workers.announce_admin(port)
        self.admin_address = (host, port)
        log.info("admin listening on http://%s:%d", host, port)
        self.ready = True

    def _remember(self, loaded: Any) -> None:
        self.loaded_at = time.time()
        self.sources = list(loaded.files)
        self.objects = list(loaded.objects)

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("SIGHUP")))
        tasks = [loop.create_task(self._flush_access_log())]
        if self.options.watch:
            tasks.append(loop.create_task(
                watch_config(self.options.config_paths, lambda: self.reload("file change"), self._stop)))
        await self._stop.wait()
        await self.shutdown()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()

    # reload -------------------------------------------------------------------------------------

    async def reload(self, reason: str, extra: list[Any] | None = None, paths: list[str] | None = None
                     ) -> ReloadResult:
        """Rebuild from the config paths; swap only if valid and different. Serialised."""
        assert self.state is not None
        async with self._reload_lock:
            state = self.state
            try:
                snapshot, loaded = build_snapshot(paths or self.options.config_paths, self.options.compile,
                                                  self._version + 1, extra)
            except ConfigError as exc:
                state.metrics.reloads["failure"] += 1
                errors = [str(e) for e in exc.errors]
                self.last_error = {"at": time.time(), "reason": reason, "errors": errors}
                log.error("config rejected (%s); still serving version %d:\n  %s", reason, self._version,
                          "\n  ".join(errors))
                return ReloadResult(False, self._version, False, errors)
            return await self._swap(snapshot, loaded, reason)

    async def change(self, reason: str, build: Callable[[int], tuple[Snapshot, Any]]) -> ReloadResult:
        """Serve what `build(next_version)` returns, serialised with reloads (admin apply/delete).

        `build` validates, compiles and persists; whatever it raises propagates and nothing is swapped.
        """
        assert self.state is not None
        async with self._reload_lock:
            snapshot, loaded = build(self._version + 1)
            return await self._swap(snapshot, loaded, reason)

    async def _swap(self, snapshot: Snapshot, loaded: Any, reason: str) -> ReloadResult:
        """Serve `snapshot` unless it equals the running one. Called with the reload lock held."""
        assert self.state is not None
        state = self.state
        if snapshot.content_hash == state.snapshot.content_hash:
            self._remember(loaded)
            return ReloadResult(True, self._version, False)
        self._version += 1
        old = state.snapshot
        state.snapshot = snapshot
        state.metrics.config_version = self._version
        state.metrics.reloads["success"] += 1
        self.last_error = None
        self._remember(loaded)
        relay.on_snapshot_swap(state, old, snapshot)
        state.cluster_manager.retain(list(snapshot.clusters.values()))  # drop pools of removed endpoints
        await self._sync_listeners(snapshot, strict=False)
        for notice in snapshot.notices:
            if notice not in old.notices:
                log.info("%s", notice)
        log.info("config version %d serving (%s, hash %s)", self._version, reason, snapshot.content_hash)
        return ReloadResult(True, self._version, True)

    async def _sync_listeners(self, snapshot: Snapshot, strict: bool) -> None:
        assert self.state is not None
        loop = asyncio.get_running_loop()
        state = self.state
        wanted: dict[tuple[str, str, int], Any] = {}
        for li in snapshot.http_listeners.values():
            wanted[("http", li.address, li.port)] = (lambda n=li.name: HttpDownstream(n, state))
        for li in snapshot.tcp_listeners.values():
            wanted[("tcp", li.address, li.port)] = (lambda n=li.name: relay.TcpDownstream(n, state))
        for key in [k for k in self.listeners if k not in wanted]:
            self.listeners.pop(key).close()  # stop accepting; open connections finish on their own
            log.info("listener %s %s:%d removed; draining", *key)
        for key, factory in wanted.items():
            if key in self.listeners:
                continue
            kind, host, port = key
            try:
                self.listeners[key] = await loop.create_server(factory, host, port, reuse_address=True,
                                                               reuse_port=workers.worker_dir() is not None,
                                                               backlog=1024)
            except OSError as exc:
                if strict:
                    raise OSError(exc.errno, f"cannot listen on {host}:{port} ({kind}): {exc.strerror}") from exc
                log.error("cannot listen on %s:%d (%s): %s", host, port, kind, exc.strerror)
                continue
            log.info("listening %s on %s:%d", kind, host, port)

    # shutdown -----------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop accepting, let in-flight requests and connections finish (bounded), then close."""
        assert self.state is not None
        state = self.state
        state.draining = True
        self.ready = False
        for server in self.listeners.values():
            server.close()
        http = [c for c in list(state.connections) if not isinstance(c, relay.TcpDownstream)]
        for conn in http:
            conn.shutdown()  # idle keep-alive closes now; a busy one closes after its response
        deadline = time.monotonic() + self.options.drain_timeout
        # TCP has no message boundary to stop at: wait for connections to end, then close the rest (as Envoy)
        tcp_drain = asyncio.ensure_future(relay.drain_tcp(state, self.options.drain_timeout))
        while any(c in state.connections for c in http) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in http:
            if conn in state.connections and conn.transport is not None:
                conn.transport.abort()
        await tcp_drain
        state.cluster_manager.close_idle()
        await self.admin.close()
        state.access_log.flush()

    async def _flush_access_log(self) -> None:
        assert self.state is not None
        while True:
            await asyncio.sleep(0.5)
            self.state.access_log.flush()


def run(options: RunOptions) -> int:
    """Run until SIGTERM/SIGINT. Exit 0 after a clean drain, 1 when the config or a bind fails."""
    import uvloop

    async def main() -> int:
        server = Server(options)
        try:
            await server.start()
        except ConfigError as exc:
            print("shiftproxy: invalid config, not starting:", file=sys.stderr)
            for e in exc.errors:
                print(f"  {e}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"shiftproxy: {exc.strerror or exc}", file=sys.stderr)
            return 1
        await server.serve_forever()
        return 0

    return uvloop.run(main())
