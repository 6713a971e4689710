"""Give freed heap memory back to the OS, as Envoy's `shrink_heap` does for tcmalloc (glibc only).

Each TLS connection leaves glibc's heap with freed blocks (uvloop's 256 KiB buffer, OpenSSL's records
and session state) between small blocks still in use; glibc keeps such free space for itself, so the
proxy's RSS climbed by hundreds of bytes per full handshake and never came down. `malloc_trim(0)`,
every RELEASE_INTERVAL seconds, hands the free pages back. Fixing glibc's mmap threshold instead (so big
buffers are mmapped and unmapped) would add a mmap/munmap pair and fresh page faults to every TLS
connection and every large read, and leaves OpenSSL's smaller blocks on the heap anyway.

Linux with glibc only; elsewhere (musl, macOS) this does nothing. `SHIFTPROXY_HEAP_RELEASE=off` turns it
off; a number of seconds sets the interval.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping

log = logging.getLogger("shiftproxy")

ENV = "SHIFTPROXY_HEAP_RELEASE"
RELEASE_INTERVAL = 10.0  # seconds between malloc_trim calls


class Heap:
    """glibc's malloc_trim; `enabled` is False where there is no glibc, or where it is turned off."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._trim: Callable[[int], int] | None = None
        self.interval = RELEASE_INTERVAL
        setting = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
        if setting in ("off", "0", "false", "no"):
            return
        if setting not in ("", "on"):
            try:
                self.interval = float(setting)
            except ValueError:
                self.interval = math.nan
            if not 0 < self.interval < math.inf:
                log.warning("%s=%r is neither `off` nor a number of seconds; releasing every %g s",
                            ENV, setting, RELEASE_INTERVAL)
                self.interval = RELEASE_INTERVAL
        if not sys.platform.startswith("linux") or not _glibc():
            return
        try:
            trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # no such library, or one without malloc_trim
            return
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
        self._trim = trim

    @property
    def enabled(self) -> bool:
        return self._trim is not None

    def release(self) -> bool:
        """Return the heap's free pages to the OS; True if any were. Thread-safe (glibc locks each arena)."""
        return self._trim is not None and self._trim(0) == 1


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):  # a libc (musl) that does not know the name
        return False
