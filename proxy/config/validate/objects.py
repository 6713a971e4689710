"""One manifest at a time: its top-level fields and metadata, the schema walk of its spec, then the
semantic rules of its kind (`_KIND_RULES`)."""

from __future__ import annotations

import re
from collections.abc import Callable

from proxy.config.fields import TOP_LEVEL_FIELDS
from proxy.config.hosts import is_dns1123_label
from proxy.config.load import RawObject
from proxy.config.schema import Msg, Report, normalize
from proxy.config.validate.common import _labels
from proxy.config.validate.destination_rule import _destination_rule
from proxy.config.validate.gateway import _gateway
from proxy.config.validate.service_entry import _service_entry, _standalone_workload_entry
from proxy.config.validate.virtual_service import _virtual_service

_K8S_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")
_K8S_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z")


class _Checked:
    __slots__ = ("obj", "spec", "report")

    def __init__(self, obj: RawObject, spec: Msg | None, report: Report) -> None:
        self.obj, self.spec, self.report = obj, spec, report


def _check_object(obj: RawObject, r: Report) -> Msg | None:
    for key in obj.body:
        if key not in TOP_LEVEL_FIELDS:
            r.error((key,), f'unknown field "{key}" (a manifest has {", ".join(TOP_LEVEL_FIELDS)})')
    metadata = normalize(r, obj.body.get("metadata") or {}, ("metadata",), "metadata")
    if isinstance(metadata, Msg):
        _check_metadata(r, obj, metadata)
    raw_spec = obj.body.get("spec")
    spec = normalize(r, {} if raw_spec is None else raw_spec, ("spec",), obj.kind)
    if not isinstance(spec, Msg):
        return None
    _KIND_RULES[obj.kind](r, spec, obj)
    return spec


def _check_metadata(r: Report, obj: RawObject, meta: Msg) -> None:
    name = meta.get("name")
    if isinstance(name, str):
        if obj.kind == "Gateway":
            if not is_dns1123_label(name):  # Istio: a Gateway name is a DNS label (no dots)
                r.error(meta.at("name"), f"invalid gateway name: {name!r}")
        elif len(name) > 253 or not _K8S_NAME.match(name):
            r.error(meta.at("name"), f"invalid name {name!r}: must be a lowercase RFC 1123 subdomain "
                                     "(letters, digits, '-' and '.')")
    namespace = meta.get("namespace")
    if isinstance(namespace, str) and namespace and (len(namespace) > 63 or not _K8S_LABEL.match(namespace)):
        r.error(meta.at("namespace"), f"invalid namespace {namespace!r}: must be a lowercase RFC 1123 label")
    _labels(r, meta, "labels")


_KIND_RULES: dict[str, Callable[[Report, Msg, RawObject], None]] = {
    "VirtualService": _virtual_service,
    "DestinationRule": _destination_rule,
    "Gateway": _gateway,
    "ServiceEntry": _service_entry,
    "WorkloadEntry": _standalone_workload_entry,
}
