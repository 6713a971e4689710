"""Warnings for every field that is valid Istio but not enforced by this proxy (the rows of
`proxy.config.enforcement.TABLE`), so nothing in a config is silently ignored."""

from __future__ import annotations

from typing import Any

from proxy.config.enforcement import NOT_ENFORCED, PARTIAL, TABLE
from proxy.config.schema import Msg, Report


def report_not_enforced(r: Report, msg: Msg) -> None:
    for name, value in msg.items():
        row = TABLE.get((msg.type, name))
        if row is None:
            continue  # every reachable field has a row (tests/config/test_enforcement.py)
        path = msg.at(name)
        if row.state == NOT_ENFORCED:
            if not r.has_error_within(path):
                r.warn(path, f"valid Istio, not enforced by shiftproxy: {row.note}{_set_inside(value)}")
            continue  # one warning for the field, not one per field inside it
        if row.state == PARTIAL and row.unenforced is not None and (why := row.unenforced(value)):
            if not r.has_error_within(path):
                r.warn(path, f"valid Istio, partly enforced by shiftproxy: {why}")
        _descend(r, value)


def _descend(r: Report, value: Any) -> None:
    if isinstance(value, Msg):
        report_not_enforced(r, value)
    elif isinstance(value, list):
        for item in value:
            _descend(r, item)
    elif isinstance(value, dict):
        for item in value.values():
            _descend(r, item)


def _set_inside(value: Any) -> str:
    """Which fields the ignored message sets, e.g. ` (httpsRedirect, mode)`."""
    if isinstance(value, Msg) and value.keys:
        return f" ({', '.join(value.keys.values())})"
    return ""
