"""Admin HTTP server: /ready, /metrics, /config_dump, /reload (and what `proxy.admin.handlers` adds).

Not on the data path, so it uses asyncio streams and a tiny HTTP/1.1 reader: one request per
connection, bodies by Content-Length only. Binds 127.0.0.1 by default; never all interfaces unless asked.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("shiftproxy.admin")

MAX_BODY = 16 * 1024 * 1024


@dataclass(slots=True)
class AdminRequest:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class AdminResponse:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def json(status: int, payload: Any) -> AdminResponse:
        return AdminResponse(status, (json.dumps(payload, indent=2, default=str) + "\n").encode(),
                             "application/json")

    @staticmethod
    def text(status: int, text: str) -> AdminResponse:
        return AdminResponse(status, text.encode())


Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           413: "Payload Too Large", 422: "Unprocessable Entity", 500: "Internal Server Error",
           503: "Service Unavailable"}


class AdminServer:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.server: asyncio.Server | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, host, port)
        sockname = self.server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(self._read(reader), 30)
            response = await self._dispatch(request) if request else AdminResponse.text(400, "bad request\n")
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        except _TooLarge:
            response = AdminResponse.text(413, "request body too large\n")
        head = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Status')}",
                f"content-type: {response.content_type}", f"content-length: {len(response.body)}",
                "connection: close"]
        head += [f"{k}: {v}" for k, v in response.headers.items()]
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + response.body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> AdminRequest | None:
        line = (await reader.readline()).decode("latin-1").strip()
        parts = line.split()
        if len(parts) != 3:
            return None
        method, target, _ = parts
        headers: dict[str, str] = {}
        while True:
            raw = (await reader.readline()).decode("latin-1")
            if raw in ("\r\n", "\n", ""):
                break
            name, _, value = raw.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length > MAX_BODY:
            raise _TooLarge
        body = await reader.readexactly(length) if length else b""
        url = urlsplit(target)
        return AdminRequest(method.upper(), url.path, parse_qsl(url.query, keep_blank_values=True), headers, body)

    async def _dispatch(self, request: AdminRequest) -> AdminResponse:
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            allowed = [m for (m, p) in self.routes if p == request.path]
            if allowed:
                return AdminResponse(405, b"method not allowed\n", headers={"allow": ", ".join(allowed)})
            paths = sorted({p for _, p in self.routes})
            return AdminResponse.text(404, "not found; endpoints: " + " ".join(paths) + "\n")
        try:
            return await handler(request)
        except Exception as exc:  # an admin bug must never take the proxy down
            log.exception("admin handler %s %s failed", request.method, request.path)
            return AdminResponse.text(500, f"internal error: {exc}\n")


class _TooLarge(Exception):
    pass
