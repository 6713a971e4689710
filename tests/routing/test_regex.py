"""RE2 (the engine Envoy uses) for every Istio regex: matching and `uriRegexRewrite` substitution."""

from __future__ import annotations

import pytest

from proxy.l7.router import rewrite_path
from proxy.routing.regex import FullMatch, compile_regex, compile_rewrite, parse_substitution
from proxy.routing.snapshot import Rewrite


@pytest.mark.parametrize(("pattern", "substitution", "path", "expected"), [
    (r"(?<x>a)", r"\1b", "/xa", "/xab"),  # RE2's named group spelling, unknown to Python's re before 3.12
    (r"(?P<x>a)", r"[\1]", "/a/a", "/[a]/[a]"),  # every match is replaced (GlobalReplace)
    (r"[[:alpha:]]+", "X", "/ab12cd", "/X12X"),  # POSIX classes inside brackets
    (r"^/service/([^/]+)(/.*)$", r"\2/instance/\1", "/service/foo/v1", "/v1/instance/foo"),
    (r"\pL+", "L", "/héllo1", "/L1"),  # Unicode classes
    (r"x*", "-", "/axb", "-/-a-b-"),  # no empty match right after a match, as RE2::GlobalReplace
    (r"a", r"\\", "/a", "/\\"),  # `\\` is a backslash
    (r"a", r"\0\0", "/a", "/aa"),  # `\0` is the whole match
    (r"^/nothing", "/x", "/else", "/else"),
])
def test_rewrite_is_re2_global_replace(pattern: str, substitution: str, path: str, expected: str) -> None:
    assert compile_rewrite(pattern, substitution).apply(path) == expected


def test_rewrite_keeps_the_query_string() -> None:
    rewrite = Rewrite(regex_match=r"(?<v>v\d)", regex_rewrite=r"version-\1")
    assert rewrite_path(rewrite, True, b"/api/v2/items?v1=x") == b"/api/version-v2/items?v1=x"


@pytest.mark.parametrize(("substitution", "groups", "problem"), [
    (r"\2", 1, "refers to group \\2 but the match regex has 1 capture group"),
    (r"\q", 3, "invalid rewrite escape"),
    ("\\", 0, "invalid rewrite escape"),
])
def test_a_substitution_re2_refuses_leaves_the_path_unchanged(substitution: str, groups: int, problem: str) -> None:
    pieces, reason = parse_substitution(substitution, groups)
    assert pieces == () and reason is not None and problem in reason
    pattern = "(a)" * groups or "a"
    assert compile_rewrite(pattern, substitution).apply("/aaa") == "/aaa"


@pytest.mark.parametrize(("pattern", "subject", "whole"), [
    (r"[[:alpha:]]+", "abc", True), (r"[[:alpha:]]+", "ab1", False), (r"(?i)GET|POST", "get", True),
    (r"(?<name>v\d+)", "v10", True), (r"a.c", "a\nc", False),  # `.` excludes newline, as RE2's default
])
def test_match_is_re2_full_match(pattern: str, subject: str, whole: bool) -> None:
    assert (compile_regex(pattern).fullmatch(subject) is not None) is whole


def test_re2_errors_are_value_errors_with_a_hint_and_nothing_on_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"no argument for repetition operator: \* \(nothing to repeat\)"):
        compile_regex("*")
    assert capfd.readouterr().err == ""  # RE2 logs parse errors unless told not to


def test_compiled_matchers_survive_pickling_and_copying() -> None:
    import copy
    import pickle

    matcher = FullMatch("[[:alpha:]]+")
    for clone in (pickle.loads(pickle.dumps(matcher)), copy.deepcopy(matcher)):
        assert clone("abc") and not clone("ab1")
