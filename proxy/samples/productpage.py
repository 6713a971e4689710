"""Bookinfo `productpage` v1: the page that calls details and reviews and renders both.

Faithful to the original where traffic shifting can observe it: a new upstream connection per call,
services addressed by name (`details:9080`, `reviews:9080`) so a sidecar proxy on `HTTP_PROXY` routes by
authority, a 3 s timeout per call, reviews tried twice, tracing/identity headers forwarded, and after a
login (`POST /login`, signed `session` cookie) an `end-user: <name>` header on every outbound call,
which header-based routes such as `end-user: exact jason` match on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from collections import Counter
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qs

from proxy.samples.http import (
    HTML,
    JSON,
    TEXT,
    HttpClient,
    Request,
    Response,
    UpstreamError,
    forward_headers,
    json_response,
    serve_http,
)
from proxy.samples.productpage_html import PRODUCTS, render_index, render_productpage
from proxy.samples.server import SampleServer

TIMEOUT = 3.0  # seconds, every outbound call (connect and read)
REVIEWS_ATTEMPTS = 2  # a deliberate double try, kept for the fault-injection task
DETAILS_ERROR = "Sorry, product details are currently unavailable for this book."
REVIEWS_ERROR = "Sorry, product reviews are currently unavailable for this book."
RATINGS_ERROR = "Sorry, product ratings are currently unavailable for this book."
SESSION_COOKIE = "session"
_API_PRODUCT = re.compile(r"/api/v1/products/([^/]+)(/reviews|/ratings)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Result = tuple[int, dict[str, Any]]


class ProductPage:
    def __init__(self, *, details: str = "details:9080", reviews: str = "reviews:9080",
                 ratings: str = "ratings:9080", client: HttpClient | None = None,
                 secret: bytes | None = None, timeout: float = TIMEOUT) -> None:
        self.details = details
        self.reviews = reviews
        self.ratings = ratings
        self.client = client or HttpClient()
        self.secret = secret or os.urandom(32)
        self.timeout = timeout
        # request_result{destination_app, response_code}, as the original exports
        self.results: Counter[tuple[str, int]] = Counter()

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        path, method = request.path, request.method
        if path == "/login":
            return self.login(request) if method == "POST" else Response(405, b"Method Not Allowed\n")
        if method not in ("GET", "HEAD"):
            return Response(405, b"Method Not Allowed\n")
        if path == "/productpage":
            return self.productpage(request)
        if path in ("/", "/index.html"):
            return Response(200, render_index().encode(), HTML)
        if path == "/health":
            return Response(200, b"Product page is healthy", TEXT)
        if path == "/logout":
            return self.logout(request)
        if path == "/api/v1/products":
            return json_response(json.dumps(PRODUCTS))
        if match := _API_PRODUCT.fullmatch(path):
            return self.api_product(request, match.group(1), match.group(2))
        if path == "/metrics":
            return Response(200, self.metrics_text().encode(), "text/plain; version=0.0.4; charset=utf-8")
        return Response(404, b"Not Found\n")

    # pages

    async def productpage(self, request: Request) -> Response:
        headers = self.outbound_headers(request)
        details = await self.get_details("0", headers)
        reviews = await self.get_reviews("0", headers)
        page = render_productpage(self.session_user(request), details, reviews)
        return Response(200, page.encode(), HTML)

    async def api_product(self, request: Request, product_id: str, what: str | None) -> Response:
        headers = self.outbound_headers(request)
        if what == "/reviews":
            status, body = await self.get_reviews(product_id, headers)
        elif what == "/ratings":
            status, body = await self.get_ratings(product_id, headers)
        else:
            status, body = await self.get_details(product_id, headers)
        return Response(status, json.dumps(body).encode(), JSON)

    def login(self, request: Request) -> Response:
        form = parse_qs(request.body.decode("utf-8", "replace"))
        user = (form.get("username") or [""])[0]
        if not user or _CONTROL.search(user) or not user.isprintable():
            return Response(400, b"a printable username is required\n")
        try:
            user.encode("latin-1")  # it travels in an `end-user` header
        except UnicodeEncodeError:
            return Response(400, b"username must be latin-1\n")
        cookie = f"{SESSION_COOKIE}={self.sign(user)}; HttpOnly; Path=/"
        return self.redirect_back(request, cookie)

    def logout(self, request: Request) -> Response:
        cookie = f"{SESSION_COOKIE}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/"
        return self.redirect_back(request, cookie)

    def redirect_back(self, request: Request, cookie: str) -> Response:
        location = request.headers.get("referer") or "/productpage"
        body = f'<a href="{location}">Redirecting</a>\n'.encode()
        return Response(302, body, HTML, [("location", location), ("set-cookie", cookie)])

    # outbound calls

    def outbound_headers(self, request: Request) -> dict[str, str]:
        headers = {}
        user = self.session_user(request)
        if user:
            headers["end-user"] = user
        headers.update(forward_headers(request))
        return headers

    async def call(self, app: str, authority: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        """(status, parsed JSON or None); status 500 when no response came back."""
        try:
            reply = await self.client.get(authority, path, headers, self.timeout)
        except UpstreamError:
            self.results[(app, 500)] += 1
            return 500, None
        self.results[(app, reply.status)] += 1
        try:
            return reply.status, reply.json()
        except ValueError:
            return (reply.status if reply.status != 200 else 500), None

    async def get_details(self, product_id: str, headers: dict[str, str]) -> Result:
        status, body = await self.call("details", self.details, f"/details/{product_id}", headers)
        if status == 200 and isinstance(body, dict):
            return 200, body
        return (status if status != 200 else 500), {"error": DETAILS_ERROR}

    async def get_reviews(self, product_id: str, headers: dict[str, str]) -> Result:
        status = 500
        for _ in range(REVIEWS_ATTEMPTS):
            status, body = await self.call("reviews", self.reviews, f"/reviews/{product_id}", headers)
            if status == 200 and isinstance(body, dict):
                return 200, body
        return (status if status != 200 else 500), {"error": REVIEWS_ERROR}

    async def get_ratings(self, product_id: str, headers: dict[str, str]) -> Result:
        status, body = await self.call("ratings", self.ratings, f"/ratings/{product_id}", headers)
        if status == 200 and isinstance(body, dict):
            return 200, body
        return (status if status != 200 else 500), {"error": RATINGS_ERROR}

    # session cookie: base64(JSON) + "." + HMAC, so a client cannot claim another user by editing it

    def sign(self, user: str) -> str:
        payload = base64.urlsafe_b64encode(json.dumps({"user": user}).encode()).rstrip(b"=")
        mac = base64.urlsafe_b64encode(hmac.digest(self.secret, payload, hashlib.sha256)).rstrip(b"=")
        return (payload + b"." + mac).decode()

    def session_user(self, request: Request) -> str | None:
        for part in request.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name != SESSION_COOKIE or "." not in value:
                continue
            payload, _, mac = value.encode().partition(b".")
            expected = base64.urlsafe_b64encode(hmac.digest(self.secret, payload, hashlib.sha256)).rstrip(b"=")
            if not hmac.compare_digest(mac, expected):
                continue
            try:
                data = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
            except ValueError:
                continue
            user = data.get("user") if isinstance(data, dict) else None
            if isinstance(user, str) and user:
                return user
        return None

    def metrics_text(self) -> str:
        lines = ["# HELP request_result_total Request result", "# TYPE request_result_total counter"]
        for (app, code), count in sorted(self.results.items()):
            lines.append(f'request_result_total{{destination_app="{app}",response_code="{code}"}} {float(count)}')
        return "\n".join(lines) + "\n"


async def start_productpage(host: str = "127.0.0.1", port: int = 9080, *, details: str = "details:9080",
                            reviews: str = "reviews:9080", ratings: str = "ratings:9080",
                            proxy: tuple[str, int] | None = None, no_proxy: tuple[str, ...] = (),
                            secret: bytes | None = None, timeout: float = TIMEOUT) -> SampleServer:
    """Serve productpage; `proxy` (host, port) sends every outbound call through an HTTP proxy."""
    app = ProductPage(details=details, reviews=reviews, ratings=ratings,
                      client=HttpClient(proxy, no_proxy, user_agent="productpage"), secret=secret,
                      timeout=timeout)
    return await serve_http(SampleServer("productpage"), app.handle, host, port)
