"""Routing helpers without I/O: request targets, RequestView, rewrites, header operations, redirects."""

from __future__ import annotations

import uuid

import pytest

from proxy.l7.router import (
    apply_ops,
    apply_request_ops,
    new_request_id,
    redirect_location,
    request_view,
    rewrite_path,
    split_target,
)
from proxy.routing.match import HttpMatch, StringMatcher, split_authority
from proxy.routing.snapshot import HeaderOps, Redirect, Rewrite


@pytest.mark.parametrize(("target", "expected"), [
    (b"/reviews/0", (None, b"/reviews/0")),
    (b"http://reviews:9080/reviews/0", (b"reviews:9080", b"/reviews/0")),
    (b"HTTP://Reviews/a?b=1", (b"Reviews", b"/a?b=1")),
    (b"http://reviews", (b"reviews", b"/")),
    (b"http://reviews?x=1", (b"reviews", b"/?x=1")),
    (b"http://user:pw@reviews:1/p", (b"reviews:1", b"/p")),
    (b"https://[::1]:8443/p", (b"[::1]:8443", b"/p")),
    (b"*", (None, b"*")),
    (b"reviews:443", (None, b"reviews:443")),
    (b"ftp://x/y", (None, b"ftp://x/y")),
])
def test_split_target(target: bytes, expected: tuple[bytes | None, bytes]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize(("authority", "expected"), [
    ("reviews", ("reviews", None)),
    ("reviews:9080", ("reviews", 9080)),
    ("[::1]", ("[::1]", None)),
    ("[::1]:80", ("[::1]", 80)),
    ("bad:port", ("bad:port", None)),
])
def test_split_authority(authority: str, expected: tuple[str, int | None]) -> None:
    assert split_authority(authority) == expected


def test_request_view() -> None:
    view = request_view(b"GET", b"/a/b?x=1&y=&x=2&z", "Reviews:9080",
                        [(b"end-user", b"jason"), (b"accept", b"a"), (b"accept", b"b")], 8080,
                        forwarded_for=b"10.0.0.1", request_id=b"rid")
    # the authority keeps its port: Istio's `authority` match reads the :authority header as sent
    assert (view.method, view.path, view.authority, view.scheme, view.port) == ("GET", "/a/b", "reviews:9080",
                                                                               "http", 8080)
    assert view.query == {"x": "1", "y": "", "z": ""}
    assert view.headers == {"end-user": "jason", "accept": "a,b", "x-forwarded-for": "10.0.0.1",
                            "x-request-id": "rid"}


PREFIX = HttpMatch(uri=StringMatcher.build("prefix", "/old"))
EXACT = HttpMatch(uri=StringMatcher.build("exact", "/old/page"))
HEADER_ONLY = HttpMatch(headers=(("x", StringMatcher.build("present")),))


@pytest.mark.parametrize(("rewrite", "block", "path", "expected"), [
    (Rewrite(uri="/new"), PREFIX, b"/old/page?q=1", b"/new/page?q=1"),
    (Rewrite(uri="/"), PREFIX, b"/old", b"/"),
    (Rewrite(uri="/new"), EXACT, b"/old/page", b"/new"),
    (Rewrite(uri="/v2"), True, b"/items", b"/v2items"),  # a match-all route is prefix "/" in Envoy
    (Rewrite(uri="/v2"), HEADER_ONLY, b"/items", b"/v2items"),
    (Rewrite(regex_match=r"^/service/([^/]+)(/.*)$", regex_rewrite=r"\2/instance/\1"), True,
     b"/service/foo/v1/api?k=v", b"/v1/api/instance/foo?k=v"),
    (Rewrite(regex_match="o", regex_rewrite="0"), True, b"/foo/bo", b"/f00/b0"),
    (Rewrite(authority="x"), True, b"/same", b"/same"),
])
def test_rewrite_path(rewrite: Rewrite, block: HttpMatch | bool, path: bytes, expected: bytes) -> None:
    assert rewrite_path(rewrite, block, path) == expected


def test_header_operations() -> None:
    headers = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"c", b"4")]
    ops = HeaderOps(set=(("A", "new"),), add=(("b", "more"),), remove=("c",))
    assert apply_ops(headers, ops) == [(b"b", b"2"), (b"a", b"new"), (b"b", b"more")]
    assert headers == [(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"c", b"4")]  # the input is not changed


def test_request_operations_on_the_authority() -> None:
    headers, host = apply_request_ops([(b"x", b"1")], b"reviews", HeaderOps(set=((":authority", "other"),)))
    assert (headers, host) == ([(b"x", b"1")], b"other")
    headers, host = apply_request_ops([], b"reviews", HeaderOps(add=(("Host", "third"),)))
    assert (headers, host) == ([], b"third")


@pytest.mark.parametrize(("redirect", "authority", "path", "expected"), [
    (Redirect(uri="/new"), "reviews:9080", b"/old?q=1", b"http://reviews:9080/new?q=1"),
    (Redirect(uri="/new?a=b"), "reviews", b"/old?q=1", b"http://reviews/new?a=b"),
    (Redirect(authority="example.com"), "reviews:9080", b"/p", b"http://example.com/p"),
    (Redirect(scheme="https"), "reviews:8080", b"/p", b"https://reviews/p"),
    (Redirect(scheme="https", port=8443), "reviews:8080", b"/p", b"https://reviews:8443/p"),
    (Redirect(port=80), "reviews:8080", b"/p", b"http://reviews/p"),
    (Redirect(uri="/x", derive_port="FROM_PROTOCOL_DEFAULT"), "reviews:8080", b"/p", b"http://reviews/x"),
    (Redirect(uri="/x", derive_port="FROM_REQUEST_PORT"), "reviews", b"/p", b"http://reviews:8080/x"),
    (Redirect(prefix_rewrite="/new"), "reviews", b"/old/page?q=1", b"http://reviews/new/page?q=1"),
])
def test_redirect_location(redirect: Redirect, authority: str, path: bytes, expected: bytes) -> None:
    assert redirect_location(redirect, PREFIX, authority, path, 8080) == expected


def test_request_ids_are_distinct_uuid4() -> None:
    ids = {new_request_id() for _ in range(10000)}  # across a batch of the random prefix
    assert len(ids) == 10000
    for rid in list(ids)[:50]:
        parsed = uuid.UUID(rid.decode())
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == rid.decode()
