"""Idempotency keys: a retried write applied once.

A client that timed out does not know whether its write was applied; if it retries, the server
may apply it twice. The cure DDIA describes (chapter 12, "The end-to-end argument for
databases": operation identifiers) is a unique ID per logical request, chosen by the client,
sent with every attempt, and remembered by the server. The IETF HTTP API working group's draft
"The Idempotency-Key HTTP Header Field" names it: ``Idempotency-Key: "<unique value>"``, an
Item Structured Header field whose value is a String (RFC 8941), and says what a server answers:

* the first request with a key is processed, and its response kept;
* a repeat of a completed request gets the kept response again, and the write is not applied a
  second time (Atlas marks such an answer ``Idempotent-Replayed: true``, as Stripe's API does);
* a repeat while the first is still being processed gets 409 Conflict (try again later);
* the same key with a different request gets 422 (a key names one request, not a slot);
* a header that is not one String (missing quotes, two fields, a list) gets 400.

An ``X-Request-ID`` is something else: a tracing ID, new for every attempt, remembered by no one.

What a store promises (``IdempotencyStore``, the protocol; ``MemoryIdempotencyStore``, a
store of one instance's own, kept here; the ``Store`` of ``service.store``, where the service
keeps its keys):

* a key whose request is still being processed is never forgotten while its holder lives;
* a completed (2xx) answer is kept for ``retention`` seconds after it was stored (a non-2xx
  answer is not kept, so a write that failed may be tried again with the same key);
* at most ``capacity`` keys are held, in flight and kept together; when the store is full a new
  key is refused (``StoreFull``: the service answers 503 with ``Retry-After``) rather than a
  promised one forgotten.

Where the keys live: in the instance's ``Store`` (``service.store``: in memory, SQLite or
PostgreSQL, ``ServerConfig.store``), the same one that keeps the orders, so that an order and
its key's answer are written in one transaction (``Store.place_order``) and neither is kept
without the other, even when the process is killed between the two (``tests/service/
test_crash.py``, ``experiments.datasystem.crash_demo``). Instances that name one store url
(``StoreConfig(url=...)``; a ``Cluster``'s instances share one by default) share their keys: a
retry that reaches another instance (``run_load(instances=...)``) replays the first answer
there. A shared store has one duty that a store of one process does not: a key held by an
instance that died would be in flight for ever, since nobody will complete or abandon it, so a
hold is a lease (``StoreConfig.key_lease``, default the server's timeout, else ``HTTP_TIMEOUT``):
a key in flight longer than its lease may be begun again, with a new token, by anyone, and the
old holder's ``complete`` then finds its hold gone (``KeyLost``: nothing applied, 409).
``MemoryIdempotencyStore`` remains as the protocol's reference: the contract tests run on it
and on every ``Store`` alike (a ``ServiceState(idempotency=...)`` given one keeps its keys apart
from its orders, in this process only).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ..validation import check_int, check_real

__all__ = [
    "IDEMPOTENCY_KEY_HEADER",
    "REPLAYED_HEADER",
    "Begun",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "StoreFull",
    "Stored",
    "Verdict",
    "parse_idempotency_key",
    "parse_idempotency_keys",
]

IDEMPOTENCY_KEY_HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
_MAX_KEY = 255  # characters; a UUID is 36


def parse_idempotency_keys(headers: list[str]) -> str | None:
    """The key in a request's ``Idempotency-Key`` fields (``headers``: every field's value, in
    order), or None when there is none. The draft makes the field an Item, so two fields (which
    HTTP would join into a list) are refused like a list in one field: ValueError."""
    if not headers:
        return None
    if len(headers) > 1:
        raise ValueError(f"Idempotency-Key given {len(headers)} times; send exactly one key "
                         '(an Item: one quoted string, e.g. "3f2b...")')
    return parse_idempotency_key(headers[0])


def parse_idempotency_key(header: str) -> str:
    """The key in an ``Idempotency-Key`` header: a Structured Field string (RFC 8941, section
    3.3.3), ``"..."`` of printable ASCII with ``\\"`` and ``\\\\`` escapes, 1 to 255 characters.
    Raises ValueError saying what is wrong (a list of strings included)."""
    value = header.strip(" \t")
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise ValueError('Idempotency-Key must be a quoted string, e.g. "3f2b...", '
                         f"got {header[:300]!r}")
    out, i, body = [], 0, value[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            if i + 1 == len(body) or body[i + 1] not in '"\\':
                raise ValueError(f"Idempotency-Key has a bad escape at {i}: {header[:300]!r}")
            ch, i = body[i + 1], i + 1
        elif ch == '"':
            raise ValueError("Idempotency-Key must be one quoted string, not a list of them: "
                             f"{header[:300]!r}")
        elif not 0x20 <= ord(ch) <= 0x7E:
            raise ValueError(
                f"Idempotency-Key holds a character a string cannot: {header[:300]!r}")
        out.append(ch)
        i += 1
    key = "".join(out)
    if not 1 <= len(key) <= _MAX_KEY:
        raise ValueError(f"Idempotency-Key must hold 1 to {_MAX_KEY} characters, "
                         f"got {len(key)}")
    return key


@dataclass(frozen=True)
class Stored:
    """A completed request's response, kept under its key."""

    fingerprint: str
    status: int
    body: bytes
    media_type: str


@dataclass(frozen=True)
class Begun:
    """``begin``'s answer for a key it now holds for this request: process the request, then
    hand this back to ``complete`` or ``abandon``. ``token`` tells this hold from any later
    one under the same key: after a ``clear`` (``/admin/reset``) a new request may begin the
    same key while this one still runs, and this one's ending must not touch the new one's
    entry (in SQL: ``... WHERE key = ? AND token = ?``)."""

    key: str
    token: int


@dataclass(frozen=True)
class StoreFull:
    """``begin``'s answer when ``capacity`` keys are held and none can be let go: the new key
    is refused. ``retry_after`` is the number of seconds until the oldest kept answer expires
    (None if every key is still in flight: its request ends within the request timeout)."""

    capacity: int
    retry_after: float | None


#: What ``begin`` says to do with a request: process it (``Begun``), 409 (``"in progress"``),
#: 422 (``"mismatch"``), replay the ``Stored`` answer, or refuse the key (``StoreFull``).
Verdict = Begun | Literal["in progress", "mismatch"] | Stored | StoreFull


@runtime_checkable
class IdempotencyStore(Protocol):
    """What the service needs of a key store; the rules are the module docstring's.

    Coroutines, so that a store behind a database (SQLite, PostgreSQL) can await its queries
    without blocking the event loop. ``begin`` must be atomic: of two requests with one new key,
    exactly one gets ``Begun`` (in SQL, ``INSERT ... ON CONFLICT DO NOTHING``). ``complete`` and
    ``abandon`` act only on the hold their ``Begun`` names (its ``token``), never on a later
    request's hold of the same key.
    """

    capacity: int  # keys held at most, in flight and kept together
    retention: float  # seconds a completed answer is kept

    async def begin(self, key: str, fingerprint: str) -> Verdict:
        """What to do with a request carrying ``key`` (see ``Verdict``). After ``Begun`` the
        caller must call ``complete`` or ``abandon`` with it, whatever happens."""
        ...

    async def complete(self, begun: Begun, response: Stored) -> None:
        """The request that ``begun`` names is done: keep its 2xx answer, forget any other
        (nothing, if that hold is gone: cleared meanwhile)."""
        ...

    async def abandon(self, begun: Begun) -> None:
        """The request that ``begun`` names ended without an answer: forget its key (nothing,
        if that hold is gone)."""
        ...

    async def count(self) -> int:
        """Keys held now (in flight and kept)."""
        ...

    async def clear(self) -> None:
        """Forget every key (``/admin/reset``)."""
        ...


@dataclass
class _Entry:
    fingerprint: str
    token: int
    response: Stored | None = None  # None: still being processed
    expires: float = math.inf  # set when the answer is kept


class MemoryIdempotencyStore:
    """The keys of one service instance, in its memory (see the module docstring).

    Keys in flight sit in a dict and never expire; completed keys sit in a second dict in the
    order they completed, which is the order they expire in (one ``retention`` for all, a
    monotonic clock), so expiring costs O(1) per key. One event loop owns the store.

    Args:
        retention: seconds a completed (2xx) answer is kept after it was stored (> 0).
        capacity: keys held at most, in flight and kept together (>= 1).
        clock: seconds, ``time.monotonic`` by default.
    """

    def __init__(self, *, retention: float = 300.0, capacity: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.retention = check_real("retention", retention, low=0, low_open=True)
        self.capacity = check_int("capacity", capacity, low=1)
        self._clock = clock
        self._tokens = itertools.count()
        self._in_flight: dict[str, _Entry] = {}
        self._kept: OrderedDict[str, _Entry] = OrderedDict()  # oldest answer first

    def __len__(self) -> int:
        self._expire()
        return len(self._in_flight) + len(self._kept)

    async def begin(self, key: str, fingerprint: str) -> Verdict:
        return self.begin_now(key, fingerprint)

    def begin_now(self, key: str, fingerprint: str) -> Verdict:
        """``begin`` without the coroutine (the store never waits)."""
        self._expire()
        entry = self._in_flight.get(key) or self._kept.get(key)
        if entry is None:
            if len(self._in_flight) + len(self._kept) >= self.capacity:
                retry_after = None
                if self._kept:
                    oldest = next(iter(self._kept.values()))
                    retry_after = max(0.0, oldest.expires - self._clock())
                return StoreFull(self.capacity, retry_after)
            token = next(self._tokens)
            self._in_flight[key] = _Entry(fingerprint, token)
            return Begun(key, token)
        if entry.fingerprint != fingerprint:
            return "mismatch"
        return entry.response if entry.response is not None else "in progress"

    async def complete(self, begun: Begun, response: Stored) -> None:
        self.complete_now(begun, response)

    def complete_now(self, begun: Begun, response: Stored) -> None:
        """``complete`` without the coroutine."""
        entry = self._release(begun)
        if entry is not None and 200 <= response.status < 300:
            entry.response = response
            entry.expires = self._clock() + self.retention
            self._kept[begun.key] = entry

    async def abandon(self, begun: Begun) -> None:
        self.abandon_now(begun)

    def abandon_now(self, begun: Begun) -> None:
        """``abandon`` without the coroutine."""
        self._release(begun)

    def _release(self, begun: Begun) -> _Entry | None:
        """Take ``begun``'s entry out of the in-flight set; None if it is not there: never
        begun here, or cleared by a reset meanwhile, the key perhaps held by a newer request
        (another token), whose entry stays."""
        entry = self._in_flight.get(begun.key)
        if entry is None or entry.token != begun.token:
            return None
        del self._in_flight[begun.key]
        return entry

    async def count(self) -> int:
        return len(self)

    async def clear(self) -> None:
        self._in_flight.clear()
        self._kept.clear()

    def _expire(self) -> None:
        now = self._clock()
        kept = self._kept
        while kept:
            key, entry = next(iter(kept.items()))
            if entry.expires > now:
                return
            del kept[key]
