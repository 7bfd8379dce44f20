"""The load generator's asyncio network backend for httpcore, against raw TCP servers.

Each server here is a few lines of asyncio on 127.0.0.1 that misbehaves in one chosen way, so
that the paths of ``_ProtocolStream`` (data, end of stream, reset, read timeout, refusal) run
under httpx for real.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable

import httpx
import pytest

from atlas_sim.service._asyncio_stream import AsyncioBackend, plain_tcp_transport
from tests.helpers import free_port

pytestmark = pytest.mark.live  # real sockets on 127.0.0.1

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def response(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra, "", ""]
    return "\r\n".join(head).encode() + body


async def read_request(reader: asyncio.StreamReader) -> bool:
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    return True


def run_against(handler: Handler, test: Callable[[str], Awaitable[object]]) -> tuple[object, int]:
    """Serve ``handler`` on loopback, run ``test(url)`` against it; its result and how many
    connections the server accepted."""
    accepted = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    async def main() -> object:
        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await test(f"http://127.0.0.1:{port}/")
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(main()), accepted


def client(timeout: float | None = None) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    return httpx.AsyncClient(transport=plain_tcp_transport(limits, ssl.create_default_context()),
                             timeout=timeout, trust_env=False)


def test_the_transport_keeps_httpx_and_only_swaps_the_sockets():
    transport = plain_tcp_transport(httpx.Limits(max_connections=3),
                                    ssl.create_default_context())
    # httpx takes no network backend as an argument; if its private pool attribute changes,
    # this fails here instead of the generator silently losing the backend.
    assert isinstance(transport._pool._network_backend, AsyncioBackend)
    assert transport._pool._max_connections == 3


def test_a_keep_alive_connection_closed_by_the_server_is_noticed_and_replaced():
    async def one_answer_then_close(reader, writer):  # no "Connection: close" warning
        if await read_request(reader):
            writer.write(response(b"hello"))
            await writer.drain()

    async def two_requests(url):
        async with client() as c:
            first = await c.get(url)
            await asyncio.sleep(0.05)  # the server's FIN reaches our buffer
            second = await c.get(url)
        return first.text, second.text

    texts, accepted = run_against(one_answer_then_close, two_requests)
    assert texts == ("hello", "hello")
    assert accepted == 2  # the idle connection read as closed, so the pool opened a new one


def test_one_connection_carries_many_requests_and_large_bodies_arrive_whole():
    body = bytes(range(256)) * 4096  # 1 MiB: many reads of at most httpcore's chunk size

    async def keep_alive(reader, writer):
        while await read_request(reader):
            writer.write(response(body))
            await writer.drain()

    async def three(url):
        async with client() as c:
            return [(await c.get(url)).content for _ in range(3)]

    bodies, accepted = run_against(keep_alive, three)
    assert bodies == [body] * 3 and accepted == 1


def test_a_server_that_never_answers_gives_httpx_read_timeout():
    async def silent(reader, writer):
        await read_request(reader)
        await asyncio.sleep(5)

    async def get(url):
        async with client(timeout=0.2) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.get(url)
        return "timed out"

    assert run_against(silent, get)[0] == "timed out"


@pytest.mark.parametrize(("close", "error"), [
    ("fin", httpx.RemoteProtocolError),  # an orderly close: the answer is simply cut short
    ("rst", httpx.ReadError),  # a reset: the socket reports an error
])
def test_a_connection_lost_mid_answer_is_an_httpx_request_error(close, error):
    async def half_an_answer(reader, writer):
        await read_request(reader)
        writer.write(response(b"x" * 100)[:-50])
        await writer.drain()
        if close == "rst":
            await asyncio.sleep(0.05)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    async def get(url):
        async with client() as c:
            with pytest.raises(error):
                await c.get(url)
        return "cut"

    assert run_against(half_an_answer, get)[0] == "cut"


def test_a_refused_connection_is_an_httpx_connect_error():
    async def main():
        async with client() as c:
            with pytest.raises(httpx.ConnectError):
                await c.get(f"http://127.0.0.1:{free_port()}/")

    asyncio.run(main())


def test_https_is_refused_with_a_clear_error():
    async def never(reader, writer):
        await asyncio.sleep(1)

    async def get(url):
        async with client() as c:
            with pytest.raises(httpx.ConnectError, match="plain TCP only"):
                await c.get(url.replace("http://", "https://"))
        return "refused"

    assert run_against(never, get)[0] == "refused"
