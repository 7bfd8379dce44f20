"""Idempotency keys: a retried write applied once.

A client that timed out does not know whether its write was applied; if it retries, the server
may apply it twice. The cure DDIA describes (chapter 12, "The end-to-end argument for
databases": operation identifiers) is a unique ID per logical request, chosen by the client,
sent with every attempt, and remembered by the server. The IETF HTTP API working group's draft
"The Idempotency-Key HTTP Header Field" names it: ``Idempotency-Key: "<unique value>"``, a
Structured Field string (RFC 8941), and says what a server answers:

* the first request with a key is processed, and its response kept;
* a repeat of a completed request gets the kept response again, and the write is not applied a
  second time (Atlas marks such an answer ``Idempotent-Replayed: true``, as Stripe's API does);
* a repeat while the first is still being processed gets 409 Conflict (try again later);
* the same key with a different request gets 422 (a key names one request, not a slot).

An ``X-Request-ID`` is something else: a tracing ID, new for every attempt, remembered by no one.

``IdempotencyStore`` holds the keys for ``ttl`` seconds (bounded in number, oldest first out);
only successful (2xx) responses are kept, so a write that failed may be tried again with the
same key. One event loop owns it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..validation import check_int, check_real

__all__ = ["IDEMPOTENCY_KEY_HEADER", "REPLAYED_HEADER", "IdempotencyStore", "Stored",
           "parse_idempotency_key"]

IDEMPOTENCY_KEY_HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
_MAX_KEY = 255  # characters; a UUID is 36


def parse_idempotency_key(header: str) -> str:
    """The key in an ``Idempotency-Key`` header: a Structured Field string (RFC 8941, section
    3.3.3), ``"..."`` of printable ASCII with ``\\"`` and ``\\\\`` escapes, 1 to 255 characters.
    Raises ValueError saying what is wrong."""
    value = header.strip()
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise ValueError('Idempotency-Key must be a quoted string, e.g. "3f2b...", '
                         f"got {header!r}")
    out, i, body = [], 0, value[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            if i + 1 == len(body) or body[i + 1] not in '"\\':
                raise ValueError(f"Idempotency-Key has a bad escape at {i}: {header!r}")
            ch, i = body[i + 1], i + 1
        elif ch == '"' or not 0x20 <= ord(ch) <= 0x7E:
            raise ValueError(f"Idempotency-Key holds a character a string cannot: {header!r}")
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


@dataclass
class _Entry:
    fingerprint: str
    expires: float
    response: Stored | None = None  # None: still being processed


class IdempotencyStore:
    """Keys of recent writes and their responses.

    Args:
        ttl: seconds a key is remembered after it was first seen (> 0).
        max_keys: how many keys at most; beyond, the oldest is forgotten (>= 1).
        clock: seconds, ``time.monotonic`` by default.
    """

    def __init__(self, *, ttl: float = 300.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = check_real("ttl", ttl, low=0, low_open=True)
        self.max_keys = check_int("max_keys", max_keys, low=1)
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def begin(self, key: str, fingerprint: str
              ) -> Literal["new", "in progress", "mismatch"] | Stored:
        """What to do with a request carrying ``key``: ``"new"`` (process it, then call
        ``complete`` or ``abandon``), ``"in progress"`` (409), ``"mismatch"`` (422: the key
        was used for another request), or the ``Stored`` response to replay."""
        self._expire()
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = _Entry(fingerprint, self._clock() + self.ttl)
            while len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)
            return "new"
        if entry.fingerprint != fingerprint:
            return "mismatch"
        return entry.response if entry.response is not None else "in progress"

    def complete(self, key: str, response: Stored) -> None:
        """The request under ``key`` is done: keep its response if it succeeded (2xx), else
        forget the key so that the write may be tried again."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if 200 <= response.status < 300:
            entry.response = response
        else:
            del self._entries[key]

    def abandon(self, key: str) -> None:
        """The request under ``key`` ended without a response (cancelled): forget the key."""
        entry = self._entries.get(key)
        if entry is not None and entry.response is None:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def _expire(self) -> None:
        now = self._clock()
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.expires > now:
                return
            del entries[key]
