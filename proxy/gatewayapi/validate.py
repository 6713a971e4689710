"""Validate Gateway API objects and Kubernetes Services, one object at a time and then across objects.

Per object: the manifest's top level and metadata (as for the Istio kinds), then its kind's rules.
Across objects (with the Istio objects of the same config): references that do not resolve are warnings,
as Istio reports them in status and `istioctl analyze` (a parent that does not accept the route, a
backend Service that does not exist, whose share of requests gets 500); an Istio VirtualService and a
Gateway API route for the same mesh service are an error, since neither API says which should win.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.config.diagnostics import Diagnostic
from proxy.config.hosts import fqdn
from proxy.config.load import RawObject
from proxy.config.schema import Msg, Report, normalize
from proxy.config.validate.objects import _check_metadata
from proxy.gatewayapi import kinds
from proxy.gatewayapi.gateway import check_gateway
from proxy.gatewayapi.http_route import check_http_route
from proxy.gatewayapi.l4_route import check_l4_route
from proxy.gatewayapi.reference_grant import check_reference_grant
from proxy.gatewayapi.resolve import as_dict, as_list, resolve
from proxy.gatewayapi.service import check_service
from proxy.gatewayapi.translate import selects, workloads

TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "status")
_RULES: dict[str, Callable[[Report, RawObject], None]] = {
    kinds.GATEWAY: check_gateway,
    kinds.HTTP_ROUTE: check_http_route,
    kinds.TCP_ROUTE: check_l4_route,
    kinds.TLS_ROUTE: check_l4_route,
    kinds.REFERENCE_GRANT: check_reference_grant,
    kinds.SERVICE: check_service,
}


def validate(objects: list[RawObject]) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """(errors, warnings) of the Gateway API objects and Services among `objects`; never raises."""
    reports: dict[tuple[str, str, str], Report] = {}
    for obj in objects:
        if not kinds.is_gateway_api(obj.kind):
            continue
        r = reports[obj.key] = Report(obj)
        try:
            _check_object(r, obj)
        except Exception as exc:  # a bug in a rule must cost one object, never the whole reload
            r.error((), f"internal error while validating this {kinds.written_kind(obj.kind)}: {exc!r}")
    if reports:
        try:
            _cross_check(objects, reports)
        except Exception as exc:
            next(iter(reports.values())).error((), f"internal error while cross-checking objects: {exc!r}")
    errors = [d for r in reports.values() for d in sorted(r.errors, key=lambda d: d.line)]
    warnings = [d for r in reports.values() for d in sorted(r.warnings, key=lambda d: d.line)]
    return errors, warnings


def _check_object(r: Report, obj: RawObject) -> None:
    for key in obj.body:
        if key not in TOP_LEVEL:
            r.error((key,), f'unknown field "{key}" (a manifest has {", ".join(TOP_LEVEL)})')
    metadata = normalize(r, obj.body.get("metadata") or {}, ("metadata",), "metadata")
    if isinstance(metadata, Msg):
        _check_metadata(r, obj, metadata)
    _RULES[obj.kind](r, obj)


def _cross_check(objects: list[RawObject], reports: dict[tuple[str, str, str], Report]) -> None:
    res = resolve(objects)
    for (ns, name), svc in res.services.items():
        se = res.entry_hosts.get(fqdn(name, ns))
        if se is not None:
            reports[svc.key].warn(("metadata", "name"), f"ServiceEntry {se.namespace}/{se.name} ({se.file}:{se.line}) "
                                                        f"also defines host {fqdn(name, ns)}; its endpoints are used")
    found = workloads([o for o in objects if o.kind in ("ServiceEntry", "WorkloadEntry")])
    for (ns, name), svc in res.services.items():
        selector = {str(k): str(v) for k, v in as_dict(svc.spec.get("selector")).items()}
        if fqdn(name, ns) not in res.entry_hosts and not any(selects(selector, w[3], ns, w[4]) for w in found):
            what = f"selector {','.join(f'{k}={v}' for k, v in selector.items())}" if selector else "no selector"
            reports[svc.key].warn(("spec", "selector"), f"{what} picks no WorkloadEntry or ServiceEntry endpoint "
                                                        f"in namespace {ns}: requests to {name} get 503 UH")
    mesh_vs: dict[str, RawObject] = {}
    for vs in (o for o in objects if o.kind == "VirtualService"):
        if "mesh" in (as_list(vs.spec.get("gateways")) or ["mesh"]):
            for host in as_list(vs.spec.get("hosts")):
                if isinstance(host, str):
                    mesh_vs.setdefault(fqdn(host, vs.namespace), vs)
    tcp_owner: dict[tuple[tuple[str, str, str], str], RawObject] = {}  # TCP listener → its (oldest) route
    for route in res.routes:
        r = reports[route.obj.key]
        if not route.parents and not r.has_error_within(("spec",)):
            r.warn(("spec",), "no parentRefs: the route attaches to no Gateway or Service and serves nothing")
        for parent in route.parents:
            where = ("spec", "parentRefs", parent.index)
            if not parent.accepted.status:
                if not r.has_error_within(where):
                    r.warn(where, f"not accepted ({parent.accepted.reason}): {parent.accepted.message}")
                continue
            vs = mesh_vs.get(parent.service) if parent.service else None
            if vs is not None:
                r.error(where, f"service {parent.service} is also routed by VirtualService {vs.namespace}/{vs.name} "
                               f"({vs.file}:{vs.line}): an Istio and a Gateway API route for one mesh service "
                               "conflict; delete one of them")
        for parent in route.parents if route.obj.kind == kinds.TCP_ROUTE else ():
            for li, _ in parent.listeners:
                first = tcp_owner.setdefault((li.gateway.key, li.name), route.obj)
                if first is not route.obj:
                    r.warn(("spec", "parentRefs", parent.index), f"listener {li.name!r} already serves TCPRoute "
                                                                 f"{first.namespace}/{first.name} (older): only "
                                                                 "that one gets its connections")
        outcome = "its share of requests gets 500" if route.obj.kind == kinds.HTTP_ROUTE else \
            "its share of connections is refused"
        for (rule, ref), backend in route.backends.items():
            where = ("spec", "rules", rule, "backendRefs", ref)
            if backend.reason and not r.has_error_within(where):
                r.warn(where, f"{backend.reason}: {backend.message}; {outcome}")
        _weights(r, route.obj)


def _weights(r: Report, obj: RawObject) -> None:
    """All-zero weights are valid Gateway API, but worth saying: the rule serves nothing."""
    for i, rule in enumerate(as_list(obj.spec.get("rules"))):
        refs = [as_dict(ref) for ref in as_list(as_dict(rule).get("backendRefs"))]
        if refs and all(ref.get("weight") == 0 for ref in refs):
            outcome = "every request it matches gets 500" if obj.kind == kinds.HTTP_ROUTE else \
                "every connection is refused"
            r.warn(("spec", "rules", i, "backendRefs"), f"every backendRef has weight 0: {outcome}")
