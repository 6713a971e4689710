"""`consistentHash.useSourceIp` on a TCP service: every connection from one client address reaches the
same endpoint (Envoy's tcp_proxy hash policy), where the cluster's own balancer would alternate."""

from __future__ import annotations

from dataclasses import replace

from proxy.routing.snapshot import HashPolicy
from tests.l4.conftest import Echo, ProxyFactory, cluster, endpoint, exchange, route, snapshot


async def prefixes(port: int, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        replies = await exchange(port, [b"line %d\n" % i])
        out.append(replies[0].split(b" ", 1)[0])
    return out


async def test_source_ip_keeps_a_client_on_one_endpoint(echo: Echo, start_proxy: ProxyFactory) -> None:
    both = cluster("", endpoint(echo.v1, "v1"), endpoint(echo.v2, "v2"))  # ROUND_ROBIN
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (both, 100))))
    assert set(await prefixes(proxy.port, 6)) == {b"one", b"two"}  # without a hash: both endpoints
    hashed = replace(both, hash_policy=HashPolicy(source_ip=True))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (hashed, 100))))
    assert len(set(await prefixes(proxy.port, 10))) == 1


async def test_other_keys_do_not_apply_to_tcp(echo: Echo, start_proxy: ProxyFactory) -> None:
    """A header or cookie key means nothing to a TCP connection: the cluster's balancer picks."""
    hashed = replace(cluster("", endpoint(echo.v1, "v1"), endpoint(echo.v2, "v2")),
                     hash_policy=HashPolicy(header="x-user"))
    proxy = await start_proxy(lambda port: snapshot(1, port, route(port, (hashed, 100))))
    assert set(await prefixes(proxy.port, 6)) == {b"one", b"two"}
