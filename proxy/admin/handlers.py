"""Admin endpoints over the running Server: readiness, metrics, config dump, reload."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from proxy.admin.metrics import IstioCollector
from proxy.admin.server import AdminRequest, AdminResponse, AdminServer

if TYPE_CHECKING:
    from proxy.server import Server

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def install(server: Server) -> AdminServer:
    assert server.state is not None
    admin = AdminServer()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IstioCollector(server.state.metrics))

    async def ready(_: AdminRequest) -> AdminResponse:
        if server.ready:
            return AdminResponse.text(200, f"LIVE version {server.state.snapshot.version}\n")  # type: ignore[union-attr]
        return AdminResponse.text(503, "NOT READY\n")

    async def metrics(request: AdminRequest) -> AdminResponse:
        if "application/openmetrics-text" in request.headers.get("accept", ""):
            return AdminResponse(200, generate_openmetrics(registry), OPENMETRICS_TYPE)
        return AdminResponse(200, generate_latest(registry), PROMETHEUS_TYPE)

    async def config_dump(_: AdminRequest) -> AdminResponse:
        return AdminResponse.json(200, dump(server))

    async def reload(_: AdminRequest) -> AdminResponse:
        result = await server.reload("admin /reload")
        payload = {"ok": result.ok, "version": result.version, "changed": result.changed, "errors": result.errors}
        return AdminResponse.json(200 if result.ok else 422, payload)

    admin.route("GET", "/ready", ready)
    admin.route("GET", "/metrics", metrics)
    admin.route("GET", "/stats/prometheus", metrics)  # Envoy's path, for scrape configs written for Envoy
    admin.route("GET", "/config_dump", config_dump)
    admin.route("POST", "/reload", reload)
    return admin


def dump(server: Server) -> dict[str, Any]:
    assert server.state is not None
    snap = server.state.snapshot
    return {
        "version": snap.version,
        "content_hash": snap.content_hash,
        "loaded_at": server.loaded_at,
        "sources": server.sources,
        "last_reload_error": server.last_error,
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
