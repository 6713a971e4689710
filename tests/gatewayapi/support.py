"""Helpers for the Gateway API tests: YAML in, a compiled snapshot out, and which route a request takes."""

from __future__ import annotations

from typing import Any

from proxy.config.compile import CompileOptions, compile_snapshot
from proxy.config.diagnostics import Diagnostic
from proxy.config.load import LoadResult, RawObject, load_text
from proxy.config.validate import validate
from proxy.routing.explain import explain_http
from proxy.routing.snapshot import Snapshot
from tests.registry import http_service_entry

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
"""
# backends a, b, c, d: one endpoint each, so the cluster a request reaches names the route that won
BACKENDS = "---".join(http_service_entry(name, {"v1": port}) for name, port in
                      (("a", 9001), ("b", 9002), ("c", 9003), ("d", 9004)))


def load(*texts: str, file: str = "config.yaml") -> LoadResult:
    loaded = LoadResult()
    for i, text in enumerate(texts):
        load_text(text, f"{i}-{file}" if len(texts) > 1 else file, loaded)
    assert loaded.errors == [], loaded.errors
    return loaded


def check(*texts: str) -> tuple[list[Diagnostic], list[Diagnostic]]:
    return validate(load(*texts).objects)


def compiled(*texts: str, gateway: str = "gw") -> Snapshot:
    objects: list[RawObject] = load(*texts).objects
    errors, _ = validate(objects)
    assert errors == [], [str(e) for e in errors]
    options = CompileOptions(gateway_labels={"gateway.networking.k8s.io/gateway-name": gateway},
                             bind="127.0.0.1", mesh_port=15001)
    return compile_snapshot(objects, options)


def explain(snapshot: Snapshot, path: str, headers: dict[str, str] | None = None, method: str = "GET",
            authority: str = "example.com", listener: str = "gateway_http_8080") -> dict[str, Any]:
    return explain_http(snapshot, snapshot.http_listeners[listener], authority, path, method, headers or {})


def winner(snapshot: Snapshot, path: str, headers: dict[str, str] | None = None, method: str = "GET",
           authority: str = "example.com", listener: str = "gateway_http_8080") -> str:
    """The backend (a, b, c …) the request goes to, or `404`."""
    answer = explain(snapshot, path, headers, method, authority, listener)
    if answer.get("route") is None:
        return str(answer["result"]["status"])
    dests = answer["route"].get("destinations")
    if not dests:
        return str(answer["result"]["status"])
    return ",".join(d["host"].split(".")[0] for d in dests)


def route(name: str, rules: str, created: str | None = None, parent: str = "{name: gw}",
          hostnames: str = "") -> str:
    stamp = f", creationTimestamp: '{created}'" if created else ""
    hosts = f"\n  hostnames: {hostnames}" if hostnames else ""
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}{stamp}}}
spec:
  parentRefs: [{parent}]{hosts}
  rules:
{rules}"""
