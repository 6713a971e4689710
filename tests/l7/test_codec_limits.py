"""The codec's hardening without sockets: trailer and header-count limits, h2c stripped, request-target and
Host checks, HTTP/0.9, Envoy's internal headers kept apart."""

from __future__ import annotations

import pytest

from proxy.l7.codec import (
    MAX_HEADERS,
    CodecError,
    RequestDecoder,
    RequestHead,
    ResponseHead,
    check_target,
)
from proxy.l7.response_decoder import ResponseDecoder
from tests.l7.test_codec import Recorder


class BodyCounting(Recorder):
    def request_body_bytes(self) -> int:
        return len(self.body())

    def response_body_bytes(self) -> int:
        return len(self.body())


def feed_request(*chunks: bytes) -> tuple[BodyCounting, list[int | None]]:
    recorder = BodyCounting()
    decoder = RequestDecoder(recorder)
    return recorder, [decoder.feed(c) for c in chunks]


def request_error(*chunks: bytes) -> CodecError:
    with pytest.raises(CodecError) as caught:
        feed_request(*chunks)
    return caught.value


CHUNKED = b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"


def test_trailers_up_to_the_limits_are_read_and_dropped() -> None:
    recorder, _ = feed_request(CHUNKED + b"x-t: 1\r\n" * MAX_HEADERS + b"\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    first, second = recorder.heads()
    assert isinstance(first, RequestHead) and first.headers == []  # trailers are not added to the head
    assert isinstance(second, RequestHead) and second.target == b"/next"
    assert recorder.body() == b"abc"


@pytest.mark.parametrize("trailers", [
    b"a:\r\n" * (MAX_HEADERS + 1),
    b"x-big: " + b"v" * (61 * 1024) + b"\r\n",
])
def test_too_many_or_too_large_trailers_get_431(trailers: bytes) -> None:
    error = request_error(CHUNKED + trailers + b"\r\n")
    assert error.status == 431 and "trailers" in str(error)


def test_one_endless_trailer_field_is_caught_while_it_grows() -> None:
    # no field ends, so llhttp reports none: the decoder sees 60 KiB+ read without body progress
    piece = b"v" * (16 * 1024)
    error = request_error(CHUNKED + b"x-long: ", *([piece] * 16))
    assert error.status == 431


def test_a_large_chunk_is_not_mistaken_for_trailers() -> None:
    head = b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (1 << 20)
    piece = b"d" * (16 * 1024)
    recorder, _ = feed_request(head, *([piece] * 64), b"\r\n0\r\n\r\n")
    assert len(recorder.body()) == 1 << 20 and recorder.events[-1] == "complete"


def test_header_count_limit() -> None:
    ok, _ = feed_request(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"a:\r\n" * (MAX_HEADERS - 1) + b"\r\n")
    assert len(ok.heads()) == 1
    assert request_error(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"a:\r\n" * MAX_HEADERS + b"\r\n").status == 431
    # hop-by-hop headers count too, and so does a head spread over many reads
    assert request_error(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"keep-alive: 1\r\n" * MAX_HEADERS + b"\r\n").status == 431
    assert request_error(b"GET / HTTP/1.1\r\nHost: a\r\n", *[b"a: 1\r\n"] * (MAX_HEADERS + 1)).status == 431


def test_h2c_is_stripped_and_parsing_goes_on() -> None:
    recorder, offsets = feed_request(
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nx-k: v\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    assert offsets == [None]
    first, second = recorder.heads()
    assert isinstance(first, RequestHead) and first.upgrade is None and first.headers == [(b"x-k", b"v")]
    assert isinstance(second, RequestHead) and second.target == b"/b"


def test_websocket_upgrade_stops_at_the_head() -> None:
    data = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    recorder, offsets = feed_request(data + b"GET /smuggled HTTP/1.1\r\n\r\n")
    assert offsets == [len(data)]
    [head] = recorder.heads()
    assert isinstance(head, RequestHead) and head.upgrade == b"websocket"


def test_restart_parses_held_bytes_as_a_request() -> None:
    recorder = BodyCounting()
    decoder = RequestDecoder(recorder)
    data = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    assert decoder.feed(data + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n") == len(data)
    decoder.restart()
    assert decoder.feed(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n") is None
    assert [h.target for h in recorder.heads()] == [b"/ws", b"/next"]  # type: ignore[union-attr]


@pytest.mark.parametrize(("method", "target", "error"), [
    (b"GET", b"*", "'*' target with a method other than OPTIONS"),
    (b"GET", b"http:///x", "absolute-form target with an empty authority"),
    (b"GET", b"http://u@h/x", "absolute-form target with userinfo"),
    (b"GET", b"http://h b/x", "invalid authority in the target"),
    (b"OPTIONS", b"*", None),
    (b"GET", b"http://h:80/x?y", None),
    (b"GET", b"HTTP://[::1]:80", None),
])
def test_targets_other_than_origin_form(method: bytes, target: bytes, error: str | None) -> None:
    if error is None:
        check_target(method, target)
    else:
        with pytest.raises(CodecError, match=error.replace("*", r"\*")) as caught:
            check_target(method, target)
        assert caught.value.status == 400


@pytest.mark.parametrize(("data", "status"), [
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n", 400),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /x\r\n", 426),
    (b"GET /x\r\n\r\n", 426),
])
def test_bad_request_lines_and_hosts(data: bytes, status: int) -> None:
    assert request_error(data).status == status


@pytest.mark.parametrize("data", [
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://h:80/x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: reviews.default.svc.cluster.local:9080\r\n\r\n",
])
def test_good_request_lines_and_hosts(data: bytes) -> None:
    recorder, _ = feed_request(data)
    assert len(recorder.heads()) == 1


def test_http09_detected_across_reads() -> None:
    assert request_error(b"GET /very/long", b"/path\r\n").status == 426
    recorder, _ = feed_request(b"GET /x HTTP/1.1\r\n", b"Host: a\r\n\r\n")  # a split 1.1 head is fine
    assert len(recorder.heads()) == 1


def test_envoy_internal_headers_are_kept_apart() -> None:
    recorder, _ = feed_request(b"GET / HTTP/1.1\r\nHost: a\r\nX-Envoy-Retry-On: 5xx\r\nx-envoy-internal: true\r\n"
                               b"x-envoy-custom: kept\r\n\r\n")
    [head] = recorder.heads()
    assert isinstance(head, RequestHead)
    assert head.envoy_headers == [(b"x-envoy-retry-on", b"5xx"), (b"x-envoy-internal", b"true")]
    assert head.headers == [(b"x-envoy-custom", b"kept")]


def test_response_trailers_and_header_count_are_bounded() -> None:
    recorder = Recorder()
    decoder = ResponseDecoder(recorder)
    with pytest.raises(CodecError) as caught:
        decoder.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"a:\r\n" * (MAX_HEADERS + 1)
                     + b"\r\n")
    assert caught.value.status == 502
    decoder = ResponseDecoder(recorder)
    with pytest.raises(CodecError) as caught:
        decoder.feed(b"HTTP/1.1 200 OK\r\n" + b"a: 1\r\n" * (MAX_HEADERS + 1) + b"content-length: 0\r\n\r\n")
    assert caught.value.status == 502
    recorder = Recorder()
    ResponseDecoder(recorder).feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx: 1\r\n\r\n")
    [head] = recorder.heads()
    assert isinstance(head, ResponseHead) and head.headers == [] and recorder.events[-1] == "complete"


def test_response_endless_trailer_field_and_large_chunk() -> None:
    decoder = ResponseDecoder(BodyCounting())
    decoder.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-long: ")
    with pytest.raises(CodecError) as caught:
        for _ in range(16):
            decoder.feed(b"v" * (16 * 1024))
    assert caught.value.status == 502
    recorder = BodyCounting()
    decoder = ResponseDecoder(recorder)
    decoder.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (1 << 20))
    for _ in range(64):
        decoder.feed(b"d" * (16 * 1024))
    decoder.feed(b"\r\n0\r\n\r\n")
    assert len(recorder.body()) == 1 << 20 and recorder.events[-1] == "complete"
