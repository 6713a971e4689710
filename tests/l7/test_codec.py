"""The httptools glue without sockets: heads parsed and cleaned, framing checked, bodies passed through."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from proxy.l7.codec import (
    CodecError,
    RequestDecoder,
    RequestHead,
    ResponseHead,
    chunk_size_line,
    request_head,
    response_head,
)
from proxy.l7.errors import render
from proxy.l7.response_decoder import ResponseDecoder


@dataclass
class Recorder:
    """Both handler interfaces: records what the decoders report."""

    events: list[object] = field(default_factory=list)

    def on_request_head(self, head: RequestHead) -> None:
        self.events.append(head)

    def on_request_body(self, data: bytes) -> None:
        self.events.append(data)

    def on_request_complete(self) -> None:
        self.events.append("complete")

    def on_response_head(self, head: ResponseHead) -> None:
        self.events.append(head)

    def on_response_body(self, data: bytes) -> None:
        self.events.append(data)

    def on_response_complete(self) -> None:
        self.events.append("complete")

    def heads(self) -> list[RequestHead | ResponseHead]:
        return [e for e in self.events if isinstance(e, RequestHead | ResponseHead)]

    def body(self) -> bytes:
        return b"".join(e for e in self.events if isinstance(e, bytes))


def decode_request(data: bytes) -> tuple[Recorder, int | None]:
    recorder = Recorder()
    offset = RequestDecoder(recorder).feed(data)
    return recorder, offset


def test_request_head_fields_and_header_cleanup() -> None:
    recorder, offset = decode_request(
        b"POST /p?q=1 HTTP/1.1\r\nHost: Reviews:9080\r\nContent-Length: 5\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"X-Forwarded-For: 10.0.0.2\r\nX-Request-Id: abc\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nExpect: 100-continue\r\nX-Forwarded-Proto: https\r\n"
        b"Accept: */*\r\nACCEPT: text/html\r\n\r\nhello")
    (head,) = recorder.heads()
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.host, head.http10) == (b"POST", b"/p?q=1", b"Reviews:9080", False)
    assert (head.content_length, head.chunked, head.keep_alive, head.upgrade) == (5, False, True, None)
    assert head.expect_continue
    assert head.forwarded_for == b"10.0.0.1, 10.0.0.2"
    assert head.request_id == b"abc"
    # names lower-cased, order and repeats kept, every hop-by-hop or proxy-owned header taken out
    assert head.headers == [(b"accept", b"*/*"), (b"accept", b"text/html")]
    assert recorder.body() == b"hello"
    assert recorder.events[-1] == "complete"
    assert offset is None


def test_chunked_request_body_is_decoded_and_pipelining_reported_in_order() -> None:
    recorder, _ = decode_request(
        b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    first, second = recorder.heads()
    assert isinstance(first, RequestHead) and first.chunked and first.content_length is None
    assert isinstance(second, RequestHead) and second.target == b"/b"
    assert [e for e in recorder.events if not isinstance(e, RequestHead)] == [
        b"abc", b"de", "complete", "complete"]


def test_request_start_is_read_from_the_clock_at_the_first_byte_of_each_request() -> None:
    recorder = Recorder()
    ticks = iter([10.0, 20.0])
    decoder = RequestDecoder(recorder, clock=lambda: next(ticks))
    decoder.feed(b"GET /a HTTP/1.1\r\nHo")
    assert (decoder.in_head, decoder.started) == (True, 10.0)
    decoder.feed(b"st: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (decoder.in_head, decoder.started, len(recorder.heads())) == (False, 20.0, 2)


def test_http10_and_keep_alive() -> None:
    recorder, _ = decode_request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n")
    kept, plain = recorder.heads()
    assert isinstance(plain, RequestHead) and plain.http10 and not plain.keep_alive and plain.host is None
    assert isinstance(kept, RequestHead) and kept.keep_alive


def test_upgrade_returns_where_the_tunnel_bytes_start() -> None:
    data = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nRAW"
    recorder, offset = decode_request(data)
    (head,) = recorder.heads()
    assert isinstance(head, RequestHead) and head.upgrade == b"websocket"
    assert offset is not None and data[offset:] == b"RAW"


def test_upgrade_header_without_connection_upgrade_is_just_dropped() -> None:
    recorder, offset = decode_request(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
    (head,) = recorder.heads()
    assert isinstance(head, RequestHead) and head.upgrade is None and head.headers == []
    assert offset is None


@pytest.mark.parametrize(("data", "status"), [
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * (61 * 1024) + b"\r\n\r\n", 431),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00", 400),  # a TLS ClientHello on the plain-text port
])
def test_request_framing_errors(data: bytes, status: int) -> None:
    with pytest.raises(CodecError) as caught:
        decode_request(data)
    assert caught.value.status == status


def test_unfinished_head_is_bounded_across_reads() -> None:
    decoder = RequestDecoder(Recorder())
    decoder.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: ")
    with pytest.raises(CodecError) as caught:
        for _ in range(100):
            decoder.feed(b"a" * 4096)
    assert caught.value.status == 431


KIB = 1024


def test_head_size_limit_is_exact_wherever_the_head_starts_and_ends() -> None:
    # a pipelined head that starts after a body in one read and ends in the next, 64 KiB in all: under the
    # incremental guard (60 KiB + slack) but over the 60 KiB limit
    recorder = Recorder()
    decoder = RequestDecoder(recorder)
    decoder.feed(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
                 b"GET /b HTTP/1.1\r\nHost: h\r\nX-A: " + b"a" * (40 * KIB))
    with pytest.raises(CodecError) as caught:
        decoder.feed(b"a" * (24 * KIB) + b"\r\n\r\n")
    assert caught.value.status == 431
    # the same sizes across many headers, with a small head in a big read: only the head counts
    small_head_big_body = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (200 * KIB)
    recorder, _ = decode_request(small_head_big_body + b"x" * (200 * KIB))
    assert len(recorder.heads()) == 1
    many = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(58))  # 57 KiB of names and values
    recorder, _ = decode_request(b"GET / HTTP/1.1\r\nHost: h\r\n" + many + b"\r\n")
    assert len(recorder.heads()) == 1
    with pytest.raises(CodecError):
        decode_request(b"GET / HTTP/1.1\r\nHost: h\r\n" + many + b"X-Last: " + b"v" * (4 * KIB) + b"\r\n\r\n")


def test_response_head_size_limit_counts_a_head_spanning_reads() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Big: " + b"a" * (62 * KIB) + b"\r\n\r\n"
    with pytest.raises(CodecError) as caught:
        decode_response(head[:30 * KIB], head[30 * KIB:])
    assert caught.value.status == 502
    recorder, _ = decode_response(head.replace(b"a" * (62 * KIB), b"a" * (50 * KIB)))
    assert len(recorder.heads()) == 1


def test_absolute_form_without_host_is_accepted() -> None:
    recorder, _ = decode_request(b"GET http://reviews:9080/r HTTP/1.1\r\n\r\n")
    (head,) = recorder.heads()
    assert isinstance(head, RequestHead) and head.target == b"http://reviews:9080/r" and head.host is None


def decode_response(*chunks: bytes, head_request: bool = False) -> tuple[Recorder, ResponseDecoder]:
    recorder = Recorder()
    decoder = ResponseDecoder(recorder)
    decoder.head_request = head_request
    for chunk in chunks:
        decoder.feed(chunk)
    return recorder, decoder


def test_response_head_and_body() -> None:
    recorder, decoder = decode_response(
        b"HTTP/1.1 200 Fine\r\nContent-Length: 4\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nServer: up\r\n\r\n",
        b"da", b"ta")
    (head,) = recorder.heads()
    assert isinstance(head, ResponseHead)
    assert (head.status, head.content_length, head.chunked) == (200, 4, False)
    assert head.headers == [(b"Server", b"up")]  # names as the upstream wrote them
    assert recorder.body() == b"data" and recorder.events[-1] == "complete"
    assert decoder.keep_alive and decoder.complete


def test_response_to_head_ends_at_its_head() -> None:
    recorder, decoder = decode_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", head_request=True)
    assert recorder.events[-1] == "complete" and recorder.body() == b""
    assert decoder.keep_alive
    # the connection carries the next response normally
    decoder.head_request = False
    decoder.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert recorder.body() == b"ok" and recorder.events.count("complete") == 2


def test_interim_responses_precede_the_final_one() -> None:
    recorder, _ = decode_response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\n"
                                  b"HTTP/1.1 204 No Content\r\n\r\n")
    assert [h.status for h in recorder.heads()] == [100, 103, 204]
    assert recorder.events.count("complete") == 1


def test_response_delimited_by_close() -> None:
    recorder, decoder = decode_response(b"HTTP/1.1 200 OK\r\n\r\nsome", b" body")
    assert decoder.until_eof and "complete" not in recorder.events
    assert decoder.finish()
    assert recorder.body() == b"some body" and recorder.events[-1] == "complete"
    assert not decoder.keep_alive


def test_connection_close_and_http10_responses_are_not_reusable() -> None:
    _, closing = decode_response(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    _, old = decode_response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not closing.keep_alive and not old.keep_alive


def test_switching_protocols_returns_the_tunnel_offset() -> None:
    data = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nRAW"
    recorder = Recorder()
    offset = ResponseDecoder(recorder).feed(data)
    (head,) = recorder.heads()
    assert isinstance(head, ResponseHead) and head.upgrade == b"websocket"
    assert offset is not None and data[offset:] == b"RAW"


@pytest.mark.parametrize("data", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\n",
])
def test_response_protocol_errors(data: bytes) -> None:
    with pytest.raises(CodecError) as caught:
        decode_response(data)
    assert caught.value.status == 502


def test_serialization() -> None:
    assert request_head(b"GET", b"/x", b"h", [(b"a", b"1")], [b"b: 2\r\n"]) == (
        b"GET /x HTTP/1.1\r\nhost: h\r\na: 1\r\nb: 2\r\n\r\n")
    assert request_head(b"GET", b"/", None, [], []) == b"GET / HTTP/1.1\r\nhost: \r\n\r\n"
    assert response_head(b"HTTP/1.1 200 OK\r\n", [(b"a", b"1")], ()) == b"HTTP/1.1 200 OK\r\na: 1\r\n\r\n"
    assert chunk_size_line(255) == b"ff\r\n"


def test_local_reply_rendering() -> None:
    reply = render(503, b"no healthy upstream", close=False)
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable"
    assert b"content-type: text/plain" in lines and b"content-length: 19" in lines
    assert any(line.startswith(b"date: ") for line in lines)
    assert body == b"no healthy upstream"
    empty = render(404, b"", close=True)
    assert b"content-type" not in empty and b"content-length: 0\r\n" in empty and b"connection: close" in empty
    head_only = render(503, b"abc", close=False, head_only=True)
    assert head_only.endswith(b"\r\n\r\n") and b"content-length: 3" in head_only
    no_content = render(204, b"ignored", close=False)
    assert b"content-length" not in no_content and no_content.endswith(b"\r\n\r\n")
