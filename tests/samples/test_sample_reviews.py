"""reviews v1/v2/v3: byte-exact JSON, ratings calls (direct and through a proxy), and every fallback."""

from __future__ import annotations

import asyncio

import pytest
from sample_helpers import RecordingProxy, closed_port, http

from proxy.samples import start_ratings, start_reviews
from proxy.samples.http import Request, Response, json_response, serve_http
from proxy.samples.reviews import VERSIONS
from proxy.samples.server import SampleServer

R1 = "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"
R2 = "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."


def expected(podname: str, rating1: str = "", rating2: str = "", clustername: str = "null", pid: str = "0") -> bytes:
    # written out independently of proxy.samples.reviews.reviews_body, whitespace included
    return (f'{{"id": "{pid}","podname": "{podname}","clustername": "{clustername}","reviews": '
            f'[{{  "reviewer": "Reviewer1",  "text": "{R1}"{rating1}}},'
            f'{{  "reviewer": "Reviewer2",  "text": "{R2}"{rating2}}}]}}').encode()


UNAVAILABLE = ', "rating": {"error": "Ratings service is currently unavailable"}'


async def test_v1_has_no_ratings_and_calls_nothing(closing) -> None:
    # ratings points at a closed port: v1 must not need it
    server = closing(await start_reviews("v1", "127.0.0.1", 0, podname="reviews-v1-abc",
                                         ratings=f"127.0.0.1:{await closed_port()}"))
    response = await http(server.port, "/reviews/0")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.body == expected("reviews-v1-abc")


@pytest.mark.parametrize(("version", "color"), [("v2", "black"), ("v3", "red")])
async def test_v2_and_v3_add_stars_from_ratings(closing, version: str, color: str) -> None:
    ratings = closing(await start_ratings("127.0.0.1", 0))
    server = closing(await start_reviews(version, "127.0.0.1", 0, podname=f"reviews-{version}-x",
                                         ratings=f"127.0.0.1:{ratings.port}"))
    response = await http(server.port, "/reviews/0")
    assert response.body == expected(f"reviews-{version}-x",
                                     f', "rating": {{"stars": 5, "color": "{color}"}}',
                                     f', "rating": {{"stars": 4, "color": "{color}"}}')


async def test_product_id_is_a_string_of_the_parsed_int(closing) -> None:
    server = closing(await start_reviews("v1", "127.0.0.1", 0, podname="p"))
    assert (await http(server.port, "/reviews/007")).body == expected("p", pid="7")
    assert (await http(server.port, "/reviews/abc")).status == 404


async def test_clustername_is_reported(closing) -> None:
    server = closing(await start_reviews("v1", "127.0.0.1", 0, podname="p", clustername="east"))
    assert (await http(server.port, "/reviews/0")).body == expected("p", clustername="east")


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_ratings_unreachable_gives_the_error_variant(closing, version: str) -> None:
    server = closing(await start_reviews(version, "127.0.0.1", 0, podname="p",
                                         ratings=f"127.0.0.1:{await closed_port()}"))
    response = await http(server.port, "/reviews/0")
    assert response.status == 200
    assert response.body == expected("p", UNAVAILABLE, UNAVAILABLE)


async def test_ratings_503_gives_the_error_variant(closing) -> None:
    async def fake(request: Request) -> Response:
        return json_response('{"error":"Service unavailable"}', 503)

    ratings = closing(await serve_http(SampleServer("fake"), fake, "127.0.0.1", 0))
    server = closing(await start_reviews("v3", "127.0.0.1", 0, podname="p", ratings=f"127.0.0.1:{ratings.port}"))
    assert (await http(server.port, "/reviews/0")).body == expected("p", UNAVAILABLE, UNAVAILABLE)


async def test_a_reviewer_missing_from_ratings_gets_the_error(closing) -> None:
    def fake(request: Request) -> Response:
        return json_response('{"id":0,"ratings":{"Reviewer1":3}}')

    ratings = closing(await serve_http(SampleServer("fake"), fake, "127.0.0.1", 0))
    server = closing(await start_reviews("v2", "127.0.0.1", 0, podname="p", ratings=f"127.0.0.1:{ratings.port}"))
    assert (await http(server.port, "/reviews/0")).body == expected(
        "p", ', "rating": {"stars": 3, "color": "black"}', UNAVAILABLE)


async def test_ratings_timeout_gives_the_error_variant(closing) -> None:
    never = asyncio.Event()

    async def hang(request: Request) -> Response:
        await never.wait()
        raise AssertionError("unreachable")

    ratings = closing(await serve_http(SampleServer("hang"), hang, "127.0.0.1", 0))
    server = closing(await start_reviews("v3", "127.0.0.1", 0, podname="p", ratings=f"127.0.0.1:{ratings.port}",
                                         ratings_timeout=0.2))
    assert (await http(server.port, "/reviews/0")).body == expected("p", UNAVAILABLE, UNAVAILABLE)


def test_version_settings_match_the_original_builds() -> None:
    assert {v: (s.ratings_enabled, s.star_color) for v, s in VERSIONS.items()} == {
        "v1": (False, "black"), "v2": (True, "black"), "v3": (True, "red")}
    assert (VERSIONS["v2"].ratings_timeout, VERSIONS["v3"].ratings_timeout) == (10.0, 2.5)


async def test_ratings_call_goes_through_the_proxy_by_service_name(closing, recording_proxy: RecordingProxy) -> None:
    ratings = closing(await start_ratings("127.0.0.1", 0))
    recording_proxy.routes["ratings:9080"] = ratings.port
    server = closing(await start_reviews("v3", "127.0.0.1", 0, podname="p", proxy=recording_proxy.url))
    incoming = {
        "x-request-id": "req-1", "traceparent": "00-abc-def-01", "x-b3-traceid": "b3t", "b3": "b3v",
        "end-user": "jason", "cookie": "session=xyz", "authorization": "Bearer t", "user-agent": "ua/1",
        "x-not-forwarded": "nope",
    }
    response = await http(server.port, "/reviews/0", headers=incoming)
    assert b'"stars": 5, "color": "red"' in response.body
    [recorded] = recording_proxy.requests
    assert recorded.request_line == "GET http://ratings:9080/ratings/0 HTTP/1.1"
    assert recorded.headers["host"] == "ratings:9080"
    assert recorded.headers["accept"] == "application/json"
    for name, value in incoming.items():
        if name != "x-not-forwarded":
            assert recorded.headers.get(name) == value, name
    assert "x-not-forwarded" not in recorded.headers


async def test_no_proxy_hosts_bypass_the_proxy(closing, recording_proxy: RecordingProxy) -> None:
    ratings = closing(await start_ratings("127.0.0.1", 0))
    server = closing(await start_reviews("v2", "127.0.0.1", 0, podname="p", ratings=f"127.0.0.1:{ratings.port}",
                                         proxy=recording_proxy.url, no_proxy=("localhost", "127.0.0.1")))
    assert b'"stars": 4, "color": "black"' in (await http(server.port, "/reviews/0")).body
    assert recording_proxy.requests == []


async def test_reviews_health(closing) -> None:
    server = closing(await start_reviews("v2", "127.0.0.1", 0))
    assert (await http(server.port, "/health")).body == b'{"status": "Reviews is healthy"}'


async def test_default_podname_names_the_version(closing) -> None:
    server = closing(await start_reviews("v1", "127.0.0.1", 0))
    assert (await http(server.port, "/reviews/0")).body == expected("reviews-v1")
