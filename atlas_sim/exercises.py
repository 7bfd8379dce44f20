"""Self-checking exercises: a reader writes an answer, a check cell says whether it holds."""

from __future__ import annotations

import math
from dataclasses import dataclass
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


def check(answer: Any, expected: Any, *, rel: float = 0.0, hint: str = "") -> Check:
    """Compare a reader's ``answer`` with ``expected``.

    Numbers match within a relative tolerance ``rel``; anything else must be equal. An answer
    left as ``...`` (Ellipsis) is "not answered yet", never wrong.
    """
    if answer is ... or answer is None:
        return Check(False, "Not answered yet: replace ... in the answer cell above with your "
                            "answer, then run both cells.")
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        try:
            ok = math.isclose(float(answer), float(expected), rel_tol=rel, abs_tol=1e-9)
        except (TypeError, ValueError):
            ok = False
    else:
        ok = answer == expected
    if ok:
        return Check(True, f"Right: {answer!r}.")
    return Check(False, f"Not yet: {answer!r} does not hold." + (f" Hint: {hint}" if hint else ""))
