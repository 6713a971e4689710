"""Access log lines: Envoy-like text or JSON, one per request or connection, nothing when off."""

from __future__ import annotations

import io
import json
import re

from proxy.accesslog import AccessLog


def http_line(mode: str) -> str:
    out = io.StringIO()
    AccessLog(mode, out).http("GET", "/reviews/0", "HTTP/1.1", 503, "UH", 0, 19, 1.4, "", "outbound|9080|v3|r",
                              "reviews:9080", "rid-1", "default/reviews#0")
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
    AccessLog("text", out).tcp("UF", 6, 0, 2.0, "127.0.0.1:5000", "127.0.0.1:9", "outbound|9000|v1|t")
    assert '"- - TCP" 0 UF 6 0 2 "127.0.0.1:5000" "127.0.0.1:9" outbound|9000|v1|t' in out.getvalue()
