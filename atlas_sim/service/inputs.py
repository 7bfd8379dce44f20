"""What a request's input is: the ``X-Atlas-Input`` header (``parse_input``), and the crash a
bad input causes (``BadInput``, the ``bad_input_rate`` fault).

``X-Atlas-Input`` is a number in [0, 1), or absent; anything else (not a number, NaN, outside
the range, the header twice) is the client's error, 400 naming the header and the range, with
or without a bad-input fault (``ServiceState.check_input``).
"""

from __future__ import annotations

import re

__all__ = ["INPUT_HEADER", "BadInput", "parse_input"]

#: The header that carries what a request's input is, as a number in [0, 1)
#: (``workload.request_inputs``); the load generator sends it when a fault needs it.
INPUT_HEADER = "x-atlas-input"
#: A decimal number as ``repr(float)`` writes it (and people do): no ``nan``, ``inf``, ``0x``,
#: underscores or spaces inside, which ``float()`` would also take.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_MAX_INPUT_CHARS = 64


def parse_input(values: list[str]) -> float | None:
    """The input a request carries, from its ``X-Atlas-Input`` fields (``values``: each field's
    value, in order): a decimal number in [0, 1) (``workload.request_inputs``), or None when
    there is no such field (a good input).

    Raises ValueError naming the header and the range for anything else: two fields, not a
    decimal number (``n/a``, ``nan``, ``inf``), or a number outside [0, 1).
    """
    if not values:
        return None
    allowed = "one decimal number in [0, 1)"
    if len(values) > 1:
        raise ValueError(f"X-Atlas-Input given {len(values)} times; send {allowed}")
    text = values[0].strip(" \t")
    if len(text) > _MAX_INPUT_CHARS or _DECIMAL.fullmatch(text) is None:
        raise ValueError(f"X-Atlas-Input must be {allowed}, got {values[0][:_MAX_INPUT_CHARS]!r}")
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"X-Atlas-Input must be {allowed}, got {text}")
    return value


class BadInput(RuntimeError):
    """The handler's bug: it dies on a bad input (``bad_input_rate``). Left unhandled on
    purpose, so that the service answers and logs it as any crash (``ErrorHandlingMiddleware``:
    500, one log line with the traceback)."""
