"""Self-checking exercises: a reader writes an answer, a check cell says whether it holds.

A right answer passes in any reasonable form, and an answer that cannot be read is told which
form is expected instead of being called wrong:

* a number (``expected`` is a number): an int or float, NumPy's too, or a string such as
  ``"0.0016"``, ``"0.16%"``, ``"1/625"``, ``"19 s"``, ``"330 ms"``, ``"t = 19"``, ``"900,000"``,
  ``"900k"``, ``"7.07M"`` or ``"about 1.4"`` (a percentage is divided by 100, milliseconds by
  1000; ``k``, ``M`` and ``G``, or the words thousand, million and billion, multiply by 10^3,
  10^6 and 10^9; thousands are separated by commas or spaces, in groups of three). With
  ``unit``, the answer may also end in that unit (``"1.4 a day"``, ``"900k inserts/s"``). A
  number is compared within ``rel``, and also to the figures the reader typed: ``"1.4"`` stands
  for anything from 1.35 to 1.45, so it passes for 1.37 however small ``rel`` is. That
  allowance is bounded: an answer whose figures cannot tell a right answer from a wrong one
  (``"1"`` for 1.37, whose rounding spans 0.5 to 1.5; anything coarser than 5% of the answer)
  is asked for more figures, neither passed nor called wrong. An expected integer (a count) is
  matched exactly;
* a name (``expected`` is a string): compared without regard to case, surrounding spaces,
  quotes or brackets, so ``"Full"`` and ``" full "`` are ``"full"``; with ``choices``, an
  answer naming exactly one choice and otherwise only filler words (``"full jitter"``) is that
  choice, and an answer naming none is "cannot be read", with the choices listed;
* a set of names (``expected`` is a set): a set, list, tuple or any other collection of
  strings, or one string of names separated by commas, compared as unordered collections of
  names read as above.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

__all__ = ["FIGURES_BOUND", "Check", "check"]

#: The coarsest rounding a typed answer may carry and still pass: half a unit in its last
#: figure, relative to the expected value. Two significant figures are always within it
#: ("1.0" spans 0.95 to 1.05: 5%); one figure seldom is.
FIGURES_BOUND = 0.05


@dataclass(frozen=True)
class Check:
    """The verdict of a check cell; shows as one line of text in a notebook."""

    ok: bool
    message: str

    def __repr__(self) -> str:
        return self.message

    def __bool__(self) -> bool:
        return self.ok


class _Unreadable(ValueError):
    """The answer is not in any form of the expected kind."""


_GROUPED = r"\d{1,3}(?:(?P<sep>[, \u00a0\u202f])\d{3})(?:(?P=sep)\d{3})*"  # 900,000 / 7 071 078
_NUMBER = re.compile(
    rf"""^(?:(?i:about|approx\.?|approximately|roughly|~|≈)\s*)?   # "about 1.4", "~1.4"
        (?:[tT]\s*=\s*)?                                # "t = 19", as the notebooks write times
        (?P<num>[-+]?(?:(?:{_GROUPED}|\d+)(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
        (?:\s*/\s*(?P<den>\d+(?:\.\d*)?|\.\d+))?        # "1/625"
        \s*(?P<scale>k|K|M|G|(?i:thousand|million|billion))?
        \s*(?P<percent>%)?
        \s*(?P<tail>.*?)\s*$""",
    re.VERBOSE,
)
_SCALES = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "thousand": 1e3, "million": 1e6,
           "billion": 1e9}
#: Unit spellings an answer may end with, by the unit a check declares, and the factor that
#: takes each to that unit. Without a declared unit, times in seconds (the notebooks' rule).
_SECONDS = {"s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
            "ms": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3,
            "µs": 1e-6, "us": 1e-6, "microsecond": 1e-6, "microseconds": 1e-6,
            "min": 60.0, "minute": 60.0, "minutes": 60.0}
_PER_SECOND = {"/s": 1.0, "/sec": 1.0, "per second": 1.0, "per s": 1.0, "a second": 1.0,
               "each second": 1.0, "per sec": 1.0, "/min": 1 / 60, "per minute": 1 / 60,
               "a minute": 1 / 60}
_PER_DAY = {"/day": 1.0, "/d": 1.0, "per day": 1.0, "a day": 1.0, "each day": 1.0,
            "/year": 1 / 365, "per year": 1 / 365, "a year": 1 / 365}
_UNITS: dict[str | None, dict[str, float]] = {None: _SECONDS, "s": _SECONDS,
                                              "/s": _PER_SECOND, "/day": _PER_DAY}
_EDGES = " \t\r\n\"'`()[]{}.,;:!"
#: Words an answer may add around a choice without changing it ("full jitter", "the budget").
_FILLER = frozenset({"jitter", "strategy", "fix", "the", "option", "answer", "is", "choice"})


def _number_form(unit: str | None) -> str:
    form = 'a number, e.g. 19, 0.05, "5%", "1/20", "900,000" or "7.07M" (M for million)'
    if unit in (None, "s"):
        return form + '; times in seconds, or with a unit: "19 s", "330 ms"'
    spelled = f'"1.2{next(iter(_UNITS[unit]))}"' if unit in _UNITS else f'"12 {unit}"'
    return form + f"; in {unit}, which may follow the number: {spelled}"


def _is_number(x: object) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _unit_factor(tail: str, unit: str | None) -> float:
    """The factor that takes a number followed by ``tail`` to ``unit`` (1 for no tail)."""
    text = " ".join(tail.casefold().split())
    if not text:
        return 1.0
    known = _UNITS.get(unit, {})
    if text in known:
        return known[text]
    if unit is not None and unit not in _UNITS and text in (unit.casefold(),
                                                            unit.casefold().rstrip("s")):
        return 1.0  # a unit the check names itself: "10 service times"
    # a noun before a rate: "1.4 disks a day", "900k inserts/s"
    noun = re.match(r"^[a-z][a-z-]*(?:\s+[a-z][a-z-]*)?\s*(?=/|per\b|a\b|each\b)", text)
    if noun and unit in ("/s", "/day") and text[noun.end():] in known:
        return known[text[noun.end():]]
    raise _Unreadable


def _read_number(answer: object, unit: str | None = None) -> tuple[float, float]:
    """The answer's value and half a unit in its last figure (0: exact, a fraction)."""
    if _is_number(answer):
        if isinstance(answer, Integral):
            return float(answer), 0.5
        value = float(answer)  # type: ignore[arg-type]
        if not math.isfinite(value):
            raise _Unreadable
        answer = repr(value)  # the shortest spelling of that float: what was typed, as a rule
    if not isinstance(answer, str):
        raise _Unreadable
    match = _NUMBER.match(answer.strip().strip("\"'`").strip().replace("_", ""))
    if not match:
        raise _Unreadable
    text = match["num"]
    if match["sep"]:
        text = text.replace(match["sep"], "")
    value = float(text)
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    half = 0.5 * 10.0 ** (int(exponent or 0) - decimals)
    if match["den"] is not None:
        den = float(match["den"])
        if den == 0:
            raise _Unreadable
        value, half = value / den, 0.0
    scale = match["scale"] or ""
    factor = _SCALES[scale if len(scale) == 1 else scale.lower()] if scale else 1.0
    if match["percent"]:
        factor /= 100
    factor *= _unit_factor(match["tail"], unit)
    return value * factor, half * factor


def _figures_needed(target: float, tolerance: float) -> int:
    """The fewest significant figures whose rounding pins ``target`` within ``tolerance``."""
    if target == 0:
        return 1
    lead = math.floor(math.log10(abs(target)))
    for figures in range(1, 16):
        if 0.5 * 10.0 ** (lead - figures + 1) <= tolerance:
            return figures
    return 16


def _compare_numbers(answer: object, expected: Real, rel: float,
                     unit: str | None) -> tuple[bool, str]:
    """Whether a number holds, and the verdict's wording ("" for a plain right or wrong)."""
    value, half = _read_number(answer, unit)
    target = float(expected)
    tolerance = max(rel * abs(target), 1e-9)
    error = abs(value - target)
    if error <= tolerance:
        return True, ""
    if isinstance(expected, Integral) or error > half * (1 + 1e-9):
        return False, ""
    bound = max(tolerance, FIGURES_BOUND * abs(target))
    if half <= bound:
        return True, "to the figures you gave"
    figures = _figures_needed(target, bound)
    return False, (f"Too few figures: {answer!r} could be a right answer rounded or a wrong "
                   f"one; give it to {figures} significant figures or more.")


def _norm(text: str) -> str:
    return " ".join(text.strip(_EDGES).casefold().split())


def _read_name(answer: object, choices: Collection[str] | None) -> str:
    if not isinstance(answer, str):
        raise _Unreadable
    name = _norm(answer)
    if choices is None:
        if not name:
            raise _Unreadable
        return name
    known = {_norm(c): c for c in choices}
    if name in known:
        return name
    words = set(re.findall(r"[\w-]+", name))
    named = {n for n in known if n in words}
    if len(named) == 1 and not words - named - _FILLER:
        return named.pop()
    raise _Unreadable


def _read_names(answer: object, choices: Collection[str] | None) -> frozenset[str]:
    if isinstance(answer, str):
        parts: Iterable[object] = [p for p in re.split(r",|;|\band\b", answer) if p.strip()]
    elif isinstance(answer, Iterable) and not isinstance(answer, (bytes, Mapping)):
        parts = list(answer)
    else:
        raise _Unreadable
    return frozenset(_read_name(p, choices) for p in parts)


def _form(expected: Any, choices: Collection[str] | None, unit: str | None) -> str:
    listed = ", ".join(repr(c) for c in choices) if choices else ""
    if isinstance(expected, (set, frozenset)):
        example = sorted(choices)[0] if choices else "name"
        return (f'the names as a set or a list of strings, e.g. {{"{example}"}}'
                + (f"; the names are {listed}" if choices else ""))
    if isinstance(expected, str):
        return f"one of {listed}, as a string" if choices else "a string"
    return _number_form(unit)


def check(answer: Any, expected: Any, *, rel: float = 0.0, hint: str = "",
          choices: Collection[str] | None = None, unit: str | None = None) -> Check:
    """Compare a reader's ``answer`` with ``expected`` (see the module docstring for the forms
    each kind of answer may take).

    Numbers match within a relative tolerance ``rel`` or to the figures typed (bounded by
    ``FIGURES_BOUND``); ``unit`` names the unit of a numeric answer (``"s"``, ``"/s"``,
    ``"/day"`` or a word such as ``"service times"``), which the answer may carry. Names and
    sets of names as described above, ``choices`` listing the names that exist. An answer
    left as ``...`` (Ellipsis) is "not answered yet", never wrong; one that cannot be read in
    the expected form is told that form, never the wrong-answer ``hint``; one typed with too
    few figures to judge is asked for more.
    """
    if answer is ... or answer is None:
        return Check(False, "Not answered yet: replace ... in the answer cell above with your "
                            "answer, then run both cells.")
    note = ""
    try:
        if isinstance(expected, (set, frozenset)):
            ok = _read_names(answer, choices) == frozenset(_norm(str(e)) for e in expected)
        elif isinstance(expected, str):
            ok = _read_name(answer, choices) == _norm(expected)
        elif _is_number(expected):
            ok, note = _compare_numbers(answer, expected, rel, unit)
        else:
            ok = answer == expected
    except _Unreadable:
        return Check(False, f"Cannot read {answer!r}: give {_form(expected, choices, unit)}.")
    if ok:
        return Check(True, f"Right: {answer!r}" + (f", {note}." if note else "."))
    if note:
        return Check(False, note)
    return Check(False, f"Not yet: {answer!r} does not hold." + (f" Hint: {hint}" if hint else ""))
