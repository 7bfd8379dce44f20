"""How far a long call has got, for the person waiting: in a Jupyter kernel one line of text
rewritten in place; anywhere else tqdm's bar on stderr.

Not tqdm's notebook bar: that one is a widget. A notebook executed by a script (nbclient,
nbconvert, ``make notebooks``) keeps the bar as first shown, stuck at ``0%| 0/510`` above the
finished table, and once the bar has closed itself a reload of the page finds its model gone
("Error displaying widget: model not found"). Here a display handle replaces plain text, so the
saved output is the last line, which ends in ``done`` (or ``interrupted``, or ``failed``:
a run stopped by the kernel's stop button must not look finished), and nothing needs a widget
model.
"""

from __future__ import annotations

import asyncio
import sys
import time
from types import TracebackType
from typing import Any

__all__ = ["ENDINGS", "Progress", "ending_for", "in_kernel"]

#: How a progress line can end.
ENDINGS = ("done", "interrupted", "failed")


def ending_for(error: BaseException | None, *, failed: str = "failed") -> str:
    """The ending for work that stopped with ``error``: ``done`` for none, ``interrupted`` for
    ``KeyboardInterrupt`` or a cancellation (``asyncio.CancelledError``), else ``failed``."""
    if error is None:
        return "done"
    if isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)):
        return "interrupted"
    return failed


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
    finished, in how long, and how the work ended: ``done``, or ``interrupted`` when it was
    stopped by ``KeyboardInterrupt`` (the kernel's stop button) or cancelled, or ``failed``
    when an error ended it. ``close(ending)`` says it; without one, ``close()`` says
    ``interrupted`` if it runs while an interrupt or cancellation unwinds (a ``finally:``
    clause), else ``done``. As a context manager (``with Progress(...) as bar:``) it closes
    itself with the ending the block's exception gives. Safe to call from the thread that does
    the work.
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

    def close(self, ending: str | None = None) -> None:
        """Show the last line, ending in ``ending`` (one of ``ENDINGS``; None: ``interrupted``
        while an interrupt or cancellation is being handled, else ``done``)."""
        if ending is None:
            ending = ending_for(sys.exc_info()[1], failed="done")
        if ending not in ENDINGS:
            raise ValueError(f"ending must be one of {ENDINGS}, got {ending!r}")
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            if ending != "done":  # the bar stays, saying how far it got and why it stopped
                self._bar.leave = True
                self._bar.set_postfix_str(ending, refresh=False)
            self._bar.close()
        elif self._handle is not None:
            self._handle.update(self._raw(self.final_line(ending)), raw=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(ending_for(error))

    def final_line(self, ending: str = "done") -> str:
        elapsed = time.monotonic() - self.started
        count = f"{self.n}" if self.total is None else f"{self.n}/{self.total}"
        return f"{self.desc}: {count} {self.unit} in {elapsed:.1f} s, {ending}"

    def _meter(self) -> str:
        from tqdm import tqdm

        return tqdm.format_meter(self.n, self.total,  # type: ignore[arg-type]  # None: no total
                                 time.monotonic() - self.started,
                                 prefix=self.desc, unit=self.unit)

    @staticmethod
    def _raw(line: str) -> dict[str, str]:
        return {"text/plain": line}
