"""Helpers for the hostile-input tests: a backend that records every byte it receives, the edge config
(an `/admin` prefix answered 403 by a directResponse rule, everything else routed to the backend), and a
blocking raw client that sends exact bytes in one write and reads HTTP/1.1 responses back.

The backend runs on threads (blocking sockets) so a module can share it with one proxy process.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import free_port, service_entry

TIMEOUT = 10.0  # seconds any single read may take


class RecordingBackend:
    """A keep-alive HTTP/1.1 server that keeps every byte each connection sent it.

    Answers each request 200 with a JSON body {path, headers} (the request as it arrived), whatever the
    path, `/admin` included (it trusts the proxy in front). A request carrying `Upgrade` to a path that
    starts with `/ws` gets 101 and the connection becomes an echo; on other paths the upgrade is ignored
    (the backend answers 200 and goes on reading requests, as most servers do).
    """

    def __init__(self) -> None:
        self.connections: list[bytearray] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        backend = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                backend._serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def all_bytes(self) -> bytes:
        with self.lock:
            return b"".join(bytes(c) for c in self.connections)

    def mark(self) -> tuple[int, ...]:
        """Where each connection's record stands now, for `received_since`."""
        with self.lock:
            return tuple(len(c) for c in self.connections)

    def received_since(self, mark: tuple[int, ...]) -> list[bytes]:
        """What each connection received after `mark` (new connections whole)."""
        with self.lock:
            return [bytes(c[mark[i] if i < len(mark) else 0:]) for i, c in enumerate(self.connections)]

    def paths(self) -> list[str]:
        with self.lock:
            return [r["path"] for r in self.requests]

    def _serve(self, sock: socket.socket) -> None:
        record = bytearray()
        with self.lock:
            self.connections.append(record)
        buf = b""
        tunnel = False
        sock.settimeout(30)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                with self.lock:
                    record += data
                if tunnel:
                    sock.sendall(data)
                    continue
                buf += data
                while True:
                    parsed = _parse_request(buf)
                    if parsed is None:
                        break
                    request, buf = parsed
                    with self.lock:
                        self.requests.append(request)
                    headers = request["headers"]
                    if "upgrade" in headers and request["path"].startswith("/ws"):
                        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: "
                                     + headers["upgrade"].encode() + b"\r\n\r\n")
                        tunnel = True
                        if buf:
                            sock.sendall(buf)
                        break
                    body = json.dumps({"path": request["path"], "headers": headers}).encode()
                    sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(body), body))
        except OSError:
            return
        finally:
            sock.close()


def _parse_request(buf: bytes) -> tuple[dict[str, Any], bytes] | None:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = headers[key] + ", " + value.strip() if key in headers else value.strip()
    rest = buf[end + 4:]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        pos = 0
        while True:
            nl = rest.find(b"\r\n", pos)
            if nl < 0:
                return None
            size = int(rest[pos:nl].split(b";")[0], 16)
            if size == 0:  # then trailers, if any, and a blank line
                trailers_end = rest.find(b"\r\n\r\n", nl)
                if trailers_end < 0:
                    return None
                rest = rest[trailers_end + 4:]
                break
            if len(rest) < nl + 2 + size + 2:
                return None
            body += rest[nl + 2:nl + 2 + size]
            pos = nl + 2 + size + 2
    else:
        length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            return None
        body, rest = rest[:length], rest[length:]
    return {"method": method, "path": path, "headers": headers, "body_length": len(body)}, rest


def edge_config(config_dir: Path, backend_port: int, gateway_port: int) -> None:
    (config_dir / "web-service-entry.yaml").write_text(service_entry("web", 80, [(backend_port, "v1")]))
    (config_dir / "edge.yaml").write_text(f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {gateway_port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
  - name: admin
    match: [{{uri: {{prefix: /admin}}}}]
    directResponse: {{status: 403, body: {{string: "admin is internal"}}}}
  - name: public
    match: [{{uri: {{prefix: /public}}}}]
    headers: {{request: {{set: {{x-route: public}}}}}}
    route: [{{destination: {{host: web}}}}]
  - name: other
    headers: {{request: {{set: {{x-route: other}}}}}}
    route: [{{destination: {{host: web}}}}]
""")


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    raw_head: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RawClient:
    """One TCP connection: `send` exact bytes in one write, `response` reads one response."""

    port: int
    sock: socket.socket = field(init=False)
    buf: bytes = b""

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def response(self) -> RawResponse:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before a response head; got {self.buf!r}")
        end = self.buf.index(b"\r\n\r\n")
        head, self.buf = self.buf[:end], self.buf[end + 4:]
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if status == 101 or status == 204 or status == 304:
            return RawResponse(status, headers, b"", head)
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buf) < length:
                if not self._fill():
                    raise ConnectionError("closed inside a body")
            body, self.buf = self.buf[:length], self.buf[length:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill()
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
                if size == 0:
                    break
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return RawResponse(status, headers, body, head)

    def read_raw(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                break
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def at_eof(self) -> bool:
        """True when the proxy closed the connection (after what it sent)."""
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def one_shot(port: int, data: bytes, responses: int = 1) -> list[RawResponse]:
    """Send `data` in one write on a new connection and read that many responses."""
    client = RawClient(port)
    try:
        client.send(data)
        return [client.response() for _ in range(responses)]
    finally:
        client.close()


def wait_until(predicate: Any, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


__all__ = ["RecordingBackend", "RawClient", "RawResponse", "edge_config", "free_port", "one_shot", "wait_until"]
