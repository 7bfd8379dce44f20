"""Every notebook as a reader uses it: opened in JupyterLab in a real (headless) Chromium, run
from the Run menu, every widget rendered, every slider moved with the keyboard and answered with
a new figure and new numbers, the live service stopped at the end with nothing left behind.

Screenshots (each panel before and after its sliders moved, and the notebook's first screen)
go to the artefacts folder; timings to its ``timings.json`` (per slider move: key press to the
new figure and table as the test saw it and by the page's own clock, and the kernel's share
from the panels' draw log). Timings are recorded, not asserted.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.browser.conftest import NOTEBOOKS, PANEL_LOG

# The narrowest slider track a mouse can use: a reader drags along it to pick a value. (A long
# description once left tracks 0 px wide at JupyterLab's default width: only the ends could be
# reached, by a click.)
MIN_TRACK_PX = 120
# Once the notebook is loaded and its kernel idle, how long JupyterLab is given to mark the
# notebook modified, before the test looks (it writes in the kernelspec and language_info it
# gets from the kernel, within about a second).
SETTLE_SECONDS = 2.0

PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's text form: "requests:  40%|####      | 204/510"

# Sliders that act only once another control is set, as the notebook's prose tells the reader:
# slider label -> [(control label, value)], a string value picks a dropdown option.
SETTINGS_FIRST: dict[str, list[tuple[str, str | float]]] = {
    "window (rate mode)": [("mode", "failure_rate")],
    # 01: "set the errors during the burst to 0.3 and move token_ratio from 0.05 to 1.0"
    "token ratio": [("errors during burst", 0.3)],
}


def committed_widget_count(notebook: Path) -> int:
    """How many widgets the committed notebook shows at the end of a run: the page must render
    as many. Progress bars are left out: they close themselves when done (``leave=False``)."""
    cells = json.loads(notebook.read_text())["cells"]
    views = [output["data"] for cell in cells if cell["cell_type"] == "code"
             for output in cell.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in output.get("data", {})]
    return sum(not PROGRESS_BAR.search("".join(view.get("text/plain", ""))) for view in views)


def kernel_draws(artefacts: Path) -> list[dict[str, object]]:
    """Every panel draw the kernels have logged so far (``PANEL_LOG``)."""
    log = artefacts / PANEL_LOG
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def last_kernel_draw(artefacts: Path, *, after: int, timeout: float = 2.0) -> dict[str, object]:
    """The last draw logged after the first ``after`` ones (the kernel writes it just after
    sending the figure, so it is there once the page shows it), or {} if none came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        draws = kernel_draws(artefacts)
        if len(draws) > after:
            return draws[-1]
        time.sleep(0.02)
    return {}


def starts_the_service(notebook: Path) -> bool:
    return "live.start_service(" in notebook.read_text()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_a_reader_runs_the_notebook_and_moves_every_slider(notebook, lab, browser, artefacts,
                                                           timings):
    from tests.browser.jupyterlab import NotebookPage

    shots = artefacts / notebook.stem
    shots.mkdir()
    page = browser.new_page()

    def open_and_run_all() -> NotebookPage:
        started = time.perf_counter()
        nb = NotebookPage(page, lab.url, lab.token, notebook.name)
        nb.wait_for_idle_kernel()
        opened = time.perf_counter()
        nb.wait_until_loaded()
        time.sleep(SETTLE_SECONDS)  # JupyterLab writes the kernel's spec in once it is up
        # Opening changes nothing: what was built is what JupyterLab would save.
        assert not nb.is_dirty(), f"{notebook.name} shows as modified right after opening"
        nb.clear_outputs()  # the copy carries the committed outputs: judge only this run's
        nb.run_all()
        ran = time.perf_counter()
        timings.record(notebook.stem, open_to_idle=opened - started, run_all=ran - opened)
        page.screenshot(path=shots / "00-first-screen.png")

        assert not nb.errors(), f"{notebook.name}: a cell failed:\n" + "\n".join(nb.errors())
        assert not nb.unrun(), f"{notebook.name}: cells did not run: {nb.unrun()}"
        nb.wait_for_widgets(committed_widget_count(notebook))
        return nb

    try:
        try:
            nb = open_and_run_all()
        except AssertionError:
            # Seen once in five CI runs, on the first notebook of a fresh clone: the page lost
            # its kernel connection after Run All (status "Connecting", JupyterLab asking to
            # select a kernel), so no widget could render. Only that is tried again, once,
            # with a new kernel, and it is recorded in timings.json and a screenshot.
            if not page.locator(".jp-Dialog", has_text="Select Kernel").is_visible():
                raise
            page.screenshot(path=shots / "kernel-connection-lost.png")
            timings.record(notebook.stem, kernel_connection_lost=True)
            page.close()
            lab.shut_down_kernels()
            page = browser.new_page()
            nb = open_and_run_all()
        assert not nb.widget_failures(), nb.widget_failures()

        panels = nb.panels()
        assert panels, f"{notebook.name} shows no slider panel"
        narrow = {f"panel {k} ({panel.title()}): {label!r}": round(width)
                  for k, panel in enumerate(panels, start=1)
                  for label, width in panel.track_widths().items() if width < MIN_TRACK_PX}
        timings.record(notebook.stem, narrowest_track_px=min(
            (w for panel in panels for w in panel.track_widths().values()), default=None))
        assert not narrow, (f"{notebook.name}: slider tracks narrower than {MIN_TRACK_PX} px "
                            f"(px): {narrow}")
        moves: list[dict[str, object]] = []
        keys: dict[str, list[str]] = {}
        for k, panel in enumerate(panels, start=1):
            panel.root.scroll_into_view_if_needed()
            panel.root.screenshot(path=shots / f"panel{k}-before.png")
            title = panel.title()
            for label in panel.slider_labels():
                before = panel.reset()
                for other, value in SETTINGS_FIRST.get(label, ()):
                    before = (panel.choose(other, value) if isinstance(value, str)
                              else panel.set_slider(other, value))
                drawn = len(kernel_draws(artefacts))
                try:
                    key, seconds, in_page = panel.move_until_it_changes(label, before)
                except AssertionError as err:
                    raise AssertionError(f"{notebook.name}, panel {k}: {err}") from None
                steps = last_kernel_draw(artefacts, after=drawn)
                moves.append({"panel": f"panel{k}", "title": title, "slider": label,
                              "key": key, "seconds": seconds, "in_page": in_page,
                              "kernel": steps.get("total"), "kernel_steps": steps})
                keys.setdefault(key, []).append(f"{notebook.stem} panel {k}: {label}")
            panel.root.screenshot(path=shots / f"panel{k}-after.png")
        timings.record(notebook.stem, slider_moves_each=moves, keys=keys)

        if starts_the_service(notebook):
            # the measured numbers: a table that sets the live run beside the simulated one
            measured = nb.panel.locator(".jp-OutputArea-output table").filter(has_text="live")
            assert measured.count() >= 1, f"{notebook.name} shows no table of live numbers"
            assert re.search(r"\d\.\d", measured.first.text_content() or "")
            last = nb.code_cells().last
            last.scroll_into_view_if_needed()
            last.screenshot(path=shots / "last-cell.png")
            assert "stopped); still running in this kernel: nothing" in (last.text_content() or "")
    except BaseException:
        page.screenshot(path=shots / "failure.png")  # what the page showed when it failed
        raise
    finally:
        page.close()
        lab.shut_down_kernels()
