"""Access log: one line per HTTP request or TCP connection, Envoy-like text or JSON, or off.

A text line is built as bytes in one `%` format from the request's own bytes (no decoding), kept in a
list, and written in batches: when 256 lines are waiting, and from the server's flush timer (every 0.5 s)
and at shutdown. So the hot path pays one format and one append per request, and the stream sees one
write per batch. The start time is formatted once per second.
"""

from __future__ import annotations

import io
import json
import sys
import time
from typing import IO, Any

_BATCH = 256  # lines kept before a write
_TEXT_HTTP = b'[%s] "%s %s %s" %d %s %d %d %.0f "%s" "%s" "%s" %s %s\n'
_TEXT_TCP = b'[%s] "- - TCP" 0 %s %d %d %.0f "%s:%d" "%s" %s\n'
_TEXT_TCP_NO_PEER = b'[%s] "- - TCP" 0 %s %d %d %.0f "" "%s" %s\n'


_time = time.time


def _text(value: bytes) -> str:
    return value.decode("latin-1")


class AccessLog:
    def __init__(self, mode: str = "text", stream: IO[Any] | None = None) -> None:
        if mode not in ("text", "json", "off"):
            raise ValueError(f"access log mode must be text, json or off, not {mode!r}")
        self.mode = mode
        self.enabled = mode != "off"
        self._json = mode == "json"
        self.stream = stream or sys.stdout
        self._lines: list[bytes] = []
        self._second = -1
        self._stamp = b""

    def _now(self) -> bytes:
        """The start time, formatted once per second: strftime per request is a measurable cost."""
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)).encode()
        return self._stamp

    def http(self, method: bytes, path: bytes, protocol: bytes, code: int, flags: str, request_bytes: int,
             response_bytes: int, duration_ms: float, upstream_host: bytes, upstream_cluster: bytes,
             authority: bytes, request_id: bytes, route_name: bytes) -> None:
        if not self.enabled:
            return
        if self._json:
            self._add(json.dumps({
                "start_time": _text(self._now()), "method": _text(method), "path": _text(path),
                "protocol": _text(protocol), "response_code": code, "response_flags": flags,
                "bytes_received": request_bytes, "bytes_sent": response_bytes, "duration": round(duration_ms, 3),
                "upstream_host": _text(upstream_host) or None, "upstream_cluster": _text(upstream_cluster) or None,
                "authority": _text(authority), "request_id": _text(request_id), "route_name": _text(route_name) or None,
            }).encode() + b"\n")
            return
        # once per request: the clock read and the batching are inlined rather than called
        stamp = self._stamp if int(_time()) == self._second else self._now()
        lines = self._lines
        lines.append(_TEXT_HTTP % (
            stamp, method, path, protocol, code, flags.encode(), request_bytes, response_bytes, duration_ms,
            authority, request_id, upstream_host or b"-", upstream_cluster or b"-", route_name or b"-"))
        if len(lines) >= _BATCH:
            self.flush()

    def tcp(self, flags: str, received: int, sent: int, duration_ms: float, downstream: tuple[str, int] | None,
            upstream_host: bytes, upstream_cluster: bytes, requested_server_name: str = "") -> None:
        """One connection. `downstream`: the client's (address, port), formatted here, in the line's one
        format, when known."""
        if not self.enabled:
            return
        if self._json:
            entry = {
                "start_time": _text(self._now()), "protocol": "tcp", "response_flags": flags,
                "bytes_received": received, "bytes_sent": sent, "duration": round(duration_ms, 3),
                "downstream_remote_address": f"{downstream[0]}:{downstream[1]}" if downstream else "",
                "upstream_host": _text(upstream_host) or None,
                "upstream_cluster": _text(upstream_cluster) or None,
            }
            if requested_server_name:  # TLS passed through, routed by this SNI
                entry["requested_server_name"] = requested_server_name
            self._add(json.dumps(entry).encode() + b"\n")
            return
        # once per connection: the clock read and the batching inlined, as in `http`
        stamp = self._stamp if int(_time()) == self._second else self._now()
        if downstream is not None:
            line = _TEXT_TCP % (stamp, flags.encode(), received, sent, duration_ms, downstream[0].encode(),
                                downstream[1], upstream_host or b"-", upstream_cluster or b"-")
        else:
            line = _TEXT_TCP_NO_PEER % (stamp, flags.encode(), received, sent, duration_ms, upstream_host or b"-",
                                        upstream_cluster or b"-")
        if requested_server_name:
            line = line[:-1] + b' "%s"\n' % requested_server_name.encode()
        lines = self._lines
        lines.append(line)
        if len(lines) >= _BATCH:
            self.flush()

    def _add(self, line: bytes) -> None:
        lines = self._lines
        lines.append(line)
        if len(lines) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        """Write the waiting lines. A text stream gets them decoded unless it has a binary buffer."""
        lines, self._lines = self._lines, []
        stream = self.stream
        try:
            if lines:
                data = b"".join(lines)
                if isinstance(stream, io.TextIOBase):
                    binary = getattr(stream, "buffer", None)
                    if binary is not None:
                        stream.flush()  # whatever was printed before goes first
                        binary.write(data)
                    else:
                        stream.write(data.decode("utf-8", "replace"))
                else:
                    stream.write(data)
            stream.flush()
        except (OSError, ValueError):
            pass
