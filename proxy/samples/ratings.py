"""Bookinfo `ratings`: the two reviewers' stars as compact JSON (Node's `JSON.stringify`).

Besides `v1`, the fault-demo builds are available: `v-faulty` answers 503 half of the time and
`v-delayed` holds half of the responses for 7 s. Their coin flips come from an injectable rng.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable

from proxy.samples.http import Request, Response, json_response, serve_http
from proxy.samples.server import SampleServer

VERSIONS = ("v1", "v-faulty", "v-delayed")
DELAY = 7.0  # seconds, v-delayed
_ID = re.compile(r"\s*([+-]?\d+)")  # parseInt: leading digits count, the rest is ignored


def ratings_body(product_id: int) -> str:
    return f'{{"id":{product_id},"ratings":{{"Reviewer1":5,"Reviewer2":4}}}}'


class Ratings:
    def __init__(self, version: str = "v1", rng: random.Random | None = None, delay: float = DELAY) -> None:
        if version not in VERSIONS:
            raise ValueError(f"unknown ratings version {version!r} (expected one of {', '.join(VERSIONS)})")
        self.version = version
        self.rng = rng or random.Random()
        self.delay = delay

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        path = request.path
        if path == "/health":
            return json_response('{"status":"Ratings is healthy"}')
        if not path.startswith("/ratings/") or request.method not in ("GET", "HEAD"):
            return Response(404, b"Not Found\n")
        match = _ID.match(path[len("/ratings/"):])
        if match is None:
            return json_response('{"error":"please provide numeric product ID"}', 400)
        response = json_response(ratings_body(int(match.group(1))))
        if self.version == "v-faulty" and self.rng.random() < 0.5:
            return json_response('{"error":"Service unavailable"}', 503)
        if self.version == "v-delayed" and self.rng.random() < 0.5:
            return self._later(response)
        return response

    async def _later(self, response: Response) -> Response:
        await asyncio.sleep(self.delay)
        return response


async def start_ratings(host: str = "127.0.0.1", port: int = 9080, *, version: str = "v1",
                        rng: random.Random | None = None, delay: float = DELAY) -> SampleServer:
    return await serve_http(SampleServer(f"ratings-{version}"), Ratings(version, rng, delay).handle, host, port)
