"""The gateway's HTTP protocol: a response's head and body leave in one write, and nothing else changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from crm_gateway.http_protocol import CoalescingHttpToolsProtocol, CoalescingTransport
from gateway_harness import serving

pytestmark = pytest.mark.asyncio


class _Recording:
    """Sits between :class:`CoalescingTransport` and the real socket transport, keeping each write it passes on."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path == "/stream":  # three chunks, the loop turning between them
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"x" * 1_000_000 if path == "/big" else b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def _server() -> AsyncIterator[tuple[int, list[_Recording]]]:
    recorded: list[_Recording] = []

    class Protocol(CoalescingHttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            recording = _Recording(transport)
            recorded.append(recording)
            super().connection_made(recording)  # type: ignore[arg-type]

    async with serving(_app, http=Protocol) as port:
        yield port, recorded


async def _exchange(port: int, requests: list[bytes]) -> list[bytes]:
    """Send each request on one kept-alive connection; return each raw answer (head and body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for request in requests:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if b"transfer-encoding: chunked" in head.lower():
                body = await reader.readuntil(b"0\r\n\r\n")
            else:
                length = int(
                    next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(
                        b":"
                    )[1]
                )
                body = await reader.readexactly(length)
            answers.append(head + body)
    finally:
        writer.close()
        await writer.wait_closed()
    return answers


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode()


async def test_a_response_head_and_body_leave_in_one_write() -> None:
    async with _server() as (port, recorded):
        answers = await _exchange(port, [_get("/"), _get("/")])
    assert all(answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b'{"ok":true}') for answer in answers)
    # Two kept-alive requests on one connection, one write each: the head and the body together.
    assert len(recorded) == 1
    assert recorded[0].writes == answers


async def test_a_large_body_and_a_streamed_one_arrive_whole_and_in_order() -> None:
    async with _server() as (port, recorded):
        big, streamed = await _exchange(port, [_get("/big"), _get("/stream")])
    assert big.endswith(b"x" * 1_000_000) and big.count(b"x") == 1_000_000
    chunks = streamed.split(b"\r\n\r\n", 1)[1]
    assert chunks == b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"
    # Chunks sent in different turns of the loop are separate writes (nothing is held past a turn); the first
    # chunk leaves with the head.
    writes = recorded[0].writes
    assert writes[0] == big
    assert writes[1].endswith(b"4\r\none,\r\n") and writes[1].startswith(b"HTTP/1.1 200 OK")
    assert writes[2:] == [b"4\r\ntwo,\r\n", b"5\r\nthree\r\n", b"0\r\n\r\n"]


async def test_close_sends_what_is_gathered_first_and_abort_drops_it() -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await received.put(await reader.read())  # until the other side closes
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        for ending, expected in (("close", b"head|body"), ("abort", b"")):
            transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            coalescing = CoalescingTransport(transport, loop)
            coalescing.write(b"head|")
            coalescing.write(b"body")
            assert coalescing.get_write_buffer_size() == len(b"head|body")
            getattr(coalescing, ending)()
            assert await asyncio.wait_for(received.get(), 5) == expected
    finally:
        server.close()
        await server.wait_closed()
