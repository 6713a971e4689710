"""Header values with Envoy `%VAR%` operators, rendered per request on both directions."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from proxy.config.compile_http import header_ops
from tests.l7.conftest import Proxy, UpstreamServer, cluster, simple_snapshot

StartProxy = Callable[..., Awaitable[Proxy]]
StartUpstream = Callable[[str], Awaitable[UpstreamServer]]


async def test_operators_in_request_and_response_headers(start_proxy: StartProxy, upstreams: StartUpstream) -> None:
    v1 = await upstreams("v1")
    request_ops = header_ops({"set": {
        "x-client": "%DOWNSTREAM_REMOTE_ADDRESS%", "x-client-ip": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "x-local": "%DOWNSTREAM_LOCAL_ADDRESS%", "x-upstream": "%UPSTREAM_HOST%", "x-cluster": "%UPSTREAM_CLUSTER%",
        "x-who": "user %REQ(x-user)% via %PROTOCOL%", "x-start": "%START_TIME%", "x-constant": "plain",
        "x-empty": "%REQ(x-absent)%",
    }})
    response_ops = header_ops({"add": {"x-served-by": "%UPSTREAM_HOST%", "x-upstream-version": "%RESP(x-version)%"}})
    assert request_ops is not None and request_ops.set == (("x-constant", "plain"),)  # constants stay constant
    c = cluster("v1", v1)
    proxy = await start_proxy(simple_snapshot((c, 100), request_headers=request_ops, response_headers=response_ops))
    client = await proxy.connect()
    got = await client.request(headers=(("x-user", "alice"),))
    assert got.status == 200
    sent = dict(got.json()["headers"])
    local_port = client.writer.get_extra_info("sockname")[1]
    assert sent["x-client"] == f"127.0.0.1:{local_port}"
    assert sent["x-client-ip"] == "127.0.0.1"
    assert sent["x-local"] == f"127.0.0.1:{proxy.port}"
    assert sent["x-upstream"] == f"127.0.0.1:{v1.port}"
    assert sent["x-cluster"] == c.name
    assert sent["x-who"] == "user alice via HTTP/1.1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", sent["x-start"])
    assert sent["x-constant"] == "plain"
    assert "x-empty" not in sent  # an empty result adds nothing (Envoy)
    assert got.header("x-served-by") == f"127.0.0.1:{v1.port}"
    assert got.header("x-upstream-version") == "v1"
