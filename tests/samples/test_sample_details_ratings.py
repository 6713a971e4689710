"""details and ratings: exact bodies, errors, health, and the HTTP server under them (keep-alive, pipelining)."""

from __future__ import annotations

import asyncio

import pytest
from sample_helpers import exchange, http, parse_response, split_responses

from proxy.samples import start_details, start_ratings

DETAILS_0 = (b'{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,'
             b'"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}')


async def test_details_body_is_byte_exact(closing) -> None:
    server = closing(await start_details("127.0.0.1", 0))
    response = await http(server.port, "/details/0")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.body == DETAILS_0


async def test_details_echoes_the_numeric_id_as_an_int(closing) -> None:
    server = closing(await start_details("127.0.0.1", 0))
    response = await http(server.port, "/details/42")
    assert response.body == DETAILS_0.replace(b'"id":0', b'"id":42')


@pytest.mark.parametrize("path", ["/details/abc", "/details/1x", "/details/"])
async def test_details_rejects_a_non_numeric_id(closing, path: str) -> None:
    server = closing(await start_details("127.0.0.1", 0))
    response = await http(server.port, path)
    assert (response.status, response.body) == (400, b'{"error":"please provide numeric product id"}')


async def test_details_health(closing) -> None:
    server = closing(await start_details("127.0.0.1", 0))
    response = await http(server.port, "/health")
    assert (response.status, response.body) == (200, b'{"status":"Details is healthy"}')


async def test_ratings_body_is_byte_exact(closing) -> None:
    server = closing(await start_ratings("127.0.0.1", 0))
    response = await http(server.port, "/ratings/0")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.body == b'{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}'


async def test_ratings_parses_the_id_like_parseint(closing) -> None:
    server = closing(await start_ratings("127.0.0.1", 0))
    assert (await http(server.port, "/ratings/12abc")).body == b'{"id":12,"ratings":{"Reviewer1":5,"Reviewer2":4}}'
    bad = await http(server.port, "/ratings/abc")
    assert (bad.status, bad.body) == (400, b'{"error":"please provide numeric product ID"}')


async def test_ratings_health(closing) -> None:
    server = closing(await start_ratings("127.0.0.1", 0))
    assert (await http(server.port, "/health")).body == b'{"status":"Ratings is healthy"}'


class ScriptedRandom:
    """Stands in for random.Random: returns the given values in order."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


async def test_faulty_ratings_fails_when_the_coin_says_so(closing) -> None:
    server = closing(await start_ratings("127.0.0.1", 0, version="v-faulty", rng=ScriptedRandom(0.2, 0.7)))
    failed = await http(server.port, "/ratings/0")
    assert (failed.status, failed.body) == (503, b'{"error":"Service unavailable"}')
    ok = await http(server.port, "/ratings/0")
    assert ok.status == 200


async def test_delayed_ratings_still_answers_the_ratings(closing) -> None:
    server = closing(await start_ratings("127.0.0.1", 0, version="v-delayed", rng=ScriptedRandom(0.1),
                                         delay=0.01))
    response = await http(server.port, "/ratings/3")
    assert (response.status, response.body) == (200, b'{"id":3,"ratings":{"Reviewer1":5,"Reviewer2":4}}')


async def test_unknown_ratings_version_is_refused() -> None:
    with pytest.raises(ValueError, match="v9"):
        await start_ratings("127.0.0.1", 0, version="v9")


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(closing) -> None:
    server = closing(await start_details("127.0.0.1", 0))
    raw = (b"GET /details/1 HTTP/1.1\r\nHost: d\r\n\r\n"
           b"GET /health HTTP/1.1\r\nHost: d\r\n\r\n"
           b"GET /details/2 HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
    bodies = [r.body for r in split_responses(await exchange(server.port, raw))]
    assert bodies == [DETAILS_0.replace(b'"id":0', b'"id":1'), b'{"status":"Details is healthy"}',
                      DETAILS_0.replace(b'"id":0', b'"id":2')]


async def test_garbage_gets_400_and_a_close(closing) -> None:
    server = closing(await start_ratings("127.0.0.1", 0))
    response = parse_response(await exchange(server.port, b"NOT HTTP AT ALL\r\n\r\n"))
    assert response.status == 400
    assert response.headers["connection"] == "close"


async def test_head_has_the_length_but_no_body(closing) -> None:
    server = closing(await start_details("127.0.0.1", 0))
    data = await exchange(server.port, b"HEAD /details/0 HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-length: %d" % len(DETAILS_0) in head
    assert body == b""


async def test_close_ends_idle_keep_alive_connections() -> None:
    server = await start_details("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: d\r\n\r\n")
    await reader.readuntil(b"healthy\"}")
    server.close()
    await server.wait_closed()
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # the server closed the idle connection
    writer.close()
    await writer.wait_closed()
