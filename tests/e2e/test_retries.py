"""VirtualService `retries` end to end: the real proxy process in front of upstreams that fail N times
then succeed, always answer 503, or hang. Each test checks Envoy's outcome: the response code, the
response flags in istio_requests_total, which endpoint served and how many attempts reached it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.e2e.harness import Client, ProxyProcess
from tests.e2e.resilience_backends import Backend, requests_by_code_and_flags, service_entry

URL = "http://flaky:9080/x"


def virtual_service(rule: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: flaky}}
spec:
  hosts: [flaky]
  http:
  - route:
    - destination: {{host: flaky}}
{rule}"""


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., Backend]]:
    started: list[Backend] = []

    async def start(version: str, mode: str) -> Backend:
        backend = await Backend(version, mode).start()
        started.append(backend)
        return backend

    yield start  # type: ignore[misc]
    for backend in started:
        backend.close()


def run_proxy(tmp_path: Path, backends: list[Backend], rule: str | None) -> ProxyProcess:
    d = tmp_path / "config"
    d.mkdir()
    (d / "se.yaml").write_text(service_entry("flaky", backends))
    if rule is not None:
        (d / "vs.yaml").write_text(virtual_service(rule))
    return ProxyProcess(d, ["--access-log", "off"]).start()


async def get(proxy: ProxyProcess, n: int = 1, body: bytes = b"") -> list[tuple[int, str]]:
    """n requests on one keep-alive connection: (status, version of the endpoint that answered)."""
    client = Client(proxy.mesh_port)
    out = []
    for _ in range(n):
        resp = await client.request("POST" if body else "GET", URL, "flaky:9080", body=body)
        out.append((resp.status, resp.json()["version"] if resp.headers.get("content-type") == "application/json"
                    else resp.body.decode()))
    await client.close()
    return out


async def test_5xx_retried_until_success_with_attempt_count(tmp_path: Path, backends: Callable[..., Backend]) -> None:
    flaky = await backends("v1", "fail:2")
    proxy = run_proxy(tmp_path, [flaky], "    retries: {attempts: 3, retryOn: 5xx}\n")
    try:
        assert await get(proxy) == [(200, "v1")]
        assert [s.attempt for s in flaky.requests] == ["1", "2", "3"]
        assert requests_by_code_and_flags(proxy, "flaky") == {("200", "-"): 1}
    finally:
        proxy.stop()


async def test_retries_spent_forward_the_last_response_flagged_urx(tmp_path: Path,
                                                                   backends: Callable[..., Backend]) -> None:
    always = await backends("v1", "503")
    proxy = run_proxy(tmp_path, [always], "    retries: {attempts: 2, retryOn: gateway-error}\n")
    try:
        assert await get(proxy) == [(503, "v1")]  # the upstream's own 503, not a local reply
        assert len(always.requests) == 3
        assert requests_by_code_and_flags(proxy, "flaky") == {("503", "URX"): 1}
    finally:
        proxy.stop()


async def test_condition_not_met_is_not_retried(tmp_path: Path, backends: Callable[..., Backend]) -> None:
    five_hundred = await backends("v1", "500")
    proxy = run_proxy(tmp_path, [five_hundred], "    retries: {attempts: 2, retryOn: 'gateway-error,503'}\n")
    try:
        assert await get(proxy) == [(500, "v1")]
        assert len(five_hundred.requests) == 1
        assert requests_by_code_and_flags(proxy, "flaky") == {("500", "-"): 1}
    finally:
        proxy.stop()


async def test_istio_default_policy_does_not_retry_a_503_response(tmp_path: Path,
                                                                  backends: Callable[..., Backend]) -> None:
    always = await backends("v1", "503")
    proxy = run_proxy(tmp_path, [always], None)  # no VirtualService: the default route and policy
    try:
        assert await get(proxy, 3) == [(503, "v1")] * 3
        assert len(always.requests) == 3
        assert [s.attempt for s in always.requests] == ["1"] * 3
        assert requests_by_code_and_flags(proxy, "flaky") == {("503", "-"): 3}
    finally:
        proxy.stop()


async def test_bare_status_code_retries_on_another_endpoint(tmp_path: Path, backends: Callable[..., Backend]) -> None:
    bad, good = await backends("v1", "503"), await backends("v2", "ok")
    proxy = run_proxy(tmp_path, [bad, good], "    retries: {attempts: 1, retryOn: \"503\"}\n")
    try:
        results = await get(proxy, 20)
        # every request that met the always-503 endpoint first was retried on the other one (the
        # failed endpoint still counts its request, so the balancer prefers the other)
        assert results == [(200, "v2")] * 20
        assert all(s.attempt == "1" for s in bad.requests)
        assert sorted(s.attempt for s in good.requests) == ["1"] * (20 - len(bad.requests)) + ["2"] * len(bad.requests)
        assert requests_by_code_and_flags(proxy, "flaky") == {("200", "-"): 20}
    finally:
        proxy.stop()


async def test_per_try_timeout_gives_504_ut_after_the_retries(tmp_path: Path, backends: Callable[..., Backend]) -> None:
    hung = await backends("v1", "hang")
    proxy = run_proxy(tmp_path, [hung], "    retries: {attempts: 2, perTryTimeout: 0.2s, retryOn: 5xx}\n"
                                        "    timeout: 30s\n")
    try:
        assert await get(proxy) == [(504, "upstream request timeout")]
        assert [s.attempt for s in hung.requests] == ["1", "2", "3"]
        assert requests_by_code_and_flags(proxy, "flaky") == {("504", "UT,URX"): 1}
    finally:
        proxy.stop()


async def test_route_timeout_caps_every_attempt(tmp_path: Path, backends: Callable[..., Backend]) -> None:
    hung = await backends("v1", "hang")
    # 5 tries of 1 s would take 5 s; the route's 0.5 s ends the request during the first
    proxy = run_proxy(tmp_path, [hung], "    retries: {attempts: 4, perTryTimeout: 1s, retryOn: 5xx}\n"
                                        "    timeout: 0.5s\n")
    try:
        assert await get(proxy) == [(504, "upstream request timeout")]
        assert len(hung.requests) == 1
        assert requests_by_code_and_flags(proxy, "flaky") == {("504", "UT"): 1}
    finally:
        proxy.stop()


async def test_request_body_is_replayed_within_the_buffer_limit(tmp_path: Path,
                                                                backends: Callable[..., Backend]) -> None:
    flaky = await backends("v1", "fail:1")
    proxy = run_proxy(tmp_path, [flaky], "    retries: {attempts: 2, retryOn: 5xx}\n")
    try:
        client = Client(proxy.mesh_port)
        resp = await client.request("POST", URL, "flaky:9080", body=b"b" * 5000)
        assert (resp.status, resp.json()["received"]) == (200, 5000)
        assert [(s.attempt, s.body) for s in flaky.requests] == [("1", 5000), ("2", 5000)]
        # past the buffer limit the bytes are gone: the first answer is final, and no URX
        flaky.mode = "503"
        resp = await client.request("POST", URL, "flaky:9080", body=b"b" * 200_000)
        await client.close()
        assert resp.status == 503
        assert [(s.attempt, s.body) for s in flaky.requests[2:]] == [("1", 200_000)]
        assert requests_by_code_and_flags(proxy, "flaky") == {("200", "-"): 1, ("503", "-"): 1}
    finally:
        proxy.stop()


async def test_attempts_zero_disables_connect_retries(tmp_path: Path, backends: Callable[..., Backend]) -> None:
    always = await backends("v1", "503")
    proxy = run_proxy(tmp_path, [always], "    retries: {attempts: 0}\n")
    try:
        assert await get(proxy) == [(503, "v1")]
        assert requests_by_code_and_flags(proxy, "flaky") == {("503", "-"): 1}
    finally:
        proxy.stop()
