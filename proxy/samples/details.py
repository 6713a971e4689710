"""Bookinfo `details` v1: the book's metadata as compact JSON, in the Ruby app's key order."""

from __future__ import annotations

import re

from proxy.samples.http import Request, Response, json_response, serve_http
from proxy.samples.server import SampleServer

_ID = re.compile(r"[+-]?\d+")


def details_body(product_id: int) -> str:
    return (f'{{"id":{product_id},"author":"William Shakespeare","year":1595,"type":"paperback",'
            '"pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890",'
            '"ISBN-13":"123-1234567890"}')


def handle(request: Request) -> Response:
    path = request.path
    if path == "/health":
        return json_response('{"status":"Details is healthy"}')
    if path.startswith("/details/") and request.method in ("GET", "HEAD"):
        raw = path[len("/details/"):]
        if not _ID.fullmatch(raw):
            return json_response('{"error":"please provide numeric product id"}', 400)
        return json_response(details_body(int(raw)))
    return Response(404, b"Not Found\n")


async def start_details(host: str = "127.0.0.1", port: int = 9080) -> SampleServer:
    return await serve_http(SampleServer("details"), handle, host, port)
