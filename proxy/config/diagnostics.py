"""Config diagnostics: one error or warning tied to a file, a line and a YAML path.

Rendered as `FILE:LINE: YAML.PATH: reason`, e.g. `vs.yaml:12: spec.http[0].route[1].weight: weight -1 < 0`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Path = tuple[Any, ...]  # e.g. ("spec", "http", 0, "route", 1, "weight")


def render_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True, slots=True)
class Diagnostic:
    file: str
    line: int
    path: str
    reason: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.reason}" if self.path else f"{where}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "path": self.path, "reason": self.reason,
                "severity": self.severity}


class ConfigError(Exception):
    """A config that failed to load or validate; carries every error at once."""

    def __init__(self, errors: list[Diagnostic]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors
