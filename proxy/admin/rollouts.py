"""Admin endpoints of rollouts (the controller runs in worker 0, which serves the admin address):

    GET  /rollouts[?namespace=&name=]          every rollout's status, or one with its history
    POST /rollouts/promote?name=[&full=1]      skip the current step (full: every remaining one)
    POST /rollouts/pause|resume|abort?name=    (namespace= defaults to `default`)
    GET  /rollouts/counts?protocol=&prefix=&suffix=   this worker's cumulative counts of some clusters,
                                               for worker 0's analysis under --workers
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from proxy.admin.server import AdminRequest, AdminResponse, AdminServer
from proxy.rollout import analysis
from proxy.rollout.machine import COMMANDS, CommandError


def _query(request: AdminRequest, name: str, default: str = "") -> str:
    return next((v for k, v in request.query if k == name), default)


class _Collector:
    def __init__(self, controller: Any) -> None:
        self.controller = controller

    def collect(self) -> Any:
        return self.controller.collect()


def install_rollouts(admin: AdminServer, server: Any, registry: CollectorRegistry) -> None:
    controller = getattr(server, "rollouts", None)
    if controller is not None:
        registry.register(_Collector(controller))  # type: ignore[arg-type]

    def absent() -> AdminResponse:
        return AdminResponse.json(404, {"error": "rollouts run in worker 0: ask the proxy's admin address"})

    async def get(request: AdminRequest) -> AdminResponse:
        if controller is None:
            return absent()
        name = _query(request, "name")
        if not name:
            return AdminResponse.json(200, {"rollouts": controller.list()})
        try:
            return AdminResponse.json(200, controller.status(_query(request, "namespace") or "default", name))
        except KeyError as exc:
            return AdminResponse.json(404, {"error": exc.args[0]})

    def command(verb: str) -> Any:
        async def handle(request: AdminRequest) -> AdminResponse:
            if controller is None:
                return absent()
            name = _query(request, "name")
            if not name:
                return AdminResponse.json(400, {"error": f"name= is required: the rollout to {verb}"})
            full = _query(request, "full").lower() in ("1", "true", "yes")
            try:
                status = await controller.command(_query(request, "namespace") or "default", name, verb, full)
            except KeyError as exc:
                return AdminResponse.json(404, {"error": exc.args[0]})
            except CommandError as exc:
                return AdminResponse.json(409, {"error": str(exc)})
            return AdminResponse.json(200, status)
        return handle

    async def counts(request: AdminRequest) -> AdminResponse:
        protocol = _query(request, "protocol", "http")
        prefix, suffix = _query(request, "prefix"), _query(request, "suffix")
        if protocol not in ("http", "tcp") or not suffix:
            return AdminResponse.json(400, {"error": "protocol=http|tcp and suffix= are required"})
        assert server.state is not None
        return AdminResponse.json(200, analysis.read_counts(server.state.metrics, protocol, prefix, suffix).to_json())

    admin.route("GET", "/rollouts", get)
    for verb in COMMANDS:
        admin.route("POST", f"/rollouts/{verb}", command(verb))
    admin.route("GET", "/rollouts/counts", counts)
