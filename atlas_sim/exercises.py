"""Self-checking exercises: a reader writes an answer, a check cell says whether it holds.

A right answer passes in any reasonable form, and an answer that cannot be read is told which
form is expected instead of being called wrong:

* a number (``expected`` is a number): an int or float, NumPy's too, or a string such as
  ``"0.0016"``, ``"0.16%"``, ``"1/625"``, ``"19 s"``, ``"330 ms"`` or ``"t = 19"`` (a
  percentage is divided by 100, milliseconds by 1000); compared within ``rel``;
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
from numbers import Real
from typing import Any

__all__ = ["Check", "check"]


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


_NUMBER = re.compile(
    r"""^(?:t\s*=\s*)?                                   # "t = 19", as the notebooks write times
        (?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)
        (?:\s*/\s*(?P<den>\d+(?:\.\d*)?|\.\d+))?        # "1/625"
        \s*(?P<unit>%|ms|s|secs?|seconds?)?$""",
    re.IGNORECASE | re.VERBOSE,
)
_EDGES = " \t\r\n\"'`()[]{}.,;:!"
#: Words an answer may add around a choice without changing it ("full jitter", "the budget").
_FILLER = frozenset({"jitter", "strategy", "fix", "the", "option", "answer", "is", "choice"})
_NUMBER_FORM = ('a number, e.g. 19, 0.05, "5%" or "1/20" (times in seconds, or with a unit: '
                '"19 s", "330 ms")')


def _is_number(x: object) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _read_number(answer: object) -> float:
    if _is_number(answer):
        return float(answer)  # type: ignore[arg-type]
    if isinstance(answer, str):
        match = _NUMBER.match(answer.strip().strip("\"'`").strip().replace("_", ""))
        if match:
            value = float(match["num"])
            if match["den"] is not None:
                den = float(match["den"])
                if den == 0:
                    raise _Unreadable
                value /= den
            unit = (match["unit"] or "").lower()
            if unit == "%":
                value /= 100
            elif unit == "ms":
                value /= 1000
            return value
    raise _Unreadable


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


def _form(expected: Any, choices: Collection[str] | None) -> str:
    listed = ", ".join(repr(c) for c in choices) if choices else ""
    if isinstance(expected, (set, frozenset)):
        example = sorted(choices)[0] if choices else "name"
        return (f'the names as a set or a list of strings, e.g. {{"{example}"}}'
                + (f"; the names are {listed}" if choices else ""))
    if isinstance(expected, str):
        return f"one of {listed}, as a string" if choices else "a string"
    return _NUMBER_FORM


def check(answer: Any, expected: Any, *, rel: float = 0.0, hint: str = "",
          choices: Collection[str] | None = None) -> Check:
    """Compare a reader's ``answer`` with ``expected`` (see the module docstring for the forms
    each kind of answer may take).

    Numbers match within a relative tolerance ``rel``; names and sets of names as described
    above, ``choices`` listing the names that exist. An answer left as ``...`` (Ellipsis) is
    "not answered yet", never wrong; one that cannot be read in the expected form is told that
    form, never the wrong-answer ``hint``.
    """
    if answer is ... or answer is None:
        return Check(False, "Not answered yet: replace ... in the answer cell above with your "
                            "answer, then run both cells.")
    try:
        if isinstance(expected, (set, frozenset)):
            ok = _read_names(answer, choices) == frozenset(_norm(str(e)) for e in expected)
        elif isinstance(expected, str):
            ok = _read_name(answer, choices) == _norm(expected)
        elif _is_number(expected):
            ok = math.isclose(_read_number(answer), float(expected), rel_tol=rel, abs_tol=1e-9)
        else:
            ok = answer == expected
    except _Unreadable:
        return Check(False, f"Cannot read {answer!r}: give {_form(expected, choices)}.")
    if ok:
        return Check(True, f"Right: {answer!r}.")
    return Check(False, f"Not yet: {answer!r} does not hold." + (f" Hint: {hint}" if hint else ""))
