"""The no-I/O hot-path benchmark: its messages with extra header fields are valid HTTP, and it runs."""

from __future__ import annotations

import httptools

from benchmarks.l7_micro import NGINX_RESPONSE, REQUEST, RESPONSE, floor_no_io, no_io, with_headers


class _Fields:
    def __init__(self) -> None:
        self.names: list[bytes] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.names.append(name)

    def on_message_complete(self) -> None:
        self.complete = True


def test_with_headers_adds_that_many_fields() -> None:
    for message, parser in ((REQUEST, httptools.HttpRequestParser), (RESPONSE, httptools.HttpResponseParser)):
        plain, more = _Fields(), _Fields()
        parser(plain).feed_data(message)
        parser(more).feed_data(with_headers(message, 5))
        assert plain.complete and more.complete
        assert len(more.names) == len(plain.names) + 5
        assert more.names[-len(plain.names):] == plain.names  # the message's own fields kept, in order


def test_no_io_runs_with_extra_fields() -> None:
    assert no_io(20, headers=3) > 0  # no_io itself checks that every request was proxied


def test_no_io_runs_with_the_nginx_response() -> None:
    fields = _Fields()
    httptools.HttpResponseParser(fields).feed_data(NGINX_RESPONSE)
    assert fields.complete and len(fields.names) == 5
    assert no_io(20, response=NGINX_RESPONSE) > 0


def test_no_io_runs_with_the_access_log() -> None:
    assert no_io(20, access_log="text") > 0


def test_floor_no_io_relays_every_request_and_response() -> None:
    # floor_no_io checks that each request reached the upstream stub and each response the downstream one
    assert floor_no_io(20, headers=3, response=NGINX_RESPONSE) > 0
