"""Go `time.ParseDuration` strings, as Istio reads them: `10s`, `1.5s`, `100ms`, `1h30m`, `2us`."""

from __future__ import annotations

import re

_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
            "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_MAX_NS = 2**63 - 1


def parse_duration_ns(text: str) -> int:
    """Go's time.ParseDuration, to integer nanoseconds (fractions truncated as Go does).

    `1h30m`, `1.5s`, `100ms`, `2us`, `-3s` and `0` are valid; `10`, `1d`, `1 s` and `` are not.
    """
    s, neg = text, False
    if s[:1] in ("-", "+"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0, 0
    while pos < len(s):
        part = _DURATION_PART.match(s, pos)
        assert part is not None  # every group may be empty, so this always matches
        whole, frac, unit = part.groups()
        if not whole and not frac:
            raise ValueError(f"invalid duration {text!r}")
        if not unit:
            raise ValueError(f"missing unit in duration {text!r} (use ns, us, ms, s, m or h)")
        if unit not in _UNIT_NS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r} (use ns, us, ms, s, m or h)")
        scale = _UNIT_NS[unit]
        total += int(whole or "0") * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)
        if total > _MAX_NS:
            raise ValueError(f"invalid duration {text!r} (out of range)")
        pos = part.end()
    return -total if neg else total


def parse_duration(text: str) -> float:
    """Seconds of a Go duration string (`10s`, `1.5s`, `1h30m`, `100ms`, `2us`). Raises ValueError."""
    return parse_duration_ns(text) / 1e9


def format_ns(ns: int) -> str:
    if ns % 1_000_000_000 == 0:
        return f"{ns // 1_000_000_000}s"
    if ns % 1_000_000 == 0:
        return f"{ns // 1_000_000}ms"
    return f"{ns}ns"


