"""Istio (RE2) regexes checked and compiled with Python's `re`: what RE2 lacks is rejected, RE2-only
spellings are translated. Used by validation (to explain errors) and by route compilation. No I/O."""

from __future__ import annotations

import re
import warnings

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ", "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~", "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}
_MAX_REGEX_LEN = 1024  # Istio's approximation of Envoy's RE2 program-size limit
_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile an Istio (RE2) regex with Python's `re`. Raises ValueError naming the problem.

    Constructs RE2 does not have (lookaround, backreferences, atomic groups, possessive quantifiers,
    conditionals) are rejected as Istio rejects them; RE2 spellings Python lacks (`\\z`, `(?<name>`,
    `[[:alpha:]]`, `\\Q...\\E`) are translated. Unicode classes (`\\pL`) are not supported here.
    """
    if len(pattern) > _MAX_REGEX_LEN:
        raise ValueError(f"regex is too large, max length allowed is {_MAX_REGEX_LEN}")
    translated = _translate_re2(pattern)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FutureWarnings about set syntax Python may change
        try:
            return re.compile(translated)
        except re.error as exc:
            raise ValueError(str(exc)) from None


def _translate_re2(p: str) -> str:
    out: list[str] = []
    i, n, in_class, after_quantifier = 0, len(p), False, False
    while i < n:
        c = p[i]
        quantifier = False
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("trailing backslash at end of expression")
            e = p[i + 1]
            if e == "Q":
                end = p.find("\\E", i + 2)
                literal = p[i + 2:] if end < 0 else p[i + 2:end]
                out.append(re.escape(literal))
                i = n if end < 0 else end + 2
                continue
            if e.isdigit() and e != "0" and not in_class:
                raise ValueError(f"backreferences (\\{e}) are not supported by RE2")
            if e == "Z":
                raise ValueError("\\Z is not supported by RE2 (use \\z or $)")
            if e in "pPC":
                raise ValueError(f"\\{e} (Unicode classes / any byte) is not supported here")
            out.append("\\Z" if e == "z" else p[i:i + 2])
            i += 2
        elif in_class:
            if c == "]":
                in_class = False
                out.append(c)
            elif p.startswith("[:", i):
                end = p.find(":]", i + 2)
                name = p[i + 2:end] if end > 0 else ""
                if name not in _POSIX_CLASSES:
                    raise ValueError(f"character class {p[i:end + 2] if end > 0 else p[i:]!r} is not supported")
                out.append(_POSIX_CLASSES[name])
                i = end + 1
            else:
                # RE2 reads these literally inside a class; Python may one day treat them as set operators
                out.append("\\" + c if c in "[&~|" else c)
            i += 1
        elif c == "[":
            in_class = True
            out.append("[^" if p.startswith("[^", i) else "[")
            i += 2 if p.startswith("[^", i) else 1
            if i < n and p[i] == "]":  # a leading `]` is a literal
                out.append("\\]")
                i += 1
        elif c == "(" and p.startswith("(?", i):
            rest = p[i + 2:i + 4]
            if rest[:1] in ("=", "!") or rest in ("<=", "<!"):
                raise ValueError(f"lookaround {p[i:i + 4]!r} is not supported by RE2")
            if rest[:1] == ">":
                raise ValueError("atomic groups (?>...) are not supported by RE2")
            if rest[:1] in ("(", "#") or rest == "P=":
                raise ValueError(f"{p[i:i + 4]!r} is not supported by RE2")
            if rest[:1] == "<" or rest == "P<":  # named group; Python spells it (?P<name>
                out.append("(?P<")
                i += 3 if rest[:1] == "<" else 4
                continue
            flags = re.match(r"[a-zA-Z-]*", p[i + 2:])
            letters = flags.group(0) if flags else ""
            if set(letters) - set("ims-"):
                raise ValueError(f"flags {letters!r} are not supported (RE2 flags are i, m, s and U; "
                                 "U is not supported here)")
            out.append("(?")
            i += 2
        elif c in "*+?":
            if after_quantifier and c == "+":
                raise ValueError("possessive quantifiers (e.g. '*+') are not supported by RE2")
            if after_quantifier and c != "?":
                raise ValueError(f"invalid nested repetition operator {p[i - 1:i + 1]!r}")
            quantifier = c != "?" or not after_quantifier
            out.append(c)
            i += 1
        elif c == "{" and (rep := _REPEAT.match(p, i)):
            if any(int(x) > 1000 for x in rep.groups() if x):
                raise ValueError(f"invalid repeat count {rep.group(0)!r} (RE2 allows at most 1000)")
            quantifier = True
            out.append(rep.group(0))
            i = rep.end()
        else:
            out.append(c)
            i += 1
        after_quantifier = quantifier
    return "".join(out)
