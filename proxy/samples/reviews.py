"""Bookinfo `reviews` v1/v2/v3: two reviews, with stars from `ratings` in v2 (black) and v3 (red).

The JSON body is built by string concatenation, like the Java original, so its whitespace is part of
the contract (`{"id": "0","podname": …`). v2/v3 call `GET http://ratings:9080/ratings/<id>` for every
request (through the sidecar proxy when one is configured) and fall back to the "ratings unavailable"
variant on any failure. The three versions differ only in these settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable
from dataclasses import dataclass

from proxy.samples.http import HttpClient, Request, Response, UpstreamError, forward_headers, json_response, serve_http
from proxy.samples.server import SampleServer


@dataclass(frozen=True, slots=True)
class VersionSettings:
    ratings_enabled: bool
    star_color: str
    ratings_timeout: float  # seconds, connect and read


VERSIONS = {
    "v1": VersionSettings(False, "black", 0.0),
    "v2": VersionSettings(True, "black", 10.0),
    "v3": VersionSettings(True, "red", 2.5),
}

REVIEWER1_TEXT = "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"
REVIEWER2_TEXT = ("Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays "
                  "by Shakespeare.")
RATINGS_UNAVAILABLE = ', "rating": {"error": "Ratings service is currently unavailable"}'
# reviews also passes on who the user is, which productpage adds after a login
RATINGS_EXTRA_HEADERS = ("end-user",)
_ID = re.compile(r"[+-]?\d+")
_INT_MAX = 2**31 - 1


def reviews_body(product_id: int, podname: str, clustername: str, rating1: str = "", rating2: str = "") -> str:
    return ('{"id": "' + str(product_id) + '","podname": "' + podname + '","clustername": "' + clustername
            + '","reviews": [{  "reviewer": "Reviewer1",  "text": "' + REVIEWER1_TEXT + '"' + rating1
            + '},{  "reviewer": "Reviewer2",  "text": "' + REVIEWER2_TEXT + '"' + rating2 + '}]}')


def rating_fragment(stars: int | None, color: str) -> str:
    if stars is None:
        return RATINGS_UNAVAILABLE
    return ', "rating": {"stars": ' + str(stars) + ', "color": "' + color + '"}'


def stars_from_ratings(body: bytes) -> tuple[int | None, int | None]:
    """(Reviewer1, Reviewer2) stars from a ratings reply; None for a reviewer it does not rate."""
    try:
        ratings = json.loads(body).get("ratings")
    except (ValueError, AttributeError):
        return None, None
    if not isinstance(ratings, dict):
        return None, None

    def stars(name: str) -> int | None:
        value = ratings.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return stars("Reviewer1"), stars("Reviewer2")


class Reviews:
    def __init__(self, version: str, *, podname: str | None = None, clustername: str = "null",
                 ratings: str = "ratings:9080", client: HttpClient | None = None,
                 ratings_timeout: float | None = None) -> None:
        if version not in VERSIONS:
            raise ValueError(f"unknown reviews version {version!r} (expected one of {', '.join(VERSIONS)})")
        self.version = version
        self.settings = VERSIONS[version]
        self.podname = podname or f"reviews-{version}"
        self.clustername = clustername
        self.ratings = ratings
        self.client = client or HttpClient()
        self.ratings_timeout = self.settings.ratings_timeout if ratings_timeout is None else ratings_timeout

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        path = request.path
        if path == "/health":
            return json_response('{"status": "Reviews is healthy"}')
        if not path.startswith("/reviews/") or request.method not in ("GET", "HEAD"):
            return Response(404, b"Not Found\n")
        raw = path[len("/reviews/"):]
        if not _ID.fullmatch(raw) or abs(int(raw)) > _INT_MAX:
            return Response(404, b"Not Found\n")  # JAX-RS cannot bind the int path parameter
        product_id = int(raw)
        if not self.settings.ratings_enabled:
            return json_response(reviews_body(product_id, self.podname, self.clustername))
        return self._with_ratings(product_id, request)

    async def _with_ratings(self, product_id: int, request: Request) -> Response:
        headers = forward_headers(request, RATINGS_EXTRA_HEADERS)
        headers["accept"] = "application/json"
        stars1 = stars2 = None
        try:
            reply = await self.client.get(self.ratings, f"/ratings/{product_id}", headers, self.ratings_timeout)
        except UpstreamError:
            reply = None
        if reply is not None and reply.status == 200:
            stars1, stars2 = stars_from_ratings(reply.body)
        color = self.settings.star_color
        body = reviews_body(product_id, self.podname, self.clustername,
                            rating_fragment(stars1, color), rating_fragment(stars2, color))
        return json_response(body)


async def start_reviews(version: str, host: str = "127.0.0.1", port: int = 9080, *,
                        podname: str | None = None, clustername: str = "null", ratings: str = "ratings:9080",
                        proxy: tuple[str, int] | None = None, no_proxy: tuple[str, ...] = (),
                        ratings_timeout: float | None = None) -> SampleServer:
    """Serve reviews `version`; `proxy` (host, port) sends the ratings calls through an HTTP proxy."""
    app = Reviews(version, podname=podname, clustername=clustername, ratings=ratings,
                  client=HttpClient(proxy, no_proxy, user_agent=f"reviews-{version}"),
                  ratings_timeout=ratings_timeout)
    return await serve_http(SampleServer(f"reviews-{version}"), app.handle, host, port)
