"""Validate loaded Istio objects the way `istioctl validate` and the Istio webhook do, all at once.

`validate(objects)` returns every error and warning, each tied to file, line and YAML path, and never
raises. Two passes: per object, the schema walk (`schema.py`: unknown fields, types, enums, oneofs)
then Istio's semantic rules (`pkg/config/validation` in istio/istio, with its wording where it has
one), then a warning for each field this proxy accepts but does not enforce (`not_enforced`); then
across objects, the analyzer-style warnings Istio leaves to `istioctl analyze`: subsets no
DestinationRule defines, hosts no ServiceEntry defines, gateways that do not exist.

This module owns the public API and the order of the passes. The rules live in one module per kind
(`virtual_service`, `http_route`, `unreachable`, `destination_rule`, `gateway`, `service_entry`), on
top of the shared field checks in `common`; `objects` dispatches one manifest to its kind, `cross`
holds the cross-object warnings.
"""

from __future__ import annotations

from typing import Any

from proxy.config import compile_shift
from proxy.config.diagnostics import Diagnostic
from proxy.config.load import RawObject
from proxy.config.schema import Msg, Report, canonical
from proxy.config.validate.cross import _CrossCheck
from proxy.config.validate.not_enforced import report_not_enforced
from proxy.config.validate.objects import _check_object, _Checked

__all__ = ["validate", "canonical_spec"]


def validate(objects: list[RawObject]) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """(errors, warnings) for the whole set of objects at once; never raises on bad input."""
    from proxy.gatewayapi import kinds
    from proxy.gatewayapi import validate as gateway_api
    from proxy.rollout import kind as rollout_kind
    from proxy.rollout import spec as rollout

    gateway_errors, gateway_warnings = gateway_api.validate(objects)  # Gateway API kinds and Services
    rollout_errors, rollout_warnings = rollout.validate(objects)  # shiftproxy.io Rollouts
    gateway_errors, gateway_warnings = gateway_errors + rollout_errors, gateway_warnings + rollout_warnings
    checked: list[_Checked] = []
    for obj in (o for o in objects if not kinds.is_gateway_api(o.kind) and o.kind != rollout_kind.KIND):
        report = Report(obj)
        spec: Msg | None = None
        try:
            spec = _check_object(obj, report)
            compile_shift.check(obj, report)  # shiftproxy.io/ annotations of traffic shifting
            if spec is not None:
                report_not_enforced(report, spec)
        except Exception as exc:  # a bug in a rule must cost one object, never the whole reload
            report.error((), f"internal error while validating this {obj.kind}: {exc!r}")
        checked.append(_Checked(obj, spec, report))
    try:
        _CrossCheck(checked).run()
    except Exception as exc:
        first = checked[0].report if checked else None
        if first is not None:
            first.error((), f"internal error while cross-checking objects: {exc!r}")
    errors = [d for c in checked for d in sorted(c.report.errors, key=lambda d: d.line)]
    warnings = [d for c in checked for d in sorted(c.report.warnings, key=lambda d: d.line)]
    return errors + gateway_errors, warnings + gateway_warnings


def canonical_spec(obj: RawObject) -> dict[str, Any]:
    """The object's spec with camelCase field names throughout (Istio also accepts the proto snake_case)."""
    return canonical(obj.spec, obj.kind)
