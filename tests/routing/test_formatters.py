"""Envoy `%VAR%` header values: parsed once; constants stay plain strings; bad operators are reported."""

from __future__ import annotations

import time

import pytest

from proxy.routing.formatters import Format, FormatContext, parse


class FakeTransport:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def get_extra_info(self, name: str) -> tuple[str, int]:
        self.asked.append(name)
        return ("10.0.0.7", 41000) if name == "peername" else ("10.0.0.1", 8080)


def context(transport: FakeTransport | None = None) -> FormatContext:
    return FormatContext(transport or FakeTransport(), [(b"x-user", b"alice"), (b"host", b"reviews:9080"),
                                                        (b"x-multi", b"a"), (b"x-multi", b"b")],
                         "127.0.0.1:9001", "outbound|9080|v1|reviews.default.svc.cluster.local",
                         1700000000.25, "HTTP/1.1", "reviews-route")


@pytest.mark.parametrize("value", ["plain", "", "50 percent", "a:b"])
def test_values_without_operators_stay_constant(value: str) -> None:
    assert parse(value) == (value, [])


@pytest.mark.parametrize(("value", "expected"), [
    ("%DOWNSTREAM_REMOTE_ADDRESS%", b"10.0.0.7:41000"),
    ("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", b"10.0.0.7"),
    ("%DOWNSTREAM_LOCAL_ADDRESS%", b"10.0.0.1:8080"),
    ("%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", b"10.0.0.1"),
    ("%DOWNSTREAM_LOCAL_PORT%", b"8080"),
    ("%UPSTREAM_HOST%", b"127.0.0.1:9001"),
    ("%UPSTREAM_CLUSTER%", b"outbound|9080|v1|reviews.default.svc.cluster.local"),
    ("user=%REQ(X-User)%", b"user=alice"),
    ("%REQ(x-missing?x-user)%", b"alice"),
    ("%REQ(:authority)%", b"reviews:9080"),
    ("%REQ(x-multi)%", b"a,b"),
    ("%REQ(x-user):3%", b"ali"),
    ("%REQ(x-none)%", b""),
    ("%START_TIME%", b"2023-11-14T22:13:20.250Z"),
    ("%START_TIME(%Y/%m/%d)%", b"2023/11/14"),
    ("%START_TIME(%H:%M:%S.%3f)%", b"22:13:20.250"),
    ("%PROTOCOL%", b"HTTP/1.1"),
    ("%ROUTE_NAME%", b"reviews-route"),
    ("[%PROTOCOL%] 100%% %UPSTREAM_HOST%", b"[HTTP/1.1] 100% 127.0.0.1:9001"),
])
def test_operators(value: str, expected: bytes) -> None:
    parsed, problems = parse(value)
    assert problems == [] and isinstance(parsed, Format)
    assert parsed.render(context()) == expected


def test_hostname() -> None:
    parsed, _ = parse("%HOSTNAME%")
    assert isinstance(parsed, Format)
    assert parsed.render(context()) == __import__("socket").gethostname().encode()


def test_escaped_percent_alone_is_a_constant() -> None:
    assert parse("100%%") == ("100%", [])


@pytest.mark.parametrize(("value", "problem"), [
    ("%NOPE%", "unknown operator %NOPE%"),
    ("50%", "'%' at position 2 does not start an operator"),
    ("%REQ%", "%REQ% needs a header name"),
])
def test_problems_are_reported_and_the_value_kept(value: str, problem: str) -> None:
    parsed, problems = parse(value)
    assert parsed == value
    assert len(problems) == 1 and problems[0].startswith(problem)


def test_addresses_are_looked_up_only_when_asked_and_once() -> None:
    transport = FakeTransport()
    ctx = context(transport)
    parsed, _ = parse("%UPSTREAM_HOST%")
    assert isinstance(parsed, Format)
    parsed.render(ctx)
    assert transport.asked == []
    both, _ = parse("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_PORT%")
    assert isinstance(both, Format)
    assert both.render(ctx) == b"10.0.0.7:41000 41000"
    assert transport.asked == ["peername"]


def test_default_start_time_is_utc() -> None:
    parsed, _ = parse("%START_TIME%")
    assert isinstance(parsed, Format)
    ctx = context()
    ctx.start_wall = time.time()
    assert parsed.render(ctx).decode().startswith(time.strftime("%Y-%m-%dT", time.gmtime(ctx.start_wall)))
