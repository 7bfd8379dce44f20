"""Request bodies: read within a size limit (``read_body``: 413 beyond it) and parsed strictly
(``parse_json_body``: every body it cannot handle is an ``InvalidBody``, a 422 naming the
problem, never a 500).

Every route that reads a body (``/admin/faults``, ``/admin/fanout``, ``/api/orders``) reads at
most ``max_body_bytes`` and parses it here: not JSON, not UTF-8, nested deeper than
``MAX_JSON_DEPTH``, numbers longer than ``MAX_NUMBER_CHARS`` or beyond a double's range, a name
given twice are each refused with the reason.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fastapi import HTTPException, Request

__all__ = ["MAX_JSON_DEPTH", "MAX_NUMBER_CHARS", "InvalidBody", "parse_json_body", "read_body"]


class InvalidBody(ValueError):
    """A request body that does not follow its schema; ``problems`` name each field."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(p["msg"] for p in problems))
        self.problems = problems


#: How deeply a request body's arrays and objects may nest. Admin bodies are flat (depth 1);
#: without a bound, a body of ``[`` * 1000 exhausts the parser's recursion (a RecursionError,
#: which is not a ValueError) long before ``max_body_bytes`` is reached.
MAX_JSON_DEPTH = 32
#: The longest number a body may spell, in characters (a double needs at most 24; beyond 4300
#: digits Python's ``int`` refuses with a message that names ``sys.set_int_max_str_digits``).
MAX_NUMBER_CHARS = 100
#: The characters the depth scan looks at: brackets, and the quotes and backslashes that decide
#: whether a bracket is inside a string.
_JSON_SIGNIFICANT = re.compile(r'[\[\]{}"\\]')


def _scan_json_depth(text: str, limit: int) -> tuple[int, int]:
    """How deeply ``text``'s arrays and objects nest, and the steps the scan took.

    One pass from left to right over the characters that matter (``_JSON_SIGNIFICANT``,
    found by a one-character regex, which never backtracks), keeping two states: inside a
    string or not, and whether the previous character was an escaping backslash (RFC 8259,
    section 7: inside a string, ``\\`` escapes exactly the next character). Brackets count
    only outside strings. Returns ``(deepest, steps)``: the deepest nesting seen, a value
    > ``limit`` as soon as the scan passes ``limit`` (it stops there), and ``steps``, the
    characters visited, at most ``len(text)``: the work is linear in the body's length, however
    the body is built. (The scan this replaces removed strings with a regex that backtracked:
    a body of ``"`` and then ``\\"`` pairs took time quadratic in its length, about 20 s for
    64 KiB, with the event loop blocked.) Malformed text gives some number; ``json.loads``
    then says what is wrong with it.
    """
    depth = deepest = steps = 0
    in_string = False
    escaped = -1  # the index of the character a backslash escapes
    for match in _JSON_SIGNIFICANT.finditer(text):
        steps += 1
        at = match.start()
        if at == escaped:
            continue
        ch = text[at]
        if in_string:
            if ch == "\\":
                escaped = at + 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif ch in "]}":
            depth -= 1
        # a backslash outside a string is not JSON: json.loads says so
    return deepest, steps


def _json_depth(text: str, limit: int) -> int:
    """The nesting depth of ``text`` (``_scan_json_depth``), > ``limit`` once past it."""
    return _scan_json_depth(text, limit)[0]


class _Refused(ValueError):
    """Valid JSON that the service will not read (a number too long or too large)."""


def parse_json_body(raw: bytes) -> Any:
    """The JSON value of a request body (an empty body is ``{}``), or ``InvalidBody`` naming
    what is wrong. Whatever the bytes, nothing else is raised (no RecursionError, no huge-int
    error): the body must be UTF-8 JSON (RFC 8259, section 8.1) without ``NaN``/``Infinity``,
    without a name given twice in one object, nested at most ``MAX_JSON_DEPTH`` deep, with
    numbers of at most ``MAX_NUMBER_CHARS`` characters that are finite as doubles. The size
    limit (413) is the reader's (``read_body``), before this."""
    def refuse_constant(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f"field {key[:50]!r} given twice")
            seen[key] = value
        return seen

    def check_length(token: str) -> None:
        if len(token) > MAX_NUMBER_CHARS:
            raise _Refused(f"body holds a number of {len(token)} characters "
                           f"({token[:20]}...); at most {MAX_NUMBER_CHARS} are read")

    def bounded_int(token: str) -> int:
        check_length(token)
        return int(token)

    def bounded_float(token: str) -> float:
        check_length(token)
        value = float(token)
        if not math.isfinite(value):
            raise _Refused(f"body holds the number {token}, beyond the range of a double "
                           "(about 1.8e308)")
        return value

    def invalid(why: str) -> InvalidBody:
        return InvalidBody([{"loc": ["body"], "msg": f"body is not valid JSON: {why}"}])

    try:
        text = raw.decode("utf-8") if raw else "{}"
    except UnicodeDecodeError as exc:
        raise invalid(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    depth = _json_depth(text, MAX_JSON_DEPTH)
    if depth > MAX_JSON_DEPTH:
        raise InvalidBody([{"loc": ["body"], "msg": (
            f"body nests arrays or objects more than {MAX_JSON_DEPTH} deep")}])
    try:
        return json.loads(text, parse_constant=refuse_constant, object_pairs_hook=no_duplicates,
                          parse_int=bounded_int, parse_float=bounded_float)
    except _Refused as exc:
        raise InvalidBody([{"loc": ["body"], "msg": str(exc)}]) from None
    except (ValueError, RecursionError) as exc:  # RecursionError: belt and braces
        raise invalid(str(exc)[:200]) from None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading anything; a body
    without one (chunked) is read only up to the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)

