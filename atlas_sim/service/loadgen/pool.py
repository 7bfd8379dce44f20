"""The generator's HTTP clients: small httpx pools behind FIFO gates, warmed up before time 0."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import httpx

from .._asyncio_stream import plain_tcp_transport

__all__ = ["ClientPool"]


class ClientPool:
    """Several small ``httpx.AsyncClient`` pools behind FIFO gates.

    httpcore's connection pool scans every connection and every waiting request on each event,
    and asks each idle connection whether the server closed it (a system call or two), so its
    cost per request grows with the pool and its queue; an open-loop run that falls behind then
    slows the client further, until it collapses (measured: a 512-connection pool used about
    10 ms of CPU per request at 300 req/s). Here each client holds at most ``per_client``
    connections, and a request enters a client only when a connection is free (an
    ``asyncio.Semaphore`` per client, FIFO, O(1)), so httpx never queues internally and each
    scan stays short (measured, 4 requests at a time: about 1.0 ms of CPU per request with 2
    connections per client against 1.4 ms with 8). Requests beyond ``max_connections`` wait at
    the gates; their latency still counts from their scheduled time.
    """

    def __init__(self, max_connections: int, per_client: int = 2, *,
                 plain_tcp: bool = False) -> None:
        self.per_client = min(per_client, max_connections)
        self.max_clients = -(-max_connections // self.per_client)
        self._limits = httpx.Limits(max_connections=self.per_client,
                                    max_keepalive_connections=self.per_client)
        # One TLS context for all: httpx would otherwise load the CA bundle once per client.
        self._tls = ssl.create_default_context()
        # For http:// targets, sockets come from asyncio protocols rather than anyio streams:
        # see _asyncio_stream (measured in BENCHMARKS.md).
        self._plain_tcp = plain_tcp
        self.clients: list[httpx.AsyncClient] = []
        self.gates: list[asyncio.Semaphore] = []
        self._next = 0
        self._add()

    def _add(self) -> None:
        if self._plain_tcp:
            client = httpx.AsyncClient(transport=plain_tcp_transport(self._limits, self._tls),
                                       timeout=None, trust_env=False)
        else:
            client = httpx.AsyncClient(limits=self._limits, timeout=None, trust_env=False,
                                       verify=self._tls)
        self.clients.append(client)
        self.gates.append(asyncio.Semaphore(self.per_client))

    def pick(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """The first client with a free connection; a new client if none has one (clients are
        made only when needed: each costs a few milliseconds); else the next in turn."""
        for client, gate in zip(self.clients, self.gates, strict=True):
            if not gate.locked():
                return client, gate
        if len(self.clients) < self.max_clients:
            self._add()
            return self.clients[-1], self.gates[-1]
        i = self._next = (self._next + 1) % len(self.clients)
        return self.clients[i], self.gates[i]

    async def warm_up(self, url: str, connections: int, timeout: float) -> None:
        """Open up to ``connections`` connections with a GET of ``url`` on each, before time 0.

        The first request through a client imports parts of httpx, anyio and h11 and opens a
        connection: tens of milliseconds that, inside the run, made the first scheduled
        requests leave late (measured at 500 requests/s: 30 to 250 sends more than 5 ms late in
        the first quarter second, enough on their own to put the p99 send lag over 5 ms). Any
        answer, or none within ``timeout``, will do: this only warms the client.
        """
        connections = min(connections, self.max_clients * self.per_client)
        while len(self.clients) * self.per_client < connections:
            self._add()

        async def one(client: httpx.AsyncClient) -> None:
            with contextlib.suppress(httpx.HTTPError):
                await client.get(url)

        # Tasks awaited to their end whatever happens, rather than ``wait_for(gather(...))``:
        # when the run is cancelled during the warm-up, ``wait_for`` cancels the gather and
        # never reads its outcome, and the event loop later logged "_GatheringFuture exception
        # was never retrieved ... CancelledError" (issue 20, item 10).
        calls = [asyncio.ensure_future(one(self.clients[i // self.per_client]))
                 for i in range(connections)]
        try:
            done, _ = await asyncio.wait(calls, timeout=timeout,
                                         return_when=asyncio.FIRST_EXCEPTION)
            for call in done:
                call.result()  # an error other than HTTP's (a port out of range) is raised
        finally:
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients), return_exceptions=True)
