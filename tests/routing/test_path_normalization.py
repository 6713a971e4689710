"""Path normalization, table-driven: each row is (request target, setting, expected target or None for
a 400). Expected values follow Envoy's own tests of normalize_path / merge_slashes where they overlap
(test/common/http/path_utility_test.cc), except that a path climbing above the root is refused."""

from __future__ import annotations

import pytest

from proxy.routing.path_normalization import PathNormalization, normalize

NONE = PathNormalization.NONE
BASE = PathNormalization.BASE
MERGE = PathNormalization.MERGE_SLASHES
DECODE = PathNormalization.DECODE_AND_MERGE_SLASHES

CASES: list[tuple[bytes, PathNormalization, bytes | None]] = [
    # already normal
    (b"/", BASE, b"/"),
    (b"/xyz", BASE, b"/xyz"),
    (b"/x/y/z?q=../a", BASE, b"/x/y/z?q=../a"),
    (b"/A/B/C", BASE, b"/A/B/C"),  # never lower-cased
    (b"/.well-known/x", BASE, b"/.well-known/x"),
    (b"/a.b/c..d/...", BASE, b"/a.b/c..d/..."),
    # dot segments
    (b"/a/b/../c", BASE, b"/a/c"),
    (b"/a/b/./c", BASE, b"/a/b/c"),
    (b"/./admin", BASE, b"/admin"),
    (b"/public/../admin", BASE, b"/admin"),
    (b"/public/../admin?x=1", BASE, b"/admin?x=1"),
    (b"/a/b/..", BASE, b"/a/"),
    (b"/a/.", BASE, b"/a/"),
    (b"/a//../b", BASE, b"/a/b"),
    # above the root: refused
    (b"/..", BASE, None),
    (b"/../a/b", BASE, None),
    (b"/public/../../admin", BASE, None),
    (b"/a/b/../../../../c", BASE, None),
    # percent-encoded dots and letters (unreserved characters are decoded)
    (b"/public/%2e%2e/admin", BASE, b"/admin"),
    (b"/public/%2E%2E/admin", BASE, b"/admin"),
    (b"/public/%2E./admin", BASE, b"/admin"),
    (b"/a/b/%2E/c", BASE, b"/a/b/c"),
    (b"/%61dmin", BASE, b"/admin"),
    (b"/%41%7e%2D%5f", BASE, b"/A~-_"),
    # other escapes are kept as sent (case too)
    (b"/%c0%af", BASE, b"/%c0%af"),
    (b"/%5c%25", BASE, b"/%5c%25"),
    (b"/a%20b", BASE, b"/a%20b"),
    # malformed escapes and NUL: refused
    (b"/xyz/.%00../abc", BASE, None),
    (b"/xyz/AAAAA%%0000/abc", BASE, None),
    (b"/a%2", BASE, None),
    (b"/a%zz", BASE, None),
    # backslashes
    (b"/public\\..\\admin", BASE, b"/admin"),
    (b"/a/..\\c", BASE, b"/c"),
    (b"/a\\b", BASE, b"/a/b"),
    # escaped slashes per setting
    (b"/a/%2F%2f/c", BASE, b"/a/%2F%2f/c"),
    (b"/public%2F..%2Fadmin", BASE, b"/public%2F..%2Fadmin"),
    (b"/public%2F..%2Fadmin", MERGE, b"/public%2F..%2Fadmin"),
    (b"/public%2F..%2Fadmin", DECODE, b"/admin"),
    (b"/public%5C..%5cadmin", DECODE, b"/admin"),
    (b"/a%2fb", DECODE, b"/a/b"),
    (b"/a%2F%2Fb", DECODE, b"/a/b"),
    (b"/%2F..%2F..%2Fadmin", DECODE, None),
    # merging slashes
    (b"//a//b/c", BASE, b"//a//b/c"),
    (b"//a//b/c", MERGE, b"/a/b/c"),
    (b"/a////b/c//", MERGE, b"/a/b/c/"),
    (b"/a//b?a=///c", MERGE, b"/a/b?a=///c"),
    (b"//a/?b", DECODE, b"/a/?b"),
    # none: untouched, whatever it is
    (b"/public/../admin", NONE, b"/public/../admin"),
    (b"/%61dmin", NONE, b"/%61dmin"),
    (b"/..", NONE, b"/.."),
]


@pytest.mark.parametrize(("target", "mode", "expected"), CASES, ids=[f"{m.value}:{t.decode()}" for t, m, _ in CASES])
def test_normalize(target: bytes, mode: PathNormalization, expected: bytes | None) -> None:
    assert normalize(target, mode) == expected


def test_normal_paths_come_back_as_the_same_object() -> None:
    # the quick check: no copy, no work for a path with nothing to normalize
    target = b"/reviews/0?a=b"
    assert normalize(target, BASE) is target
    assert normalize(target, DECODE) is target


def test_the_table_covers_each_setting() -> None:
    assert len(CASES) >= 30
    assert {m for _, m, _ in CASES} == set(PathNormalization)
