"""An application with no proxy settings: plain connections to a service address, as `curl` and `nc` make.

    python -m tests.e2e.capture_app http HOST PORT N [HOST-HEADER]  → {"v1": n, ...} by the x-version answered
    python -m tests.e2e.capture_app tcp HOST PORT N    → {"one": n, ...} by the tcp-echo prefix
    python -m tests.e2e.capture_app proxy HOST PORT N  → as http, through an explicit proxy at HOST:PORT
                                                         (absolute-form requests for reviews:9080)

Failures are counted too: "status-503" for an HTTP error, "closed" for a TCP connection closed without
a reply, "refused" when nothing accepted the connection.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

CONCURRENCY = 10


async def _http_worker(host: str, port: int, n: int, seen: Counter[str], proxy: bool, authority: str) -> None:
    request = (b"GET http://reviews:9080/reviews/0 HTTP/1.1\r\nhost: reviews:9080\r\n\r\n" if proxy
               else f"GET /reviews/0 HTTP/1.1\r\nhost: {authority}\r\n\r\n".encode())
    reader = writer = None
    for _ in range(n):
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            assert reader is not None
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            await reader.readexactly(int(headers.get("content-length") or 0))
            seen[headers.get("x-version", "") if status == 200 else f"status-{status}"] += 1
            if headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
        except ConnectionRefusedError:
            seen["refused"] += 1
            writer = None
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            seen["closed"] += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def _tcp_worker(host: str, port: int, n: int, seen: Counter[str]) -> None:
    for _ in range(n):  # one connection each: TCP routing is per connection
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except ConnectionRefusedError:
            seen["refused"] += 1
            continue
        try:
            writer.write(b"hello\n")
            line = await asyncio.wait_for(reader.readline(), 10)
            seen[line.split(b" ", 1)[0].decode() if line.endswith(b"\n") else "closed"] += 1
        except (OSError, TimeoutError):
            seen["closed"] += 1
        finally:
            writer.close()


async def main(kind: str, host: str, port: int, n: int, authority: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    shares = [n // CONCURRENCY + (1 if i < n % CONCURRENCY else 0) for i in range(CONCURRENCY)]
    if kind == "tcp":
        await asyncio.gather(*(_tcp_worker(host, port, share, seen) for share in shares if share))
    else:
        await asyncio.gather(*(_http_worker(host, port, share, seen, kind == "proxy", authority)
                               for share in shares if share))
    return seen


if __name__ == "__main__":
    kind, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    authority = sys.argv[5] if len(sys.argv) > 5 else f"{host}:{port}"
    print(json.dumps(asyncio.run(main(kind, host, port, n, authority))))
