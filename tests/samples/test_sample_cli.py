"""`python -m proxy.samples`: real processes that print where they listen, honour HTTP_PROXY, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sample_helpers import RecordingProxy, http

from proxy.samples import start_ratings
from proxy.samples.__main__ import PLAN, main, parse_ports, service_address

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


@asynccontextmanager
async def sample_process(*args: str, listeners: int = 1, env: dict[str, str] | None = None
                         ) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[int], list[str]]]:
    """Run `python -m proxy.samples ARGS` until it printed `listeners` listening lines; SIGTERM it on exit."""
    full_env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "no_proxy", "hostname")}
    full_env.update(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.samples", *args, cwd=ROOT, env=full_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    ports, lines = [], []
    try:
        async with asyncio.timeout(20):
            while len(ports) < listeners:
                line = (await process.stdout.readline()).decode()
                assert line, f"exited early: {(await process.stderr.read()).decode() if process.stderr else ''}"
                lines.append(line)
                match = LISTENING.search(line)
                assert match, line
                ports.append(int(match.group(1)))
        yield process, ports, lines
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await process.communicate()


async def echo(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()
    async with asyncio.timeout(10):
        reply = await reader.read(-1)
    writer.close()
    await writer.wait_closed()
    return reply


async def test_tcp_echo_process_on_two_ports_exits_cleanly_on_sigterm() -> None:
    async with sample_process("tcp-echo", "--ports", "0,0", "--prefix", "one", listeners=2) as (proc, ports, lines):
        assert all(line.rstrip().endswith(", prefix: one") for line in lines)
        for port in ports:
            assert await echo(port, b"Mon Nov 12 23:24:57 UTC 2022\n") == b"one Mon Nov 12 23:24:57 UTC 2022\n"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0


async def test_tcp_echo_takes_the_go_sample_positional_arguments() -> None:
    async with sample_process("tcp-echo", "0", "hey") as (_, [port], _lines):
        assert await echo(port, b"x\n") == b"hey x\n"


async def test_reviews_process_calls_ratings_through_http_proxy_env(closing, recording_proxy: RecordingProxy) -> None:
    ratings = closing(await start_ratings("127.0.0.1", 0))
    recording_proxy.routes["ratings:9080"] = ratings.port
    env = {"HTTP_PROXY": f"http://127.0.0.1:{recording_proxy.port}", "HOSTNAME": "reviews-v3-5c5c"}
    async with sample_process("reviews", "--version", "v3", "--port", "0", env=env) as (_, [port], _lines):
        response = await http(port, "/reviews/0")
    assert b'"podname": "reviews-v3-5c5c"' in response.body
    assert b'"stars": 5, "color": "red"' in response.body
    assert [r.request_line for r in recording_proxy.requests] == ["GET http://ratings:9080/ratings/0 HTTP/1.1"]


async def test_a_busy_port_exits_1_with_a_message() -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.samples", "details", "--port", str(port), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(20):
            _, stderr = await process.communicate()
        assert process.returncode == 1
        assert b"cannot listen" in stderr
    finally:
        blocker.close()
        await blocker.wait_closed()


def test_a_bad_proxy_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reviews", "--proxy", "https://127.0.0.1:15001"]) == 2
    assert "unsupported proxy URL" in capsys.readouterr().err


def test_service_addresses_default_like_bookinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DETAILS_HOSTNAME", "DETAILS_SERVICE_PORT", "SERVICES_DOMAIN"):
        monkeypatch.delenv(name, raising=False)
    assert service_address("details") == "details:9080"
    monkeypatch.setenv("DETAILS_HOSTNAME", "mydetails")
    monkeypatch.setenv("DETAILS_SERVICE_PORT", "9999")
    monkeypatch.setenv("SERVICES_DOMAIN", "bookinfo.svc")
    assert service_address("details") == "mydetails.bookinfo.svc:9999"


def test_port_lists() -> None:
    assert parse_ports("9000,9001,9002") == [9000, 9001, 9002]
    for bad in ("", "x", "70000", "9000,-1"):
        with pytest.raises(Exception, match="port"):
            parse_ports(bad)


def test_the_all_plan_has_no_port_twice() -> None:
    ports = [p for value in PLAN.values() for p in (value if isinstance(value, tuple) else (value,))]
    assert len(ports) == len(set(ports))
