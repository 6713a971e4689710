"""Istio (RE2) regexes, compiled with RE2 itself (the `google-re2` package), as Envoy does.

One engine for validation, matching and `uriRegexRewrite`, so a pattern that validates behaves in the
data plane exactly as it would in Envoy: RE2 syntax (`(?<name>…)`, `(?P<name>…)`, `[[:alpha:]]`,
`\\pL`, `\\Q…\\E`), no lookaround or backreferences, leftmost-first matching. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import re2
from re2 import _re2

MAX_REGEX_LEN = 1024  # Istio's approximation of Envoy's RE2 program-size limit

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors come back as exceptions; RE2 would also print them to stderr

# RE2's messages name the construct; these say why it is refused, for users coming from PCRE
_HINTS = (
    ("invalid perl operator: (?=", "lookaround is not supported by RE2"),
    ("invalid perl operator: (?!", "lookaround is not supported by RE2"),
    ("invalid perl operator: (?<=", "lookaround is not supported by RE2"),
    ("invalid perl operator: (?<!", "lookaround is not supported by RE2"),
    ("invalid perl operator: (?>", "atomic groups are not supported by RE2"),
    ("invalid perl operator: (?P=", "backreferences are not supported by RE2"),
    ("bad repetition operator: *+", "possessive quantifiers are not supported by RE2"),
    ("bad repetition operator: ++", "possessive quantifiers are not supported by RE2"),
    ("bad repetition operator: ?+", "possessive quantifiers are not supported by RE2"),
    ("invalid repetition size", "RE2 allows at most 1000 repetitions"),
    ("invalid escape sequence: \\Z", "use \\z or $"),
    ("no argument for repetition operator", "nothing to repeat"),
)

Regex = Any  # a compiled RE2 pattern (re2._Regexp): .fullmatch / .search / .finditer
# The request path calls RE2 through its binding directly: the `re2` module's Python layer (match
# objects, offset decoding) costs several times the match itself.
_ANCHOR_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_NO_MATCH = (-1, -1)


def compile_regex(pattern: str) -> Regex:
    """Compile an Istio regex with RE2. Raises ValueError naming the problem."""
    if len(pattern) > MAX_REGEX_LEN:
        raise ValueError(f"regex is too large, max length allowed is {MAX_REGEX_LEN}")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        raise ValueError(_message(exc)) from None


class FullMatch:
    """Envoy's safe_regex string matcher: does RE2 match the whole value?"""

    __slots__ = ("pattern", "_set")

    def __init__(self, pattern: str) -> None:
        compile_regex(pattern)  # the error, if any, as validation words it
        self.pattern = pattern
        self._set = _re2.Set(_ANCHOR_BOTH, _OPTIONS)  # a one-pattern set: a boolean DFA match, no submatches
        self._set.Add(pattern.encode())
        self._set.Compile()

    def __call__(self, text: str) -> bool:
        return bool(self._set.Match(text.encode("utf-8", "surrogatepass")))

    def __repr__(self) -> str:
        return f"FullMatch({self.pattern!r})"

    def __reduce__(self) -> tuple[type[FullMatch], tuple[str]]:  # the RE2 set itself cannot be pickled
        return (FullMatch, (self.pattern,))


def _message(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else exc
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    if text.startswith("invalid escape sequence: \\") and text[-1:].isdigit():
        return f"{text} (backreferences are not supported by RE2)"
    for needle, hint in _HINTS:
        if needle in text:
            return f"{text} ({hint})"
    return text


@dataclass(frozen=True, slots=True)
class RegexRewrite:
    """Envoy's `regex_rewrite`: RE2::GlobalReplace of every non-overlapping match with `substitution`,
    where `\\0`…`\\9` are capture groups and `\\\\` is a backslash."""

    pattern: Regex
    pieces: tuple[bytes | int, ...]  # literal bytes, or a group number
    valid: bool  # False: RE2 refuses the substitution and Envoy leaves the path unchanged

    def apply(self, text: str) -> str:
        """RE2::GlobalReplace's loop, on the UTF-8 bytes as Envoy sees them: an empty match right where the
        previous match ended is skipped."""
        if not self.valid:
            return text
        data = text.encode("utf-8", "surrogatepass")
        match = self.pattern._regexp.Match
        out: list[bytes] = []
        p, end, last_end, count = 0, len(data), -1, 0
        while p <= end:
            spans = match(_UNANCHORED, data, p, end)
            start, stop = spans[0]
            if start < 0:
                break
            out.append(data[p:start])
            if start == stop == last_end:
                step = _char_length(data, p)
                out.append(data[p:p + step])
                p += step
                continue
            for piece in self.pieces:
                if isinstance(piece, bytes):
                    out.append(piece)
                elif spans[piece] != _NO_MATCH:
                    out.append(data[spans[piece][0]:spans[piece][1]])
            p = last_end = stop
            count += 1
        if not count:
            return text
        out.append(data[p:])
        return b"".join(out).decode("utf-8", "surrogatepass")


def _char_length(data: bytes, i: int) -> int:
    """Bytes in the UTF-8 character at `i` (1 at the end or on a stray byte)."""
    if i >= len(data) or data[i] < 0xC0:
        return 1
    return min(2 if data[i] < 0xE0 else 3 if data[i] < 0xF0 else 4, len(data) - i)


def compile_rewrite(pattern: str, substitution: str) -> RegexRewrite:
    """Compile `uriRegexRewrite`. Raises ValueError for a pattern RE2 refuses."""
    regex = compile_regex(pattern)
    pieces, problem = parse_substitution(substitution, regex.groups)
    return RegexRewrite(regex, pieces, problem is None)


def parse_substitution(substitution: str, groups: int) -> tuple[tuple[bytes | int, ...], str | None]:
    """Split an RE2 rewrite string into pieces; the second item says why RE2 would refuse it."""
    pieces: list[bytes | int] = []
    literal: list[str] = []
    i, n = 0, len(substitution)
    while i < n:
        c = substitution[i]
        if c != "\\":
            literal.append(c)
            i += 1
            continue
        nxt = substitution[i + 1] if i + 1 < n else ""
        if nxt.isdigit() and nxt.isascii():
            group = int(nxt)
            if group > groups:
                return (), (f"rewrite refers to group \\{group} but the match regex has {groups} capture "
                            f"group{'s' if groups != 1 else ''}")
            if literal:
                pieces.append("".join(literal).encode())
                literal = []
            pieces.append(group)
        elif nxt == "\\":
            literal.append("\\")
        else:
            escape = "\\" + nxt
            return (), (f"invalid rewrite escape {escape!r}: only \\0-\\9 (capture groups) and \\\\ are "
                        "allowed")
        i += 2
    if literal:
        pieces.append("".join(literal).encode())
    return tuple(pieces), None
