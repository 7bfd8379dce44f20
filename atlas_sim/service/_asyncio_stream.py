"""An asyncio network backend for httpcore, used by the load generator's clients.

httpcore lets a connection pool take its sockets from a pluggable network backend
(``AsyncConnectionPool(network_backend=...)``). Its default goes through anyio, and two of its
costs land on every request of an open-loop run: each read and write enters a cancel scope, and
on every event the pool asks each idle connection whether the server has closed it, which the
anyio stream answers by building its table of attributes and polling the socket with a system
call. A plain ``asyncio.Protocol`` knows the answer already: bytes or an end of stream are in
its buffer, or they are not. The HTTP itself (h11, the pool, httpx's requests and responses) is
untouched. Measured in BENCHMARKS.md: the generator's p99 send lag at 500 requests/s.

Plain TCP only: the generator keeps httpx's default transport for ``https://`` targets.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpcore
import httpx

from ._timeouts import run_with_timeout

__all__ = ["AsyncioBackend", "plain_tcp_transport"]


class _ProtocolStream(asyncio.Protocol, httpcore.AsyncNetworkStream):
    """One TCP connection: bytes arrive in a buffer; ``read`` takes them, or waits for them."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._eof = False
        self._lost: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None  # set while the kernel's buffer is full

    # -- asyncio.Protocol: called by the event loop --------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        # No pause_reading: the buffer is unbounded, fine for a load generator's small answers.
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close our side too: HTTP/1.1 has no use for a half-open connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = exc
        self._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- httpcore.AsyncNetworkStream: called by the connection ---------------------------------

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` once the server has closed the connection."""
        if not self._buffer and not self._eof:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                if timeout is None:
                    await waiter
                else:
                    await run_with_timeout(waiter, timeout)
            except TimeoutError:
                raise httpcore.ReadTimeout(f"no bytes within {timeout} s") from None
            finally:
                self._waiter = None
        if not self._buffer and self._lost is not None:
            raise httpcore.ReadError(str(self._lost) or repr(self._lost))
        data = bytes(self._buffer[:max_bytes])
        del self._buffer[:max_bytes]
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport is None or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        if self._writable is not None:  # wait until the kernel takes more
            try:
                if timeout is None:  # shielded: a cancelled writer must not cancel it
                    await asyncio.shield(self._writable)
                else:
                    await run_with_timeout(asyncio.shield(self._writable), timeout)
            except TimeoutError:
                raise httpcore.WriteTimeout(f"could not write within {timeout} s") from None

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("this backend speaks plain TCP only; use httpx's default "
                                    "transport for https://")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # the pool's question: has the server closed this idle one?
            return bool(self._buffer) or self._eof
        if info == "ssl_object":
            return None
        if self._transport is None:
            return None
        return self._transport.get_extra_info(
            {"client_addr": "sockname", "server_addr": "peername"}.get(info, info))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on plain asyncio protocols (TCP only)."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        connect = loop.create_connection(
            _ProtocolStream, host, port,
            local_addr=(local_address, 0) if local_address is not None else None)
        try:
            if timeout is None:
                _, stream = await connect
            else:
                _, stream = await run_with_timeout(connect, timeout)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection to {host}:{port} within "
                                          f"{timeout} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = stream.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return stream

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def plain_tcp_transport(limits: httpx.Limits,
                        verify: ssl.SSLContext) -> httpx.AsyncHTTPTransport:
    """httpx's transport, its connection pool taking sockets from ``AsyncioBackend``.

    httpx does not take a network backend as an argument, so its pool is replaced by an
    equal one that does (``tests/service/test_loadgen.py`` checks that this still holds).
    ``verify`` is only there so that httpx does not load the CA bundle again for each client.
    """
    transport = httpx.AsyncHTTPTransport(limits=limits, verify=verify, trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return transport
