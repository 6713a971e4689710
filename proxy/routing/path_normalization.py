"""Request path normalization before routing, as Envoy's HTTP connection manager does it for Istio.

Istio's `meshConfig.pathNormalization` picks one of four settings; each maps to Envoy options:

| setting                     | Envoy options                                                            |
|-----------------------------|--------------------------------------------------------------------------|
| `none`                      | nothing                                                                  |
| `base` (Istio's default)    | `normalize_path`                                                         |
| `merge-slashes`             | `normalize_path`, `merge_slashes`                                        |
| `decode-and-merge-slashes`  | `normalize_path`, `merge_slashes`, escaped slashes `UNESCAPE_AND_FORWARD` |

In that order (Envoy's): escaped slashes `%2F` / `%5C` (any case) are decoded to `/` and `\\` when the
setting says so, otherwise left as they are; then `normalize_path` (RFC 3986): percent-encoded unreserved
characters decoded (`%61` → `a`, `%2e` → `.`), other escapes kept as sent, `\\` turned into `/`, dot
segments removed; then runs of slashes merged. Only the path is touched, never the query.

A path is rejected (None; the caller answers 400) when it holds a malformed escape or `%00`, as Envoy
does, or when its `..` segments climb above the root (Envoy would clamp those to `/`; a client that
sends them is probing, and a clear 400 is safer than guessing what it meant).

Pure functions of bytes; `normalize` returns its argument itself when there is nothing to do, and finds
that out with one set check over the target (no `%`, `\\` or `.`), so normal paths cost next to nothing.
"""

from __future__ import annotations

import enum

_HEX = frozenset(b"0123456789abcdefABCDEF")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class PathNormalization(enum.Enum):
    NONE = "none"
    BASE = "base"
    MERGE_SLASHES = "merge-slashes"
    DECODE_AND_MERGE_SLASHES = "decode-and-merge-slashes"

    @property
    def merge_slashes(self) -> bool:
        return self in (PathNormalization.MERGE_SLASHES, PathNormalization.DECODE_AND_MERGE_SLASHES)

    @property
    def decode_slashes(self) -> bool:
        return self is PathNormalization.DECODE_AND_MERGE_SLASHES


CHOICES = tuple(m.value for m in PathNormalization)
# module globals: cheaper to reach than the enum's class attributes
_NONE = PathNormalization.NONE
_BASE = PathNormalization.BASE
# no escape, backslash or dot anywhere: nothing for RFC 3986 normalization to do. One C call over the
# target; `bytes in bytes` and bytes.find would each cost more than it on CPython 3.11 (an int
# conversion tried and dropped, or old-style argument parsing)
_PLAIN = frozenset(b"%\\.").isdisjoint


def normalize(target: bytes, mode: PathNormalization) -> bytes | None:
    """`target` (an origin-form path with its query) normalized per `mode`; None if it must be refused."""
    if mode is _NONE:
        return target
    # the quick checks, on the whole target (a query that trips them takes the longer way, still right)
    if (mode is _BASE or target.find(b"//") < 0) and (_PLAIN(target) or (
            target.find(b"%") < 0 and target.find(b"\\") < 0 and target.find(b"/.") < 0)):
        return target
    query = target.find(b"?")
    path = target if query < 0 else target[:query]
    normal = normalize_path(path, mode)
    if normal is None:
        return None
    if normal == path:
        return target
    return normal if query < 0 else normal + target[query:]


def normalize_path(path: bytes, mode: PathNormalization) -> bytes | None:
    """The path alone (no query), fully worked: escaped slashes, RFC 3986 normalization, slash merging."""
    if mode is PathNormalization.NONE:
        return path
    decoded = decode_unreserved(path, mode.decode_slashes)
    if decoded is None:
        return None
    segments = remove_dot_segments(decoded.replace(b"\\", b"/"))
    if segments is None:
        return None
    if mode.merge_slashes:
        segments = merge_slashes(segments)
    return segments


def decode_unreserved(path: bytes, decode_slashes: bool = False) -> bytes | None:
    """Percent-escapes of unreserved characters decoded (and of `/` and `\\` if asked); others kept as
    sent. None for a malformed escape or an encoded NUL."""
    if b"%" not in path:
        return path
    out = bytearray()
    i = 0
    n = len(path)
    while i < n:
        j = path.find(b"%", i)
        if j < 0:
            out += path[i:]
            break
        out += path[i:j]
        if j + 2 >= n or path[j + 1] not in _HEX or path[j + 2] not in _HEX:
            return None
        byte = int(path[j + 1:j + 3], 16)
        if byte == 0:
            return None
        if byte in _UNRESERVED or (decode_slashes and byte in (0x2F, 0x5C)):
            out.append(byte)
        else:
            out += path[j:j + 3]
        i = j + 3
    return bytes(out)


def remove_dot_segments(path: bytes) -> bytes | None:
    """RFC 3986 §5.2.4 on an absolute path; None when `..` would climb above the root."""
    if not path.startswith(b"/"):
        path = b"/" + path
    parts = path.split(b"/")[1:]
    out: list[bytes] = []
    last = len(parts) - 1
    for i, part in enumerate(parts):
        if part == b".":
            if i == last:
                out.append(b"")  # "/a/." is "/a/"
        elif part == b"..":
            if not out:
                return None
            out.pop()
            if i == last:
                out.append(b"")  # "/a/b/.." is "/a/"
        else:
            out.append(part)
    return b"/" + b"/".join(out)


def merge_slashes(path: bytes) -> bytes:
    while b"//" in path:
        path = path.replace(b"//", b"/")
    return path
