"""Access log lines: Envoy-like text or JSON, one per request or connection, nothing when off."""

from __future__ import annotations

import io
import json
import re

from proxy.accesslog import AccessLog


def http_line(mode: str) -> str:
    out = io.StringIO()
    log = AccessLog(mode, out)
    log.http(b"GET", b"/reviews/0", b"HTTP/1.1", 503, "UH", 0, 19, 1.4, b"", b"outbound|9080|v3|r",
             b"reviews:9080", b"rid-1", b"default/reviews#0")
    log.flush()
    return out.getvalue()


def test_text_line_names_code_flag_cluster_and_route() -> None:
    line = http_line("text")
    assert re.fullmatch(r'\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\] "GET /reviews/0 HTTP/1\.1" 503 UH 0 19 1 '
                        r'"reviews:9080" "rid-1" "-" outbound\|9080\|v3\|r default/reviews#0\n', line), line


def test_json_line_and_off() -> None:
    record = json.loads(http_line("json"))
    assert (record["response_code"], record["response_flags"], record["upstream_host"]) == (503, "UH", None)
    assert http_line("off") == ""


def test_tcp_line() -> None:
    out = io.StringIO()
    log = AccessLog("text", out)
    log.tcp("UF", 6, 0, 2.0, ("127.0.0.1", 5000), b"127.0.0.1:9", b"outbound|9000|v1|t")
    log.tcp("DC", 0, 0, 1.0, None, b"", b"outbound|9000|v1|t")
    log.flush()
    assert '"- - TCP" 0 UF 6 0 2 "127.0.0.1:5000" "127.0.0.1:9" outbound|9000|v1|t' in out.getvalue()


def test_lines_are_batched_and_reach_a_binary_stream_in_order() -> None:
    out = io.BytesIO()
    log = AccessLog("text", out)
    for i in range(300):  # more than one batch
        log.http(b"GET", b"/%d" % i, b"HTTP/1.1", 200, "-", 0, 3, 0.2, b"127.0.0.1:1", b"c", b"h", b"r", b"")
    assert out.getvalue().count(b"\n") == 256  # the first batch went out on its own
    log.flush()
    lines = out.getvalue().splitlines()
    assert [line.split(b" ")[2] for line in lines] == [b"/%d" % i for i in range(300)]


def test_text_stream_with_a_buffer_gets_bytes_after_earlier_text() -> None:
    raw = io.BytesIO()
    text = io.TextIOWrapper(raw, encoding="utf-8")
    text.write("started\n")
    log = AccessLog("text", text)
    log.http(b"GET", b"/caf\xc3\xa9", b"HTTP/1.1", 200, "-", 0, 3, 0.2, b"", b"", b"h", b"r", b"")
    log.flush()
    first, second = raw.getvalue().decode().splitlines()
    assert first == "started" and '"GET /café HTTP/1.1" 200' in second
