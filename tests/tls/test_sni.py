"""The ClientHello SNI parser, table-tested with real ClientHellos made by Python's ssl (MemoryBIO)."""

from __future__ import annotations

import ssl

import pytest

from proxy.tls.sni import MAX_HELLO, parse


def client_hello(server_name: str | None, **options: object) -> bytes:
    """The bytes a TLS client sends first, for `server_name` (None: no SNI)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if options.get("alpn"):
        context.set_alpn_protocols(["h2", "http/1.1"])
    if options.get("tls12"):
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


CASES = [
    ("bookinfo.example", {}, "bookinfo.example"),
    ("Mixed.Case.Example", {}, "mixed.case.example"),
    ("a." + "b" * 60 + ".example", {"alpn": True}, "a." + "b" * 60 + ".example"),
    ("tls12.example", {"tls12": True}, "tls12.example"),
    (None, {}, None),
    ("127.0.0.1", {}, None),  # an IP address is never sent as SNI
]


@pytest.mark.parametrize(("name", "options", "expected"), CASES)
def test_server_name_of_a_real_client_hello(name: str | None, options: dict[str, object],
                                            expected: str | None) -> None:
    hello = parse(client_hello(name, **options))
    assert hello.complete and hello.tls
    assert hello.server_name == expected


def test_every_prefix_asks_for_more_and_the_whole_hello_answers() -> None:
    data = client_hello("split.example")
    for cut in range(len(data)):
        assert not parse(data[:cut]).complete, cut
    assert parse(data).server_name == "split.example"
    assert parse(data + b"trailing bytes").server_name == "split.example"


def test_a_hello_split_over_two_records_is_reassembled() -> None:
    data = client_hello("records.example")
    body = data[5:]
    half = len(body) // 2
    header = data[:3]
    two = (header + half.to_bytes(2, "big") + body[:half] + header + (len(body) - half).to_bytes(2, "big")
           + body[half:])
    assert parse(two).server_name == "records.example"
    assert not parse(two[:-1]).complete


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",  # plaintext HTTP
    b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",  # a handshake record that is not a ClientHello
    b"\x17\x03\x03\x00\x10" + b"\x00" * 16,  # application data
    b"\x16\x03\x01\x00\x00",  # an empty record
    b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00",  # a ClientHello cut short inside
])
def test_what_is_not_a_client_hello_is_answered_not_tls(data: bytes) -> None:
    hello = parse(data)
    assert hello.complete and not hello.tls


def test_a_hello_too_big_to_wait_for_is_not_waited_for() -> None:
    header = b"\x16\x03\x01\x40\x00\x01" + (MAX_HELLO + 1).to_bytes(3, "big")
    assert parse(header + b"\x00" * 100).complete
