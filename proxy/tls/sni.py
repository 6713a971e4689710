"""The server name (SNI) of a TLS ClientHello, read without terminating TLS. Sans-IO: feed the bytes
received so far; the answer says whether more are needed.

A ClientHello may span several TLS records; the handshake message is reassembled from them, up to
MAX_HELLO bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HELLO = 64 * 1024  # a ClientHello larger than this is not waited for


@dataclass(frozen=True, slots=True)
class Hello:
    """Result of `parse`: `complete` False = feed more bytes; `tls` False = not a TLS ClientHello."""

    complete: bool
    tls: bool = True
    server_name: str | None = None  # None: the client sent no SNI


NEED_MORE = Hello(False)
NOT_TLS = Hello(True, tls=False)


def parse(data: bytes) -> Hello:
    handshake = bytearray()
    offset = 0
    while True:
        if len(data) - offset < 5:
            return NEED_MORE if len(data) < MAX_HELLO else NOT_TLS
        if data[offset] != 0x16 or data[offset + 1] != 3:  # handshake record, TLS major version 3
            return NOT_TLS
        length = int.from_bytes(data[offset + 3:offset + 5], "big")
        if length == 0 or length > 16384 + 2048:
            return NOT_TLS
        end = offset + 5 + length
        if len(data) < end:
            partial = handshake + data[offset + 5:]  # a wrong type or size shows before the record ends
            if len(partial) >= 4 and (partial[0] != 0x01 or int.from_bytes(partial[1:4], "big") > MAX_HELLO):
                return NOT_TLS
            return NEED_MORE if end <= MAX_HELLO + 5 else NOT_TLS
        handshake += data[offset + 5:end]
        offset = end
        if len(handshake) >= 4:
            if handshake[0] != 0x01:  # ClientHello
                return NOT_TLS
            size = int.from_bytes(handshake[1:4], "big")
            if size > MAX_HELLO:
                return NOT_TLS
            if len(handshake) >= 4 + size:
                return _hello(bytes(handshake[4:4 + size]))


def _hello(body: bytes) -> Hello:
    try:
        pos = 2 + 32  # client_version, random
        pos += 1 + body[pos]  # session_id
        pos += 2 + int.from_bytes(body[pos:pos + 2], "big")  # cipher_suites
        pos += 1 + body[pos]  # compression_methods
        if pos >= len(body):
            return Hello(True)  # no extensions, so no SNI
        end = pos + 2 + int.from_bytes(body[pos:pos + 2], "big")
        pos += 2
        if end > len(body):
            return NOT_TLS
        while pos + 4 <= end:
            kind = int.from_bytes(body[pos:pos + 2], "big")
            size = int.from_bytes(body[pos + 2:pos + 4], "big")
            pos += 4
            if pos + size > end:
                return NOT_TLS
            if kind == 0:  # server_name: a list of (type, name); type 0 is host_name
                return Hello(True, server_name=_server_name(body[pos:pos + size]))
            pos += size
        return Hello(True)
    except IndexError:
        return NOT_TLS


def _server_name(ext: bytes) -> str | None:
    pos = 2
    end = min(len(ext), 2 + int.from_bytes(ext[0:2], "big"))
    while pos + 3 <= end:
        kind = ext[pos]
        size = int.from_bytes(ext[pos + 1:pos + 3], "big")
        name = ext[pos + 3:pos + 3 + size]
        if kind == 0 and len(name) == size:
            try:
                return name.decode("ascii").lower().rstrip(".")
            except UnicodeDecodeError:
                return None
        pos += 3 + size
    return None
