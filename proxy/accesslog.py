"""Access log: one line per HTTP request or TCP connection, Envoy-like text or JSON, or off.

Writes go to a buffered stream flushed by the event loop's idle time (the line is built only when
logging is on), so the hot path pays one string format per request.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO


class AccessLog:
    def __init__(self, mode: str = "text", stream: TextIO | None = None) -> None:
        if mode not in ("text", "json", "off"):
            raise ValueError(f"access log mode must be text, json or off, not {mode!r}")
        self.mode = mode
        self.enabled = mode != "off"
        self.stream = stream or sys.stdout
        self._second = -1
        self._stamp = ""

    def _now(self) -> str:
        """The start time, formatted once per second: strftime per request is a measurable cost."""
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        return self._stamp

    def http(self, method: str, path: str, protocol: str, code: int, flags: str, request_bytes: int,
             response_bytes: int, duration_ms: float, upstream_host: str, upstream_cluster: str,
             authority: str, request_id: str, route_name: str) -> None:
        if not self.enabled:
            return
        now = self._now()
        if self.mode == "json":
            line = json.dumps({
                "start_time": now, "method": method, "path": path, "protocol": protocol,
                "response_code": code, "response_flags": flags, "bytes_received": request_bytes,
                "bytes_sent": response_bytes, "duration": round(duration_ms, 3),
                "upstream_host": upstream_host or None, "upstream_cluster": upstream_cluster or None,
                "authority": authority, "request_id": request_id, "route_name": route_name or None,
            })
        else:
            line = (f'[{now}] "{method} {path} {protocol}" {code} {flags} {request_bytes} {response_bytes} '
                    f'{duration_ms:.0f} "{authority}" "{request_id}" "{upstream_host or "-"}" '
                    f'{upstream_cluster or "-"} {route_name or "-"}')
        self.stream.write(line + "\n")

    def tcp(self, flags: str, received: int, sent: int, duration_ms: float, downstream: str,
            upstream_host: str, upstream_cluster: str) -> None:
        if not self.enabled:
            return
        now = self._now()
        if self.mode == "json":
            line = json.dumps({
                "start_time": now, "protocol": "tcp", "response_flags": flags, "bytes_received": received,
                "bytes_sent": sent, "duration": round(duration_ms, 3), "downstream_remote_address": downstream,
                "upstream_host": upstream_host or None, "upstream_cluster": upstream_cluster or None,
            })
        else:
            line = (f'[{now}] "- - TCP" 0 {flags} {received} {sent} {duration_ms:.0f} "{downstream}" '
                    f'"{upstream_host or "-"}" {upstream_cluster or "-"}')
        self.stream.write(line + "\n")

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass
