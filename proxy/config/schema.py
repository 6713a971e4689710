"""A walker that type-checks raw YAML against the Istio networking API's message shapes (`fields.py`).

It accepts the proto snake_case names and the camelCase JSON names, as Istio's jsonpb parser does, and
rejects any other field. It returns the same tree with camelCase keys and typed values (`Msg` dicts that
remember each field's YAML path, durations as integer nanoseconds, enums as names), so the semantic
rules in `proxy.config.validate` never see a value of the wrong type.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import difflib
from typing import Any

from proxy.config.diagnostics import Diagnostic, Path, render_path
from proxy.config.duration import parse_duration_ns
from proxy.config.fields import ALIASES, ENUMS, FIELDS, NULL_ITEMS, ONEOFS
from proxy.config.load import RawObject

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1),
               "uint64": (0, 2**64 - 1)}
_INT_WORDS = {"int32": "a 32-bit integer", "uint32": "a non-negative 32-bit integer",
              "int64": "an integer", "uint64": "a non-negative integer"}


# --- The normalized tree ---------------------------------------------------------------------------------


class Msg(dict[str, Any]):
    """A message's fields by camelCase name, with the YAML path of the message and of each field."""

    __slots__ = ("path", "type", "keys", "bad")

    def __init__(self, path: Path, type_name: str) -> None:
        super().__init__()
        self.path = path
        self.type = type_name
        self.keys: dict[str, Any] = {}  # camelCase name → the key as written
        self.bad: set[str] = set()  # fields that were present but had a type error

    def at(self, name: str, *rest: Any) -> Path:
        return (*self.path, self.keys.get(name, name), *rest)

    def has(self, name: str) -> bool:
        """Set in the YAML (even if its value was rejected), as opposed to absent or null."""
        return name in self or name in self.bad


class Report:
    """Collects the diagnostics of one object."""

    def __init__(self, obj: RawObject) -> None:
        self.obj = obj
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def error(self, path: Path, reason: str) -> None:
        self.errors.append(self.obj.at(path, reason))

    def warn(self, path: Path, reason: str) -> None:
        self.warnings.append(self.obj.at(path, reason, "warning"))

    def has_error_within(self, path: Path) -> bool:
        """An error was reported at `path` or inside it (so a warning there would only repeat it)."""
        where = render_path(path)
        return any(e.path == where or e.path.startswith((where + ".", where + "[")) for e in self.errors)


class _Bad:
    """Stands in for a list item whose type was wrong, so indexes stay aligned."""

    def __repr__(self) -> str:
        return "<invalid>"


BAD: Any = _Bad()


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value:g}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"a date ({value}); quote it"
    return type(value).__name__


def normalize(report: Report, value: Any, path: Path, type_spec: str, null_items: bool = False) -> Any:
    """Type-check `value` against `type_spec`; report problems; return the typed value or BAD.

    `null_items`: a null list item is an empty message (see `fields.NULL_ITEMS`), not an error."""
    if type_spec.startswith("["):
        inner = type_spec[1:-1]
        if not isinstance(value, list):
            report.error(path, f"expected a list of {_what(inner)}, got {describe(value)}")
            return BAD
        items = []
        for i, item in enumerate(value):
            if item is None and null_items and inner in FIELDS:
                items.append(Msg((*path, i), inner))
            elif item is None:
                report.error((*path, i), "list item may not be null")
                items.append(BAD)
            else:
                items.append(normalize(report, item, (*path, i), inner))
        return items
    if type_spec.startswith("{"):
        inner = type_spec[1:-1]
        if not isinstance(value, dict):
            report.error(path, f"expected a mapping of name to {_what(inner)}, got {describe(value)}")
            return BAD
        out: dict[str, Any] = {}
        for key, item in value.items():
            if item is None:
                report.error((*path, key), f"{str(key)!r} may not be null")
                continue
            typed = normalize(report, item, (*path, key), inner)
            if typed is not BAD:
                out[str(key)] = typed
        return out
    if type_spec in FIELDS:
        return _message(report, value, path, type_spec)
    return _scalar(report, value, path, type_spec)


def _what(type_spec: str) -> str:
    if type_spec.startswith("enum:"):
        return f"{type_spec[5:]} names"
    if type_spec in ("string", "bool", "double", "duration", "bytes"):
        return {"string": "strings", "bool": "booleans", "double": "numbers", "duration": "durations",
                "bytes": "base64 strings"}[type_spec]
    if type_spec in _INT_WORDS:
        return "integers"
    return type_spec


def _message(report: Report, value: Any, path: Path, type_name: str) -> Any:
    if not isinstance(value, dict):
        report.error(path, f"expected a mapping ({type_name}), got {describe(value)}")
        return BAD
    msg = Msg(path, type_name)
    fields, aliases = FIELDS[type_name], ALIASES[type_name]
    for key, item in value.items():
        name = aliases.get(key) if isinstance(key, str) else None
        if name is None:
            report.error((*path, key), _unknown_field(key, type_name, list(fields)))
            continue
        if name in msg.keys:
            report.error((*path, key), f'field "{name}" is set twice (as "{msg.keys[name]}" and "{key}")')
            continue
        msg.keys[name] = key
        if item is None:
            continue  # explicit null: the field is unset, as in JSON
        typed = normalize(report, item, (*path, key), fields[name], (type_name, name) in NULL_ITEMS)
        if typed is BAD:
            msg.bad.add(name)
        else:
            msg[name] = typed
    for group in ONEOFS.get(type_name, ()):
        present = [f for f in group if msg.has(f)]
        if len(present) > 1:
            listed = ", ".join(group[:-1]) + " or " + group[-1]
            report.error(msg.at(present[1]), f"only one of {listed} may be set in a {type_name}")
    return msg


def _unknown_field(key: Any, type_name: str, known: list[str]) -> str:
    reason = f'unknown field "{key}" in {type_name}'
    close = difflib.get_close_matches(str(key), known, n=1)
    return f'{reason} (did you mean "{close[0]}"?)' if close else reason


def _scalar(report: Report, value: Any, path: Path, type_spec: str) -> Any:
    if type_spec == "opaque":
        if not isinstance(value, dict):
            report.error(path, f"expected a mapping, got {describe(value)}")
            return BAD
        return value
    if type_spec == "string":
        if not isinstance(value, str):
            hint = " (quote it)" if isinstance(value, (bool, int, float)) else ""
            report.error(path, f"expected a string, got {describe(value)}{hint}")
            return BAD
        return value
    if type_spec == "bool":
        if not isinstance(value, bool):
            report.error(path, f"expected true or false, got {describe(value)}")
            return BAD
        return value
    if type_spec in _INT_RANGES:
        low, high = _INT_RANGES[type_spec]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            report.error(path, f"expected {_INT_WORDS[type_spec]}, got {describe(value)}")
            return BAD
        return value
    if type_spec == "double":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            report.error(path, f"expected a number, got {describe(value)}")
            return BAD
        return float(value)
    if type_spec == "duration":
        if not isinstance(value, str):
            report.error(path, f'expected a duration string such as "10s" or "100ms", got {describe(value)}')
            return BAD
        try:
            return parse_duration_ns(value)
        except ValueError as exc:
            report.error(path, str(exc))
            return BAD
    if type_spec == "bytes":
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                pass
        report.error(path, f"expected base64-encoded bytes, got {describe(value)}")
        return BAD
    if type_spec == "timestamp":
        if not isinstance(value, (str, datetime.date)):
            report.error(path, f"expected a timestamp, got {describe(value)}")
            return BAD
        return value
    if type_spec.startswith("enum:"):
        return _enum(report, value, path, type_spec[5:])
    raise AssertionError(f"unknown type {type_spec!r}")  # a bug in the field tables


def _enum(report: Report, value: Any, path: Path, enum: str) -> Any:
    names = ENUMS[enum]
    if isinstance(value, str) and value in names:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    report.error(path, f"invalid {enum} {describe(value)}: expected one of {', '.join(names)}")
    return BAD


def canonical(value: Any, type_spec: str) -> Any:
    """`value` with every message field renamed to its camelCase JSON name; values are left as written.

    Lets later stages read `perTryTimeout` whether the YAML said `perTryTimeout` or `per_try_timeout`.
    Unknown fields and ill-typed values pass through unchanged (validation reports them).
    """
    if type_spec.startswith("["):
        return [canonical(v, type_spec[1:-1]) for v in value] if isinstance(value, list) else value
    if type_spec.startswith("{"):
        return {k: canonical(v, type_spec[1:-1]) for k, v in value.items()} if isinstance(value, dict) else value
    if type_spec not in FIELDS or not isinstance(value, dict):
        return value
    fields, aliases = FIELDS[type_spec], ALIASES[type_spec]
    out: dict[Any, Any] = {}
    for key, item in value.items():
        name = aliases.get(key) if isinstance(key, str) else None
        if name is None:
            out[key] = item
        elif name not in out:  # the same field under both spellings is an error; keep the first
            out[name] = canonical(item, fields[name])
    return out
