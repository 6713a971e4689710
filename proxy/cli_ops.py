"""kubectl-like commands that talk to a running proxy's admin API: apply, get, delete, explain."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any) -> None:
    """Register the admin-client subcommands on the `shiftproxy` parser."""
    del sub  # filled in by the admin client commands


def _unused(args: argparse.Namespace) -> int:  # pragma: no cover
    return 0
