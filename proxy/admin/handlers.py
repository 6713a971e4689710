"""Admin endpoints over the running Server: readiness, metrics, config dump, reload, live config changes.

`POST /apply` and `POST /delete` change the config like `kubectl apply|delete`: the request's objects are
checked against the whole resulting config (every error at once, nothing changed when there is one),
persisted in the state directory (never in the config paths), and the answer comes only once the new
snapshot is serving (in every worker).
`GET /objects` lists the serving objects (`get`); `GET /explain` says where a request or connection would go.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from proxy import workers
from proxy.admin import ui
from proxy.admin.metrics import IstioCollector
from proxy.admin.rollouts import install_rollouts
from proxy.admin.server import AdminRequest, AdminResponse, AdminServer
from proxy.config import store
from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.diagnostics import ConfigError, Diagnostic
from proxy.config.load import ISTIO_KINDS, LoadResult, RawObject, load_text
from proxy.gatewayapi import kinds as gateway_api
from proxy.gatewayapi.status import statuses
from proxy.rollout import kind as rollout_kind
from proxy.routing.explain import ExplainError, explain_http_everywhere, explain_tcp, find_listener
from proxy.routing.path_normalization import PathNormalization, normalize
from proxy.routing.snapshot import HttpListener, Snapshot
from proxy.state import ReloadResult, ServerState

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STDIN = "<stdin>"


class ServerControl(Protocol):
    """What the admin API needs of the running server (proxy.server.Server), without importing it."""

    state: ServerState | None
    ready: bool
    loaded_at: float
    last_error: dict[str, Any] | None
    loaded: store.Loaded | None
    sources: list[str]
    objects: list[RawObject]

    @property
    def compile_options(self) -> CompileOptions: ...

    def load(self, config: LoadResult | None = None) -> store.Loaded: ...

    def record_failure(self, reason: str, errors: list[str]) -> None: ...

    async def reload(self, reason: str) -> ReloadResult: ...

    async def change(self, reason: str, build: Callable[[int], tuple[Snapshot, store.Loaded]]) -> ReloadResult: ...


def install(server: ServerControl) -> AdminServer:
    assert server.state is not None
    admin = AdminServer()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IstioCollector(server.state.metrics))

    async def ready(_: AdminRequest) -> AdminResponse:
        missing = workers.missing_workers()
        if missing:
            return AdminResponse.text(503, f"NOT READY: {missing} worker(s) still starting\n")
        if server.ready:
            return AdminResponse.text(200, f"LIVE version {server.state.snapshot.version}\n")  # type: ignore[union-attr]
        return AdminResponse.text(503, "NOT READY\n")

    async def metrics(request: AdminRequest) -> AdminResponse:
        source = registry
        siblings = workers.sibling_admins()
        if siblings and ("local", "1") not in request.query:
            # --workers: one scrape answers for every worker, samples summed
            others = await asyncio.gather(*(asyncio.to_thread(workers.fetch, a, "/metrics?local=1")
                                            for a in siblings), return_exceptions=True)
            texts = [o.decode() for o in others if isinstance(o, bytes)]
            merged = list(workers.merge_metrics(generate_latest(registry).decode(), texts))
            source = CollectorRegistry(auto_describe=False)
            source.register(_Fixed(merged))
        if "application/openmetrics-text" in request.headers.get("accept", ""):
            return AdminResponse(200, generate_openmetrics(source), OPENMETRICS_TYPE)
        return AdminResponse(200, generate_latest(source), PROMETHEUS_TYPE)

    async def config_dump(_: AdminRequest) -> AdminResponse:
        return AdminResponse.json(200, dump(server))

    async def reload(_: AdminRequest) -> AdminResponse:
        result = await server.reload("admin /reload")
        payload = {"ok": result.ok, "version": result.version, "changed": result.changed,
                   "errors": result.errors, "warnings": result.warnings}
        return AdminResponse.json(200 if result.ok else 422, payload)

    async def apply(request: AdminRequest) -> AdminResponse:
        return await apply_objects(server, request)

    async def delete(request: AdminRequest) -> AdminResponse:
        return await delete_objects(server, request)

    async def objects(request: AdminRequest) -> AdminResponse:
        return list_objects(server, request)

    async def explain(request: AdminRequest) -> AdminResponse:
        assert server.state is not None
        return explain_request(server.state.snapshot, request, server.state.path_normalization)

    admin.route("GET", "/ready", ready)
    admin.route("GET", "/metrics", metrics)
    admin.route("GET", "/stats/prometheus", metrics)  # Envoy's path, for scrape configs written for Envoy
    admin.route("GET", "/config_dump", config_dump)
    admin.route("POST", "/reload", reload)
    admin.route("POST", "/apply", apply)
    admin.route("POST", "/delete", delete)
    admin.route("GET", "/objects", objects)
    admin.route("GET", "/explain", explain)

    async def ui_page(_: AdminRequest) -> AdminResponse:
        return AdminResponse(200, ui.page(), "text/html; charset=utf-8", {"cache-control": "no-store"})

    async def ui_data(_: AdminRequest) -> AdminResponse:
        assert server.state is not None
        return AdminResponse.json(200, server.state.traffic_page.data(server.state))

    admin.route("GET", "/ui", ui_page)  # the live traffic page (proxy.admin.ui)
    admin.route("GET", "/ui/data", ui_data)
    install_rollouts(admin, server, registry)
    return admin


def dump(server: ServerControl) -> dict[str, Any]:
    assert server.state is not None
    snap = server.state.snapshot
    return {
        "version": snap.version,
        "content_hash": snap.content_hash,
        "loaded_at": server.loaded_at,
        "sources": server.sources,
        "last_reload_error": server.last_error,
        "state": server.loaded.state.summary() if server.loaded is not None else None,
        "warnings": list(snap.warnings),
        "objects": [o.body for o in server.objects],
        "listeners": [
            {"name": li.name, "protocol": "http", "address": li.address, "port": li.port, "role": li.role}
            for li in snap.http_listeners.values()
        ] + [
            {"name": li.name, "protocol": "tcp", "address": li.address, "port": li.port, "role": li.role}
            for li in snap.tcp_listeners.values()
        ],
        "clusters": {
            name: {"endpoints": [f"{e.address}:{e.port}" for e in c.endpoints], "lb_policy": c.lb_policy,
                   "subset": c.subset}
            for name, c in snap.clusters.items()
        },
    }


# apply / delete -------------------------------------------------------------------------------------


def _query(request: AdminRequest, name: str, default: str = "") -> str:
    return next((v for k, v in request.query if k == name), default)


def _flag(request: AdminRequest, name: str) -> bool:
    return _query(request, name).lower() in ("1", "true", "yes", "server", "all")


def request_objects(request: AdminRequest) -> LoadResult:
    """The objects of a request body, with file names for errors.

    The body is YAML (one or many documents) named by `?filename=` (default `<stdin>`), or JSON
    `{"files": [{"filename": ..., "content": ...}, ...]}` so a client can send several files at once.
    `?namespace=` is kubectl's `-n`: the namespace of objects that name none. The same object twice is an
    error naming both places.
    """
    files: list[tuple[str, str]] = []
    text = request.body.decode("utf-8", errors="replace")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("files"), list):
            for item in payload["files"]:
                if isinstance(item, dict):
                    files.append((str(item.get("filename") or STDIN), str(item.get("content") or "")))
    if not files:
        files = [(_query(request, "filename", STDIN) or STDIN, text)]
    loaded = LoadResult()
    namespace = _query(request, "namespace") or "default"
    for filename, content in files:
        loaded.files.append(filename)
        load_text(content, filename, loaded, default_namespace=namespace)
    seen: dict[tuple[str, str, str], RawObject] = {}
    unique: list[RawObject] = []
    for obj in loaded.objects:
        first = seen.setdefault(obj.key, obj)
        if first is obj:
            unique.append(obj)
        else:
            loaded.errors.append(Diagnostic(obj.file, obj.line, "metadata.name",
                                            f"{obj.kind} {obj.namespace}/{obj.name} is already defined at "
                                            f"{first.file}:{first.line}"))
    loaded.objects = unique
    return loaded


def _validate(objects: list[RawObject]) -> tuple[list[Diagnostic], list[Diagnostic]]:
    from proxy.config.validate import validate

    return validate(objects) if objects else ([], [])


def _object_results(plan: store.Plan) -> list[dict[str, Any]]:
    return [{"kind": o.kind, "apiVersion": o.api_version, "namespace": o.namespace, "name": o.name,
             "result": result} for o, result in plan.results]


def namespace_mismatch(request: AdminRequest, objects: list[RawObject]) -> str | None:
    """kubectl's refusal when `-n` names another namespace than an object does, or None."""
    wanted = _query(request, "namespace")
    for obj in objects if wanted else []:
        written = (obj.body.get("metadata") or {}).get("namespace")
        if written and written != wanted:
            return (f'the namespace from the provided object "{written}" does not match the namespace '
                    f'"{wanted}". You must pass \'--namespace={written}\' to perform this operation.')
    return None


async def apply_objects(server: ServerControl, request: AdminRequest) -> AdminResponse:
    """POST /apply: create or replace objects; 422 with every error, 409/500 if they cannot be stored."""
    return await _change_objects(server, request, "apply", store.plan_apply)


async def delete_objects(server: ServerControl, request: AdminRequest) -> AdminResponse:
    """POST /delete: remove objects by kind/namespace/name (the body's specs are ignored)."""
    return await _change_objects(server, request, "delete", store.plan_delete)


async def _change_objects(server: ServerControl, request: AdminRequest, verb: str,
                          make_plan: Callable[[store.Loaded, list[RawObject]], store.Plan]) -> AdminResponse:
    assert server.state is not None
    incoming = await asyncio.to_thread(request_objects, request)  # a big body must not stall traffic
    if incoming.errors:
        return _rejected(server, [str(e) for e in incoming.errors], [])
    if not incoming.objects:
        return AdminResponse.json(400, {"errors": [f"no Istio objects to {verb}"], "skipped": incoming.notices,
                                        "version": server.state.snapshot.version})
    mismatch = namespace_mismatch(request, incoming.objects)
    if mismatch:
        return AdminResponse.json(400, {"error": mismatch, "version": server.state.snapshot.version})
    return await _change(server, f"admin {verb}", incoming, lambda loaded: make_plan(loaded, incoming.objects),
                         _flag(request, "dry_run"))


async def _change(server: ServerControl, reason: str, incoming: LoadResult,
                  make_plan: Callable[[store.Loaded], store.Plan], dry_run: bool) -> AdminResponse:
    assert server.state is not None
    warnings: list[str] = []
    plan_holder: list[store.Plan] = []

    def build(version: int) -> tuple[Snapshot, store.Loaded]:  # in a worker thread
        loaded = server.load()
        if loaded.served.errors:
            raise _Broken(loaded.served.errors)
        plan = make_plan(loaded)
        plan_holder.append(plan)
        errors, warns = _validate(plan.objects)
        # only the request's own warnings: the rest of the config's were said when it was loaded
        warnings.extend(str(w) for w in warns if w.file in incoming.files)
        if errors:
            raise ConfigError(errors)
        snapshot = compile_snapshot(plan.stored, server.compile_options, version,
                                    warnings=[str(w) for w in warns], notices=loaded.served.notices)
        if dry_run:
            raise _DryRun(snapshot)
        if not plan.changed:
            return snapshot, loaded
        store.commit(plan.changes, loaded.state.directory)
        return snapshot, server.load(config=loaded.config)

    try:
        result = await server.change(reason, build)
        warnings.extend(result.warnings)
    except _Broken as exc:  # the config on disk does not load: a reload failure, whoever noticed it
        errors = [str(e) for e in exc.errors]
        server.record_failure(reason, errors)
        return _rejected(server, errors, warnings)
    except ConfigError as exc:
        return _rejected(server, [str(e) for e in exc.errors], warnings)
    except store.StoreError as exc:
        return AdminResponse.json(exc.status, {"error": str(exc), "version": server.state.snapshot.version})
    except _DryRun as dry:
        return AdminResponse.json(200, {
            "version": server.state.snapshot.version, "dry_run": True, "would_change_routing":
                dry.snapshot.content_hash != server.state.snapshot.content_hash,
            "objects": _object_results(plan_holder[-1]), "warnings": warnings, "skipped": incoming.notices,
        })
    return AdminResponse.json(200, {
        "version": result.version, "changed": result.changed, "dry_run": False,
        "objects": _object_results(plan_holder[-1]), "warnings": warnings, "skipped": incoming.notices,
    })


class _Broken(ConfigError):
    """The config paths or the state do not load as they are: nothing can be changed on top of them."""


class _DryRun(Exception):
    """Raised out of a dry-run build so the server swaps nothing."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__("dry run")
        self.snapshot = snapshot


def _rejected(server: ServerControl, errors: list[str], warnings: list[str]) -> AdminResponse:
    assert server.state is not None
    return AdminResponse.json(422, {"errors": errors, "warnings": warnings,
                                    "version": server.state.snapshot.version})


# get -------------------------------------------------------------------------------------------------


def list_objects(server: ServerControl, request: AdminRequest) -> AdminResponse:
    """GET /objects?kind=&namespace=&name=: the serving objects, each with where it is defined."""
    assert server.state is not None
    kind = _query(request, "kind")
    if kind:
        known = (*ISTIO_KINDS, *sorted(gateway_api.KINDS), rollout_kind.KIND)
        canonical = {k.lower(): k for k in known}.get(kind.lower())
        if canonical is None:
            kinds = ", ".join(known)
            return AdminResponse.json(400, {"error": f"unknown kind {kind!r}; kinds: {kinds}"})
        kind = canonical
    namespace, name = _query(request, "namespace"), _query(request, "name")
    now = time.time()
    out = []
    status = statuses(server.objects) if not kind or kind in gateway_api.KINDS else {}
    for obj in sorted(server.objects, key=lambda o: (o.kind, o.namespace, o.name)):
        if any(want and have != want for want, have in ((kind, obj.kind), (namespace, obj.namespace),
                                                        (name, obj.name))):
            continue
        body = dict(obj.body)
        body["metadata"] = {**(body.get("metadata") or {}), "namespace": obj.namespace}
        if obj.key in status:
            body["status"] = status[obj.key]  # as Istio's gateway controller reports it
        try:
            age: float | None = max(0.0, now - os.stat(obj.file).st_mtime)
        except OSError:
            age = None
        out.append({"kind": obj.kind, "apiVersion": obj.api_version, "namespace": obj.namespace,
                    "name": obj.name, "file": obj.file, "line": obj.line, "age_seconds": age, "object": body})
    return AdminResponse.json(200, {"version": server.state.snapshot.version, "objects": out})


# explain ---------------------------------------------------------------------------------------------


def explain_request(snapshot: Snapshot, request: AdminRequest,
                    normalization: PathNormalization = PathNormalization.BASE) -> AdminResponse:
    """GET /explain?authority=&path=&method=&header=k:v&listener=&port=&destination_ip=

    The path is normalized as the listeners normalize a request's (`run --path-normalization`), so the
    answer is about the route that request would really take."""
    headers: dict[str, str] = {}
    for key, value in request.query:
        if key == "header":
            name, sep, val = value.partition(":")
            if not sep or not name.strip():
                return AdminResponse.json(400, {"error": f"header must be NAME:VALUE, got {value!r}"})
            headers[name.strip().lower()] = val.strip()
    port_text = _query(request, "port")
    if port_text and not port_text.isdigit():
        return AdminResponse.json(400, {"error": f"port must be a number, got {port_text!r}"})
    try:
        name, port = _query(request, "listener") or None, int(port_text) if port_text else None
        # no listener named: explain on every HTTP listener and answer from the one that routes it
        listener = None if name is None and port is None and snapshot.http_listeners else \
            find_listener(snapshot, name, port)
        if listener is None or isinstance(listener, HttpListener):
            authority = _query(request, "authority") or headers.get("host", "")
            if not authority:
                where = f"listener {listener.name} is HTTP" if listener else "HTTP listeners"
                raise ExplainError(f"{where}: say which host (authority=HOST[:PORT])")
            raw_path = _query(request, "path", "/") or "/"
            path = normalize(raw_path.encode("latin-1", "replace"), normalization)
            if path is None:
                raise ExplainError(f"path {raw_path!r} is refused with 400 by path normalization "
                                   f"({normalization.value}): it climbs above / or has a bad escape")
            answer = explain_http_everywhere(snapshot, listener, authority, path.decode("latin-1"),
                                             _query(request, "method", "GET") or "GET", headers,
                                             _query(request, "scheme", "http") or "http")
        else:
            answer = explain_tcp(snapshot, listener, _query(request, "destination_ip") or None,
                                 _query(request, "sni") or None)
    except ExplainError as exc:
        return AdminResponse.json(404 if "no listener" in str(exc) else 400, {"error": str(exc)})
    return AdminResponse.json(200, answer)


class _Fixed:
    """A collector for families already built (the merged metrics of several workers)."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families
