"""Progress: a text line rewritten in place in a kernel, ending in "done"; tqdm's bar elsewhere."""

from __future__ import annotations

import asyncio
import contextlib

import IPython.display
import pytest

from atlas_sim import progress
from atlas_sim.progress import Progress


class Handle:
    def __init__(self, shown: list[str]) -> None:
        self.shown = shown

    def update(self, data, raw=False):
        assert raw
        self.shown.append(data["text/plain"])


@pytest.fixture
def kernel(monkeypatch):
    shown: list[str] = []

    def display(data, raw=False, display_id=False):
        assert raw and display_id
        shown.append(data["text/plain"])
        return Handle(shown)

    monkeypatch.setattr(progress, "in_kernel", lambda: True)
    monkeypatch.setattr(IPython.display, "display", display)
    return shown


def test_in_a_kernel_the_line_ends_saying_done_and_is_not_rewritten_on_every_step(kernel):
    bar = Progress(500, desc="requests", unit="req", interval=60.0)
    for _ in range(500):
        bar.update()
    bar.close()
    bar.close()  # once only
    assert kernel[0].startswith("requests:   0%|")
    assert len(kernel) == 2 and kernel[-1].startswith("requests: 500/500 req in ")
    assert kernel[-1].endswith(", done")


def test_without_a_total_it_counts_and_still_ends_saying_done(kernel):
    bar = Progress(None, desc="requests", unit="req", interval=0.0)  # a closed loop's
    bar.update(3)
    bar.close()
    assert kernel[0].startswith("requests: 0req") and "%" not in kernel[0]
    assert kernel[-1].startswith("requests: 3 req in ") and kernel[-1].endswith(", done")


def test_disabled_shows_nothing(kernel):
    bar = Progress(3, desc="sweep", unit="run", enabled=False)
    bar.update()
    bar.close()
    assert kernel == []


def test_outside_a_kernel_it_is_tqdm_on_stderr(capsys):
    assert not progress.in_kernel()
    bar = Progress(2, desc="sweep", unit="run", interval=0.0)
    bar.update(2)
    bar.close()
    assert "sweep" in capsys.readouterr().err


def test_a_line_closed_while_an_interrupt_unwinds_says_interrupted(kernel):
    bar = Progress(10, desc="requests", unit="req", interval=60.0)
    with pytest.raises(KeyboardInterrupt):
        try:
            bar.update(3)
            raise KeyboardInterrupt
        finally:
            bar.close()  # as a caller's finally: clause does
    assert kernel[-1].startswith("requests: 3/10 req in ")
    assert kernel[-1].endswith(", interrupted")


@pytest.mark.parametrize(("error", "ending"), [
    (None, "done"), (KeyboardInterrupt, "interrupted"), (asyncio.CancelledError, "interrupted"),
    (ValueError, "failed")])
def test_as_a_context_manager_the_line_ends_as_the_work_did(kernel, error, ending):
    with contextlib.suppress(BaseException), Progress(2, desc="sweep", unit="points") as bar:
        bar.update()
        if error is not None:
            raise error
    assert kernel[-1].startswith("sweep: 1/2 points in ") and kernel[-1].endswith(f", {ending}")
    assert progress.ending_for(None if error is None else error()) == ending


def test_an_unknown_ending_is_refused(kernel):
    with pytest.raises(ValueError, match="ending must be one of"):
        Progress(1, desc="x", unit="y").close("finished")


def test_outside_a_kernel_tqdm_says_interrupted_too(capsys):
    bar = Progress(4, desc="sweep", unit="run", interval=0.0)
    bar.update(1)
    bar.close("interrupted")
    assert "interrupted" in capsys.readouterr().err
