"""Argument checks shared by every config object.

Each check raises ``ValueError`` with the same shape of message: the parameter's name, the
allowed range and the value that was given, e.g. ``max_attempts must be an integer >= 1, got 0``.
A reader who moves a slider too far should learn from the message what the allowed range is.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Collection, Mapping
from fractions import Fraction
from numbers import Integral, Real
from typing import TypeVar

__all__ = [
    "check_choice",
    "check_config",
    "check_int",
    "check_real",
    "decimal_fraction",
    "refuse_renamed",
    "renamed_fields",
]

T = TypeVar("T")


def _describe(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts) if parts else "finite"


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """Return ``value`` as a float if it is a real number in the range, else raise ValueError."""
    allowed = _describe(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number {allowed}, got {value!r}")
    x = float(value)
    if math.isnan(x) or (math.isinf(x) and not allow_inf):
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    too_low = low is not None and (x <= low if low_open else x < low)
    too_high = high is not None and (x >= high if high_open else x > high)
    if too_low or too_high:
        raise ValueError(f"{name} must be a number {allowed}, got {value!r}")
    return x


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer in ``[low, high]``, else raise ValueError."""
    allowed = _describe(low, high, False, False)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    n = int(value)
    if (low is not None and n < low) or (high is not None and n > high):
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    return n


def check_choice(name: str, value: object, choices: Collection[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError listing them."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}, got {value!r}")
    return value  # type: ignore[return-value]


def decimal_fraction(value: float) -> Fraction:
    """The exact fraction of the decimal a user typed for ``value``: ``0.55`` gives 11/20.

    ``repr`` of a float is the shortest decimal that reads back as the same float, which is what
    was typed (up to 15 significant digits). Comparing a count with this fraction by integer
    cross-multiplication is exact, where ``count >= 0.55 * n`` in floating point is not
    (``0.55 * 100 == 55.00000000000001``).
    """
    return Fraction(repr(float(value)))


def check_config(name: str, value: object, description: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a config object: an instance (not a class) with
    a callable ``build()``, as every seam's config is (``description`` says what was wanted,
    e.g. ``"a config with build(), such as Fifo()"``)."""
    if isinstance(value, type) or not callable(getattr(value, "build", None)):
        raise ValueError(f"{name} must be {description}, got {value!r}")


def refuse_renamed(where: str, given: Mapping[str, object], renamed: Mapping[str, str]) -> None:
    """Raise ``ValueError`` if ``given`` (keyword arguments) uses a name that was renamed: the
    message names the old name, ``where`` it was given and what to write now (``renamed``:
    old name -> the new spelling), e.g. ``Scenario(servers=...) is no longer a parameter: write
    server=ServerConfig(workers=...)``. Any other unknown name raises ``TypeError`` as Python
    does for an unexpected keyword."""
    for name in given:
        if name in renamed:
            raise ValueError(f"{where}({name}=...) is no longer a parameter: write "
                             f"{renamed[name]}")
    if given:
        raise TypeError(f"{where}() got an unexpected keyword argument {next(iter(given))!r}")


def renamed_fields(renamed: Mapping[str, str]) -> Callable[[type[T]], type[T]]:
    """A class decorator for a keyword-only dataclass: constructing it (or ``replace``-ing it)
    with a renamed field raises ``refuse_renamed``'s ``ValueError``, which says what to write
    instead, rather than Python's bare ``TypeError``."""

    def decorate(cls: type[T]) -> type[T]:
        init = cls.__init__
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

        @functools.wraps(init)
        def __init__(self: T, *args: object, **kwargs: object) -> None:
            unknown = {name: value for name, value in kwargs.items() if name not in known}
            if unknown:
                refuse_renamed(cls.__name__, unknown, renamed)
            init(self, *args, **kwargs)

        cls.__init__ = __init__  # type: ignore[method-assign,assignment]
        return cls

    return decorate
