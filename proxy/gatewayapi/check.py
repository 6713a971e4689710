"""Field checks shared by the Gateway API kinds: mappings with known fields, strings, integers, lists, enums,
names, hostnames, durations, parentRefs and backendRefs, each reported at its YAML path through the Istio
validator's `Report` (so `FILE:LINE: YAML.PATH: reason`). Rules follow the Gateway API CRDs' own
validation (v1.2)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from proxy.config.diagnostics import Path
from proxy.config.schema import Report, describe

MAX_WEIGHT = 1_000_000
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")
# Gateway API's Hostname: a DNS name, optionally with a leading `*.` label; no IPs, no port
_HOSTNAME = re.compile(r"(?:\*\.)?[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")
_SECTION_NAME = _DNS_SUBDOMAIN
# GEP-2257 durations: up to four `<1-5 digits><h|m|s|ms>` parts
_DURATION = re.compile(r"(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}\Z")
_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_DURATION_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


def mapping(r: Report, value: Any, path: Path, what: str, fields: Iterable[str]) -> dict[str, Any] | None:
    """`value` as a mapping with only `fields`; None (and an error) when it is not a mapping."""
    if not isinstance(value, dict):
        r.error(path, f"{what} must be a mapping, got {describe(value)}")
        return None
    known = tuple(fields)
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else f" ({what} has {', '.join(known)})"
            r.error((*path, key), f'unknown field "{key}"{hint}')
    return value


def items(r: Report, m: dict[str, Any], path: Path, key: str, max_items: int, required: bool = False,
          min_items: int = 0) -> list[Any]:
    value = m.get(key)
    if value is None:
        if required:
            r.error((*path, key), f"{key} is required")
        return []
    if not isinstance(value, list):
        r.error((*path, key), f"{key} must be a list, got {describe(value)}")
        return []
    if len(value) > max_items:
        r.error((*path, key), f"{key} has {len(value)} items, at most {max_items} allowed")
    if len(value) < min_items:
        r.error((*path, key), f"{key} needs at least {min_items} item(s)")
    return value


def string(r: Report, m: dict[str, Any], path: Path, key: str, required: bool = False,
           max_len: int | None = None) -> str | None:
    value = m.get(key)
    if value is None:
        if required:
            r.error((*path, key), f"{key} is required")
        return None
    if not isinstance(value, str):
        r.error((*path, key), f"{key} must be a string, got {describe(value)}")
        return None
    if max_len is not None and len(value) > max_len:
        r.error((*path, key), f"{key} is {len(value)} characters long, at most {max_len} allowed")
    return value


def integer(r: Report, m: dict[str, Any], path: Path, key: str, lo: int, hi: int,
            required: bool = False) -> int | None:
    value = m.get(key)
    if value is None:
        if required:
            r.error((*path, key), f"{key} is required")
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        r.error((*path, key), f"{key} must be an integer, got {describe(value)}")
        return None
    if not lo <= value <= hi:
        r.error((*path, key), f"{key} {value} is out of range {lo}..{hi:,}")
        return None
    return value


def enum(r: Report, m: dict[str, Any], path: Path, key: str, values: Iterable[str], default: str | None = None,
         required: bool = False) -> str | None:
    allowed = tuple(values)
    value = string(r, m, path, key, required)
    if value is None:
        return default
    if value not in allowed:
        r.error((*path, key), f"{key} {value!r} is not one of {', '.join(allowed)}")
        return None
    return value


def port(r: Report, m: dict[str, Any], path: Path, key: str = "port", required: bool = False) -> int | None:
    return integer(r, m, path, key, 1, 65535, required)


def dns_label(r: Report, m: dict[str, Any], path: Path, key: str, required: bool = False) -> str | None:
    value = string(r, m, path, key, required, 63)
    if value is not None and not _DNS_LABEL.match(value):
        r.error((*path, key), f"{key} {value!r} must be a lowercase RFC 1123 label (letters, digits and '-')")
    return value


def object_name(r: Report, m: dict[str, Any], path: Path, key: str = "name", required: bool = True) -> str | None:
    value = string(r, m, path, key, required, 253)
    if value is not None and not _DNS_SUBDOMAIN.match(value):
        r.error((*path, key), f"{key} {value!r} must be a lowercase RFC 1123 subdomain")
    return value


def hostname(r: Report, path: Path, value: Any) -> str | None:
    if not isinstance(value, str):
        r.error(path, f"hostname must be a string, got {describe(value)}")
        return None
    if len(value) > 253 or not _HOSTNAME.match(value):
        r.error(path, f"invalid hostname {value!r}: a DNS name, optionally starting with '*.'; no IP address, "
                      "no port, lowercase")
        return None
    return value


def duration_ms(r: Report, m: dict[str, Any], path: Path, key: str) -> int | None:
    value = string(r, m, path, key)
    if value is None:
        return None
    if not _DURATION.match(value):
        r.error((*path, key), f"invalid duration {value!r}: use up to four parts of 1-5 digits and a unit "
                              "h, m, s or ms, e.g. 10s or 1m30s")
        return None
    return sum(int(n) * _DURATION_MS[u] for n, u in _DURATION_PART.findall(value))


def parent_refs(r: Report, spec: dict[str, Any], path: Path) -> None:
    for i, ref in enumerate(items(r, spec, path, "parentRefs", 32)):
        where = (*path, "parentRefs", i)
        ref = mapping(r, ref, where, "a parentRef", ("group", "kind", "namespace", "name", "sectionName", "port"))
        if ref is None:
            continue
        string(r, ref, where, "group", max_len=253)
        string(r, ref, where, "kind", max_len=63)
        object_name(r, ref, where)
        dns_label(r, ref, where, "namespace")
        section = string(r, ref, where, "sectionName", max_len=253)
        if section is not None and not _SECTION_NAME.match(section):
            r.error((*where, "sectionName"), f"sectionName {section!r} must be a lowercase RFC 1123 subdomain")
        port(r, ref, where)


def backend_ref(r: Report, ref: Any, path: Path, extra: tuple[str, ...] = ()) -> dict[str, Any] | None:
    ref = mapping(r, ref, path, "a backendRef", ("group", "kind", "name", "namespace", "port", "weight", *extra))
    if ref is None:
        return None
    group = string(r, ref, path, "group", max_len=253) or ""
    kind = string(r, ref, path, "kind", max_len=63) or "Service"
    string(r, ref, path, "name", required=True, max_len=253)
    dns_label(r, ref, path, "namespace")
    number = port(r, ref, path)
    if number is None and group == "" and kind == "Service" and "port" not in ref:
        r.error((*path, "port"), "port is required when the backend is a Service")
    integer(r, ref, path, "weight", 0, MAX_WEIGHT)
    return ref
