"""How far a long call has got, for the person waiting: in a Jupyter kernel one line of text
rewritten in place; anywhere else tqdm's bar on stderr.

Not tqdm's notebook bar: that one is a widget. A notebook executed by a script (nbclient,
nbconvert, ``make notebooks``) keeps the bar as first shown, stuck at ``0%| 0/510`` above the
finished table, and once the bar has closed itself a reload of the page finds its model gone
("Error displaying widget: model not found"). Here a display handle replaces plain text, so the
saved output is the last line, which ends in ``done``, and nothing needs a widget model.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress", "in_kernel"]


def in_kernel() -> bool:
    """True in a Jupyter kernel (IPython with a kernel attached), False in a terminal or a
    plain interpreter. IPython is not imported here: a kernel has always imported it."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


class Progress:
    """``total`` steps of work (None: not known in advance), counted with ``update()`` and
    ended with ``close()``.

    In a kernel the line is rewritten at most every ``interval`` seconds (each rewrite is one
    message to the front end) and once more on ``close()``, when it says how many steps
    finished, in how long, and ``done``. Safe to call from the thread that does the work.
    """

    def __init__(self, total: int | None, *, desc: str, unit: str, enabled: bool = True,
                 interval: float = 0.5) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n = 0
        self.started = self._shown_at = time.monotonic()
        self._handle: Any = None
        self._bar: Any = None
        self._closed = not enabled
        if not enabled:
            return
        if in_kernel():
            from IPython.display import display

            self._handle = display(self._raw(self._meter()), raw=True, display_id=True)
        else:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def update(self, n: int = 1) -> None:
        if self._closed:
            return
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._handle is not None and time.monotonic() - self._shown_at >= self.interval:
            self._shown_at = time.monotonic()
            self._handle.update(self._raw(self._meter()), raw=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._handle is not None:
            self._handle.update(self._raw(self.final_line()), raw=True)

    def final_line(self) -> str:
        elapsed = time.monotonic() - self.started
        count = f"{self.n}" if self.total is None else f"{self.n}/{self.total}"
        return f"{self.desc}: {count} {self.unit} in {elapsed:.1f} s, done"

    def _meter(self) -> str:
        from tqdm import tqdm

        return tqdm.format_meter(self.n, self.total,  # type: ignore[arg-type]  # None: no total
                                 time.monotonic() - self.started,
                                 prefix=self.desc, unit=self.unit)

    @staticmethod
    def _raw(line: str) -> dict[str, str]:
        return {"text/plain": line}
