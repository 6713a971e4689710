"""Process lifecycle: build the first snapshot, bind listeners, reload live, drain on SIGTERM.

A reload builds a new snapshot off to the side and swaps `state.snapshot` in one assignment; an invalid
config is rejected whole and the running one stays. Listeners are diffed by (protocol, address, port):
new ones are bound, removed ones stop accepting while their open connections finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from proxy import workers
from proxy.accesslog import AccessLog
from proxy.admin.handlers import install
from proxy.admin.metrics import Metrics
from proxy.capture import accept as capture_accept
from proxy.config import store
from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.diagnostics import ConfigError
from proxy.config.load import DEFAULT_MAX_BYTES, LoadResult, RawObject
from proxy.config.watch import watch_config
from proxy.heap import Heap
from proxy.l4 import lifecycle, relay
from proxy.l4.sni import SniDownstream
from proxy.l7.downstream import HttpDownstream
from proxy.rollout.controller import RolloutController
from proxy.routing.path_normalization import PathNormalization
from proxy.routing.snapshot import Snapshot, listener_kind
from proxy.state import ReloadResult, ServerState
from proxy.tls.contexts import ListenerTls, front_context
from proxy.tls.credentials import Credential
from proxy.upstream.cluster import ClusterManager

log = logging.getLogger("shiftproxy")
CERT_CHECK_INTERVAL = 1.0  # seconds between checks of the certificate files for rotation


def _probe(credentials: tuple[Credential, ...]) -> list[tuple[Credential, bool, str | None]]:
    return [(c, *c.probe()) for c in credentials]


def _listener_tls(state: ServerState, kind: str, name: str) -> ListenerTls | None:
    """The TLS of listener `name` in the live config (the SNI callback asks on every handshake)."""
    snapshot = state.snapshot
    listener = (snapshot.http_listeners if kind == "http" else snapshot.tcp_listeners).get(name)
    return listener.tls if listener is not None else None  # type: ignore[union-attr]


@dataclass(slots=True)
class RunOptions:
    config_paths: list[str]
    compile: CompileOptions = field(default_factory=CompileOptions)
    admin_host: str = "127.0.0.1"
    admin_port: int = 15000
    access_log: str = "text"
    drain_timeout: float = 15.0  # seconds to finish in-flight work on SIGTERM
    watch: bool = True
    state_dir: str = ""  # applied objects; "" = $SHIFTPROXY_STATE_DIR or the per-user default
    max_config_bytes: int = DEFAULT_MAX_BYTES  # per config file
    path_normalization: PathNormalization = PathNormalization.BASE
    preserve_external_request_id: bool = False

    def __post_init__(self) -> None:
        self.state_dir = store.resolve_state_dir(self.state_dir or None, self.config_paths)


class Server:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.state: ServerState | None = None
        self.listeners: dict[tuple[str, str, int], asyncio.Server] = {}
        self.loaded_at = 0.0
        self.last_error: dict[str, Any] | None = None
        self.loaded: store.Loaded | None = None
        self.sources: list[str] = []
        self.objects: list[RawObject] = []
        self.ready = False
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._version = 0
        self._previous: dict[str, list[RawObject]] = {}  # objects per file of the last load served
        self._notices: set[str] = set()
        self.rollouts: RolloutController | None = None
        self.heap = Heap()

    @property
    def compile_options(self) -> CompileOptions:
        return self.options.compile

    # start-up -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the first snapshot and bind everything; raises ConfigError / StoreError / OSError."""
        problem = store.check_state_dir(self.options.state_dir, self.options.config_paths)
        if problem:
            raise store.StoreError(problem)
        snapshot, loaded = self._build(1)
        self._version = 1
        metrics = Metrics()
        metrics.config_version = 1
        self.state = ServerState(snapshot, metrics, ClusterManager(), AccessLog(self.options.access_log),
                                 loop=asyncio.get_running_loop(), path_normalization=self.options.path_normalization,
                                 preserve_external_request_id=self.options.preserve_external_request_id)
        self._remember(loaded)
        for notice in snapshot.notices:
            log.info("%s", notice)
        for warning in snapshot.warnings:
            log.warning("%s", warning)
        try:  # so it can be watched, and so a permission problem shows now rather than at the first apply
            os.makedirs(self.options.state_dir, exist_ok=True)
            log.info("applied objects are kept in %s", self.options.state_dir)
        except OSError as exc:
            log.warning("state directory %s cannot be created (%s): `apply` and `delete` will fail; choose "
                        "a writable --state-dir", self.options.state_dir, exc.strerror or exc)
        await self._sync_listeners(snapshot, strict=True)
        # --workers: worker 0 alone runs rollouts (it already coordinates every config change)
        self.rollouts = RolloutController(self, self.options.state_dir) if workers.worker_index() == 0 else None
        self.admin = install(self)
        if workers.worker_index() == 0:
            host, port = await self.admin.start(self.options.admin_host, self.options.admin_port)
        else:  # a secondary worker: loopback only, found by worker 0 through the run directory
            host, port = await self.admin.start("127.0.0.1", 0)
            workers.announce_admin(port)
        self.admin_address = (host, port)
        log.info("admin listening on http://%s:%d", host, port)
        self.ready = True

    def load(self, config: LoadResult | None = None) -> store.Loaded:
        """Read the config paths (unless `config` is given) and the state laid over them. Blocking:
        call it from a worker thread once serving."""
        if config is None:
            return store.load_config(self.options.config_paths, self.options.state_dir,
                                     self.options.max_config_bytes, self._previous)
        state = store.load_state(self.options.state_dir, self.options.max_config_bytes, self._previous)
        return store.Loaded(config, state, store.overlay(config, state))

    def _build(self, version: int) -> tuple[Snapshot, store.Loaded]:
        """load → validate → compile; raises ConfigError with every error at once. Blocking."""
        from proxy.config.validate import validate

        loaded = self.load()
        objects = loaded.served.objects
        errors, warnings = validate(objects)
        if loaded.served.errors or errors:
            raise ConfigError(loaded.served.errors + errors)
        snapshot = compile_snapshot(objects, self.options.compile, version,
                                    warnings=[str(w) for w in warnings], notices=loaded.served.notices)
        return snapshot, loaded

    def _remember(self, loaded: store.Loaded) -> None:
        self.loaded_at = time.time()
        self.loaded = loaded
        self.sources = list(loaded.served.files)
        self.objects = list(loaded.served.objects)
        self._previous = loaded.by_file()
        fresh = [n for n in loaded.served.notices if n not in self._notices]
        if self.ready:  # start-up logs every notice itself
            for notice in fresh:
                log.info("%s", notice)
        self._notices = set(loaded.served.notices)

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        pending: set[asyncio.Task[Any]] = set()  # the loop keeps only weak references to tasks

        def on_sighup() -> None:
            task = loop.create_task(self.reload("SIGHUP"))
            pending.add(task)
            task.add_done_callback(pending.discard)

        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        tasks = [loop.create_task(self._flush_access_log())]
        if self.rollouts is not None:
            self.rollouts.start()
        # --workers: worker 0 alone watches, and makes every change live in the others before its own
        if self.options.watch and workers.worker_index() == 0:
            paths = [*self.options.config_paths]
            if os.path.isdir(self.options.state_dir):
                paths.append(self.options.state_dir)  # applies by another proxy sharing this state
            tasks.append(loop.create_task(watch_config(paths, lambda: self.reload("file change"), self._stop,
                                                       ignore=(os.path.join(self.options.state_dir, "rollouts"),))))
        tasks.append(loop.create_task(self._rotate_certificates()))
        if self.heap.enabled:
            tasks.append(loop.create_task(self._release_heap()))
        await self._stop.wait()
        if self.rollouts is not None:
            await self.rollouts.stop()
        await self.shutdown()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()

    # reload -------------------------------------------------------------------------------------

    async def reload(self, reason: str) -> ReloadResult:
        """Rebuild from the config paths and state; swap only if valid and different. Serialised.

        The parsing and compiling run in a worker thread, so traffic and the admin API keep being
        served while a big file is read.
        """
        assert self.state is not None
        async with self._reload_lock:
            try:
                snapshot, loaded = await asyncio.to_thread(self._build, self._version + 1)
            except ConfigError as exc:
                errors = [str(e) for e in exc.errors]
                self.record_failure(reason, errors)
                return ReloadResult(False, self._version, False, errors)
            except Exception as exc:  # a bug while building must not end reloading, nor the process
                log.exception("config reload (%s) failed", reason)
                errors = [f"internal error while building the config: {exc!r}"]
                self.record_failure(reason, errors)
                return ReloadResult(False, self._version, False, errors)
            return await self._swap(snapshot, loaded, reason)

    def record_failure(self, reason: str, errors: list[str]) -> None:
        """A config that did not load: counted, shown on /config_dump, logged; the running one stays."""
        assert self.state is not None
        self.state.metrics.reloads["failure"] += 1
        self.last_error = {"at": time.time(), "reason": reason, "errors": errors}
        log.error("config rejected (%s); still serving version %d:\n  %s", reason, self._version,
                  "\n  ".join(errors))

    async def change(self, reason: str, build: Callable[[int], tuple[Snapshot, store.Loaded]]) -> ReloadResult:
        """Serve what `build(next_version)` returns, serialised with reloads (admin apply/delete).

        `build` validates, compiles and persists, in a worker thread; whatever it raises propagates and
        nothing is swapped.
        """
        assert self.state is not None
        async with self._reload_lock:
            snapshot, loaded = await asyncio.to_thread(build, self._version + 1)
            return await self._swap(snapshot, loaded, reason)

    async def _swap(self, snapshot: Snapshot, loaded: store.Loaded, reason: str) -> ReloadResult:
        """Serve `snapshot` unless it equals the running one. Called with the reload lock held."""
        assert self.state is not None
        state = self.state
        self.last_error = None  # this load succeeded, whether or not it changes what is served
        if snapshot.content_hash == state.snapshot.content_hash:
            self._remember(loaded)
            return ReloadResult(True, self._version, False)
        warnings = []
        if workers.sibling_admins():
            # --workers: the others serve the change before this one does, so whoever sees this worker's
            # new version (the admin API, the answer to apply or reload) sees a change live everywhere
            warnings = [f"not yet live in {f}" for f in await asyncio.to_thread(workers.reload_siblings)]
            for warning in warnings:
                log.warning("config version %d: %s", self._version + 1, warning)
        self._version += 1
        old = state.snapshot
        state.snapshot = snapshot
        state.metrics.config_version = self._version
        state.metrics.reloads["success"] += 1
        self._remember(loaded)
        lifecycle.on_snapshot_swap(state, old, snapshot)
        state.traffic_page.record_change(old, snapshot, reason)
        state.cluster_manager.retain(list(snapshot.clusters.values()))  # drop pools of removed endpoints
        await self._sync_listeners(snapshot, strict=False)
        for notice in snapshot.notices:
            if notice not in old.notices and notice not in loaded.served.notices:
                log.info("%s", notice)
        for warning in snapshot.warnings:  # e.g. a field a file now sets that is not enforced
            if warning not in old.warnings:
                log.warning("%s", warning)
        log.info("config version %d serving (%s, hash %s)", self._version, reason, snapshot.content_hash)
        return ReloadResult(True, self._version, True, warnings=warnings)

    async def _sync_listeners(self, snapshot: Snapshot, strict: bool) -> None:
        assert self.state is not None
        loop = asyncio.get_running_loop()
        state = self.state
        wanted: dict[tuple[str, str, int], Any] = {}
        contexts: dict[tuple[str, str, int], ssl.SSLContext] = {}
        for li in snapshot.http_listeners.values():
            key = (listener_kind("http", li.tls), li.address, li.port)
            wanted[key] = partial(HttpDownstream, li.name, state)  # (see the TCP listeners below)
            if li.tls is not None:
                contexts[key] = front_context(lambda n=li.name: _listener_tls(state, "http", n))
        for li in snapshot.tcp_listeners.values():
            key = (listener_kind("tcp", li.tls, bool(li.sni_routes)), li.address, li.port)
            # a partial, not a lambda: no Python frame per accepted connection
            wanted[key] = partial(SniDownstream if li.sni_routes else relay.TcpDownstream, li.name, state)
            if li.tls is not None:
                contexts[key] = front_context(lambda n=li.name: _listener_tls(state, "tcp", n))
        if snapshot.capture is not None:
            capture_accept.add_listeners(wanted, snapshot, state)
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
                                                               backlog=1024, ssl=contexts.get(key))
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
        tcp_drain = asyncio.ensure_future(lifecycle.drain_tcp(state, self.options.drain_timeout))
        while any(c in state.connections for c in http) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in http:
            if conn in state.connections and conn.transport is not None:
                conn.transport.abort()
        await tcp_drain
        state.cluster_manager.close_idle()
        await self.admin.close()
        state.access_log.flush()

    async def _rotate_certificates(self) -> None:
        """Reload changed certificate files into their contexts: new handshakes get the new certificate,
        open connections keep theirs; a file set that does not load keeps the old one and is reported."""
        assert self.state is not None
        while True:
            await asyncio.sleep(CERT_CHECK_INTERVAL)
            credentials = self.state.snapshot.credentials
            if not credentials:
                continue
            try:
                await self._rotate(credentials)
            except Exception:  # a bug here must not end rotation, nor the process
                log.exception("certificate rotation check failed")

    async def _rotate(self, credentials: tuple[Credential, ...]) -> None:
        before = [c.ca_stamp for c in credentials]
        results = await asyncio.to_thread(_probe, credentials)  # file reads off the loop
        rebuild = False
        for index, (credential, changed, problem) in enumerate(results):
            if changed and credential.files.cert:
                problem = credential.install()  # here, on the loop's thread: no handshake runs meanwhile
                if problem is None:
                    log.info("certificate %s reloaded", credential.files.cert)
            if problem:
                self.record_failure("certificate rotation", [problem])
            if changed and not problem and credential.ca_stamp != before[index]:
                rebuild = True
        if rebuild:
            await self.reload("CA bundle change")  # fresh contexts: one cannot forget a CA

    async def _release_heap(self) -> None:
        """Return freed heap pages to the OS now and then. In a worker thread: after a burst of
        connections one call can take milliseconds, and the loop need not wait for it."""
        while True:
            await asyncio.sleep(self.heap.interval)
            await asyncio.to_thread(self.heap.release)

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
        except store.StoreError as exc:
            print(f"shiftproxy: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"shiftproxy: {exc.strerror or exc}", file=sys.stderr)
            return 1
        await server.serve_forever()
        return 0

    return uvloop.run(main())
