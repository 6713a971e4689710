"""tcp-echo: `<prefix> <line>` per complete line, close at EOF, partial last line dropped, several ports."""

from __future__ import annotations

import asyncio

import pytest

from proxy.samples import start_tcp_echo


async def converse(port: int, *chunks: bytes) -> bytes:
    """Write the chunks one by one, half-close, and return everything read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(10):
            return await reader.read(-1)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(("chunks", "reply"), [
    ((b"world\n",), b"one world\n"),
    ((b"a\nb\nc\n",), b"one a\none b\none c\n"),
    ((b"\n",), b"one \n"),
    ((b"crlf\r\n",), b"one crlf\r\n"),
    ((b"spl", b"it\nne", b"xt\n"), b"one split\none next\n"),
    ((b"done\npartial",), b"one done\n"),
    ((b"no newline at all",), b""),
    ((), b""),
])
async def test_each_complete_line_is_echoed_with_the_prefix(closing, chunks: tuple[bytes, ...], reply: bytes) -> None:
    server = closing(await start_tcp_echo([0], "one"))
    assert await converse(server.port, *chunks) == reply


async def test_byte_by_byte_input(closing) -> None:
    server = closing(await start_tcp_echo([0], "two"))
    text = b"Mon Nov 12 23:24:57 UTC 2022\nsecond line\ntail"
    assert await converse(server.port, *(text[i:i + 1] for i in range(len(text)))) == (
        b"two Mon Nov 12 23:24:57 UTC 2022\ntwo second line\n")


async def test_replies_arrive_before_eof(closing) -> None:
    # like `(date; sleep 1) | nc`: the reply must come while the client still keeps its side open
    server = closing(await start_tcp_echo([0], "one"))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"first\n")
    async with asyncio.timeout(10):
        assert await reader.readline() == b"one first\n"
    writer.write(b"second\n")
    async with asyncio.timeout(10):
        assert await reader.readline() == b"one second\n"
    writer.close()
    await writer.wait_closed()


async def test_every_listed_port_answers_with_the_same_prefix(closing) -> None:
    server = closing(await start_tcp_echo([0, 0, 0], "hello"))
    assert len(set(server.ports)) == 3
    for port in server.ports:
        assert await converse(port, b"world\n") == b"hello world\n"


async def test_many_lines_on_one_connection(closing) -> None:
    server = closing(await start_tcp_echo([0], "one"))
    lines = [f"line {i}\n".encode() for i in range(2000)]
    reply = await converse(server.port, b"".join(lines))
    assert reply == b"".join(b"one " + line for line in lines)


async def test_close_ends_open_connections(closing) -> None:
    server = await start_tcp_echo([0], "one")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"x\n")
    async with asyncio.timeout(10):
        assert await reader.readline() == b"one x\n"
    server.close()
    await server.wait_closed()
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()


async def test_a_busy_port_fails_without_leaving_listeners(closing) -> None:
    first = closing(await start_tcp_echo([0], "one"))
    with pytest.raises(OSError):
        await start_tcp_echo([0, first.port], "two")
