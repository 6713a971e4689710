"""Virtual host lookup by Host header: exact, then the longest wildcard suffix, then `*`; the bytes
lookup remembers answers for a bounded number of distinct hosts."""

from __future__ import annotations

from proxy.routing.snapshot import HOST_MEMO_SIZE, RouteTable, VirtualHost


def table() -> tuple[RouteTable, VirtualHost, VirtualHost, VirtualHost]:
    exact, wild, catch = (VirtualHost(name, (), ()) for name in ("exact", "wild", "catch"))
    return RouteTable({"reviews": exact, "reviews:9080": exact}, ((".example.com", wild),), catch), exact, wild, catch


def test_find_host_matches_find_for_case_ports_and_wildcards() -> None:
    rt, exact, wild, catch = table()
    cases = {b"reviews": exact, b"REVIEWS:9080": exact, b"reviews:1234": exact, b"a.example.com:80": wild,
             b"other": catch, b"": catch, b"[::1]:80": catch}
    for host, expected in cases.items():
        assert rt.find_host(host) is expected is rt.find(host.decode())
        assert rt.find_host(host) is expected  # the remembered answer is the same


def test_find_host_memo_is_bounded() -> None:
    rt, _, wild, catch = table()
    for i in range(HOST_MEMO_SIZE + 500):
        assert rt.find_host(b"h%d.example.com" % i) is wild
    assert len(rt._by_host) == HOST_MEMO_SIZE
    assert rt.find_host(b"late.example.com") is wild and rt.find_host(b"nowhere") is catch
    assert len(rt._by_host) == HOST_MEMO_SIZE
