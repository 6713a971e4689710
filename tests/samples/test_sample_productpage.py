"""productpage: outbound calls through a recording proxy, version markers, retries, login → end-user."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from sample_helpers import RecordingProxy, closed_port, http

from proxy.samples import SampleServer, start_details, start_productpage, start_ratings, start_reviews
from proxy.samples.http import Request, Response, serve_http

FILLED = '<svg id="glyphicon glyphicon-star"'
OUTLINE = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none"'


@dataclass
class Bookinfo:
    proxy: RecordingProxy
    page: SampleServer
    reviews: dict[str, int]  # version -> port

    def route_reviews(self, version: str) -> None:
        self.proxy.routes["reviews:9080"] = self.reviews[version]


@pytest.fixture
async def bookinfo(closing, recording_proxy: RecordingProxy) -> Bookinfo:
    """Every app on an ephemeral port, all outbound calls through the recording proxy (reviews → v1)."""
    details = closing(await start_details("127.0.0.1", 0))
    ratings = closing(await start_ratings("127.0.0.1", 0))
    reviews = {}
    for version in ("v1", "v2", "v3"):
        server = closing(await start_reviews(version, "127.0.0.1", 0, podname=f"reviews-{version}-pod",
                                             proxy=recording_proxy.url))
        reviews[version] = server.port
    recording_proxy.routes.update({"details:9080": details.port, "ratings:9080": ratings.port,
                                   "reviews:9080": reviews["v1"]})
    page = closing(await start_productpage("127.0.0.1", 0, proxy=recording_proxy.url))
    return Bookinfo(recording_proxy, page, reviews)


async def test_page_calls_details_then_reviews_in_absolute_form_on_new_connections(bookinfo: Bookinfo) -> None:
    response = await http(bookinfo.page.port, "/productpage")
    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    lines = [(r.request_line, r.headers["host"]) for r in bookinfo.proxy.requests]
    assert lines == [("GET http://details:9080/details/0 HTTP/1.1", "details:9080"),
                     ("GET http://reviews:9080/reviews/0 HTTP/1.1", "reviews:9080")]
    connections = [r.connection for r in bookinfo.proxy.requests]
    assert len(set(connections)) == len(connections) == bookinfo.proxy.connections


async def test_v1_page_has_no_stars(bookinfo: Bookinfo) -> None:
    page = (await http(bookinfo.page.port, "/productpage")).text
    assert "<title>Simple Bookstore App</title>" in page
    assert "The Comedy of Errors" in page
    assert "Book Details" in page and "1234567890" in page and "PublisherA" in page
    assert "Book Reviews" in page
    assert "glyphicon glyphicon-star" not in page
    assert re.search(r"Reviews served by:.*reviews-v1-pod", page, re.S)


@pytest.mark.parametrize(("version", "color"), [("v2", "black"), ("v3", "red")])
async def test_v2_and_v3_pages_show_nine_filled_stars_in_their_color(bookinfo: Bookinfo, version: str,
                                                                     color: str) -> None:
    bookinfo.route_reviews(version)
    page = (await http(bookinfo.page.port, "/productpage")).text
    assert page.count(FILLED) == 9
    assert page.count(OUTLINE) == 1
    blocks = re.findall(r'<div class="flex gap-x-1 text-(\w+)-500">(.*?)</div>', page, re.S)
    assert [(c, block.count(FILLED), block.count(OUTLINE)) for c, block in blocks] == [(color, 5, 0), (color, 4, 1)]
    other = "red" if color == "black" else "black"
    assert f"gap-x-1 text-{other}-500" not in page
    assert f"reviews-{version}-pod" in page
    # reviews asked ratings through the same proxy, by service name
    assert "GET http://ratings:9080/ratings/0 HTTP/1.1" in [r.request_line for r in bookinfo.proxy.requests]


async def test_ratings_down_shows_the_unavailable_paragraphs(bookinfo: Bookinfo) -> None:
    bookinfo.route_reviews("v3")
    bookinfo.proxy.routes["ratings:9080"] = await closed_port()
    page = (await http(bookinfo.page.port, "/productpage")).text
    assert page.count('<p class="text-red-500">Ratings service is currently unavailable</p>') == 2
    assert "glyphicon glyphicon-star" not in page


async def test_reviews_is_tried_twice(bookinfo: Bookinfo) -> None:
    bookinfo.route_reviews("v2")
    bookinfo.proxy.fail["reviews:9080"] = [503]
    page = (await http(bookinfo.page.port, "/productpage")).text
    assert len(bookinfo.proxy.to("reviews:9080")) == 2
    assert page.count(FILLED) == 9


async def test_reviews_failing_twice_shows_the_error_with_status_200(bookinfo: Bookinfo) -> None:
    bookinfo.proxy.fail["reviews:9080"] = [503, 500, 200]
    response = await http(bookinfo.page.port, "/productpage")
    assert response.status == 200
    assert len(bookinfo.proxy.to("reviews:9080")) == 2
    assert "Error fetching product reviews" in response.text
    assert "Sorry, product reviews are currently unavailable for this book." in response.text
    assert "Book Details" in response.text


async def test_details_failing_shows_its_error(bookinfo: Bookinfo) -> None:
    bookinfo.proxy.fail["details:9080"] = [503]
    response = await http(bookinfo.page.port, "/productpage")
    assert response.status == 200
    assert len(bookinfo.proxy.to("details:9080")) == 1  # details is not retried
    assert "Error fetching product details" in response.text
    assert "Sorry, product details are currently unavailable for this book." in response.text
    assert "Book Reviews" in response.text


async def test_tracing_and_identity_headers_are_forwarded(bookinfo: Bookinfo) -> None:
    incoming = {"x-request-id": "r-42", "traceparent": "00-t-s-01", "tracestate": "k=v", "x-b3-traceid": "b3t",
                "x-b3-spanid": "b3s", "x-b3-sampled": "1", "b3": "x-y-1", "user-agent": "curl/8",
                "authorization": "Basic eA==", "jwt": "j", "sw8": "s", "x-datadog-trace-id": "7",
                "x-unrelated": "not forwarded"}
    await http(bookinfo.page.port, "/productpage", headers=incoming)
    assert len(bookinfo.proxy.requests) == 2
    for recorded in bookinfo.proxy.requests:
        for name, value in incoming.items():
            if name != "x-unrelated":
                assert recorded.headers.get(name) == value, (recorded.request_line, name)
        assert "x-unrelated" not in recorded.headers
        assert "end-user" not in recorded.headers


async def test_login_sets_a_session_that_adds_end_user_to_every_call(bookinfo: Bookinfo) -> None:
    bookinfo.route_reviews("v2")
    form = urlencode({"username": "jason", "passwd": "ignored"}).encode()
    login = await http(bookinfo.page.port, "/login", method="POST", body=form,
                       headers={"Content-Type": "application/x-www-form-urlencoded",
                                "Referer": "http://127.0.0.1:8080/productpage"})
    assert login.status == 302
    assert login.headers["location"] == "http://127.0.0.1:8080/productpage"
    cookie = login.headers["set-cookie"].split(";")[0]
    assert cookie.startswith("session=")

    page = await http(bookinfo.page.port, "/productpage", headers={"Cookie": cookie})
    assert "jason" in page.text
    calls = {r.request_line.split()[1]: r.headers for r in bookinfo.proxy.requests}
    assert set(calls) == {"http://details:9080/details/0", "http://reviews:9080/reviews/0",
                          "http://ratings:9080/ratings/0"}
    for url, headers in calls.items():
        assert headers.get("end-user") == "jason", url  # ratings gets it from reviews
        assert headers.get("cookie") == cookie, url

    logout = await http(bookinfo.page.port, "/logout", headers={"Cookie": cookie, "Referer": "/productpage"})
    assert logout.status == 302
    assert logout.headers["location"] == "/productpage"
    assert "Max-Age=0" in logout.headers["set-cookie"]
    assert logout.headers["set-cookie"].startswith("session=;")


async def test_a_forged_session_cookie_is_ignored(bookinfo: Bookinfo) -> None:
    form = b"username=jason"
    login = await http(bookinfo.page.port, "/login", method="POST", body=form, headers={"Referer": "/productpage"})
    payload, _, mac = login.headers["set-cookie"].split(";")[0].removeprefix("session=").partition(".")
    forged_payload = payload.replace(payload[:4], "eyJ1" if payload[:4] != "eyJ1" else "eyJ2")
    await http(bookinfo.page.port, "/productpage", headers={"Cookie": f"session={forged_payload}.{mac}"})
    await http(bookinfo.page.port, "/productpage", headers={"Cookie": f"session={payload}.{mac[:-2]}AA"})
    assert bookinfo.proxy.requests and all("end-user" not in r.headers for r in bookinfo.proxy.requests)


async def test_login_rejects_a_username_that_could_split_headers(bookinfo: Bookinfo) -> None:
    response = await http(bookinfo.page.port, "/login", method="POST", body=b"username=a%0d%0ab")
    assert response.status == 400
    assert "set-cookie" not in response.headers


async def test_login_is_post_only(bookinfo: Bookinfo) -> None:
    assert (await http(bookinfo.page.port, "/login")).status == 405


async def test_api_products_list(bookinfo: Bookinfo) -> None:
    response = await http(bookinfo.page.port, "/api/v1/products")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.text.startswith('[{"id": 0, "title": "The Comedy of Errors", "descriptionHtml": '
                                    '"<a href=\\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\\">'
                                    "Wikipedia Summary</a>: The Comedy of Errors is one of <b>William "
                                    "Shakespeare's</b> early plays.")
    assert bookinfo.proxy.requests == []


async def test_api_product_proxies_details_and_reserializes(bookinfo: Bookinfo) -> None:
    response = await http(bookinfo.page.port, "/api/v1/products/0")
    assert response.status == 200
    assert response.text.startswith('{"id": 0, "author": "William Shakespeare", "year": 1595, ')
    assert [r.request_line for r in bookinfo.proxy.requests] == ["GET http://details:9080/details/0 HTTP/1.1"]


async def test_api_product_reviews_and_ratings(bookinfo: Bookinfo) -> None:
    bookinfo.route_reviews("v3")
    reviews = await http(bookinfo.page.port, "/api/v1/products/0/reviews")
    assert json.loads(reviews.body)["reviews"][0]["rating"] == {"stars": 5, "color": "red"}
    ratings = await http(bookinfo.page.port, "/api/v1/products/0/ratings")
    assert json.loads(ratings.body) == {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
    # the ratings API goes to ratings directly (the second ratings call), not through reviews
    # (reviews asks for JSON explicitly; productpage sends requests' `*/*`)
    calls = [(r.request_line.split()[1], r.headers["accept"]) for r in bookinfo.proxy.requests]
    assert calls == [("http://reviews:9080/reviews/0", "*/*"),
                     ("http://ratings:9080/ratings/0", "application/json"),
                     ("http://ratings:9080/ratings/0", "*/*")]


async def test_api_product_passes_the_details_error_status(bookinfo: Bookinfo) -> None:
    bookinfo.proxy.fail["details:9080"] = [503]
    response = await http(bookinfo.page.port, "/api/v1/products/0")
    assert response.status == 503
    assert json.loads(response.body) == {"error": "Sorry, product details are currently unavailable for this book."}


async def test_health_index_and_unknown_paths(bookinfo: Bookinfo) -> None:
    health = await http(bookinfo.page.port, "/health")
    assert (health.status, health.body) == (200, b"Product page is healthy")
    assert "simple bookstore application" in (await http(bookinfo.page.port, "/")).text
    assert (await http(bookinfo.page.port, "/nope")).status == 404


async def test_metrics_count_results_per_destination(bookinfo: Bookinfo) -> None:
    bookinfo.proxy.fail["reviews:9080"] = [503]
    await http(bookinfo.page.port, "/productpage")
    metrics = (await http(bookinfo.page.port, "/metrics")).text
    assert 'request_result_total{destination_app="details",response_code="200"} 1.0' in metrics
    assert 'request_result_total{destination_app="reviews",response_code="503"} 1.0' in metrics
    assert 'request_result_total{destination_app="reviews",response_code="200"} 1.0' in metrics


async def test_without_a_proxy_calls_go_straight_to_the_configured_address(closing) -> None:
    seen: list[tuple[str, str]] = []

    def backend(request: Request) -> Response:
        seen.append((request.target, request.headers["host"]))
        if request.path.startswith("/details/"):
            return Response(200, b'{"id":0,"type":"hardcover","pages":1}', "application/json")
        return Response(200, b'{"id": "0","podname": "direct-pod","clustername": "null","reviews": []}',
                        "application/json")

    upstream = closing(await serve_http(SampleServer("backend"), backend, "127.0.0.1", 0))
    address = f"127.0.0.1:{upstream.port}"
    page = closing(await start_productpage("127.0.0.1", 0, details=address, reviews=address))
    text = (await http(page.port, "/productpage")).text
    assert "hardcover" in text and "direct-pod" in text
    assert seen == [("/details/0", address), ("/reviews/0", address)]
