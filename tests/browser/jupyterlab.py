"""What a reader does in JupyterLab, as Playwright steps: open a notebook, run all from the Run
menu, wait for the kernel, find the slider panels, move a slider with the keyboard.

Selectors are JupyterLab 4's and ipywidgets 8's class names (``jp-*``, ``widget-*``,
``jupyter-widgets``) and the ``role="slider"`` of ipywidgets' slider handles. Text is read with
``textContent``, not ``innerText``: JupyterLab may skip rendering cells that are out of view, and
``innerText`` of an unrendered element is empty.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from playwright.sync_api import Locator, Page

ERROR_MARK = "Traceback (most recent call last)"
RAN = re.compile(r"\[\d+\]:")  # the input prompt of a cell that has run
WIDGET_FAILURES = ("Loading widget", "Error displaying widget", "model not found")


class NotebookPage:
    """One notebook open in JupyterLab."""

    def __init__(self, page: Page, url: str, token: str, name: str) -> None:
        self.page, self.name = page, name
        # ?reset: a fresh workspace, so that notebooks opened by earlier tests stay closed
        page.goto(f"{url}/lab/tree/{name}?reset&token={token}")
        # everything below is looked up inside this notebook's own (visible) panel
        self.panel = page.locator(".jp-NotebookPanel").filter(visible=True)
        self.panel.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)

    # -- the kernel ------------------------------------------------------------------------

    def kernel_status(self) -> str:
        """The kernel's state as the notebook's status indicator shows it ("idle", "busy",
        "starting", ...)."""
        indicator = self.page.locator(".jp-Notebook-ExecutionIndicator").first
        return indicator.get_attribute("data-status") or ""

    def wait_for_idle_kernel(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            status = self.kernel_status()
            if status == "idle":
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: the kernel is {status!r} after {timeout} s")

    # -- running ---------------------------------------------------------------------------

    def menu(self, menu: str, item: str) -> None:
        """Choose ``item`` from the menu bar's ``menu``, as a reader does."""
        self.page.locator(".lm-MenuBar-item", has_text=menu).first.click()
        self.page.locator(".lm-Menu-item", has_text=item).first.click()

    def clear_outputs(self) -> None:
        """Edit > Clear Outputs of All Cells: what follows sees only this run's outputs.
        (Tried up to three times: a click in the first moments after the page loads can land
        before JupyterLab has wired its menus.)"""
        outputs = self.panel.locator(".jp-OutputArea-output")
        for _ in range(3):
            self.menu("Edit", "Clear Outputs of All Cells")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if outputs.count() == 0:
                    return
                time.sleep(0.1)
            self.page.keyboard.press("Escape")  # close a menu left open
        raise AssertionError(f"{self.name}: {outputs.count()} outputs left after clearing")

    def run_all(self, timeout: float = 600) -> None:
        """Run > Run All Cells, then wait until every code cell has run or one has failed.
        (The menu is tried again if no cell has started within 15 s.)"""
        for _ in range(3):
            self.menu("Run", "Run All Cells")
            started = time.monotonic() + 15
            while time.monotonic() < started and all(p == "[ ]:" for p in self.prompts()):
                time.sleep(0.1)
            if not all(p == "[ ]:" for p in self.prompts()):
                break
            self.page.keyboard.press("Escape")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.errors() or (self.prompts() and not self.unrun()):
                return
            time.sleep(0.25)
        raise AssertionError(f"{self.name}: cells still waiting after {timeout} s: "
                             f"{self.unrun()}")

    def prompts(self) -> list[str]:
        """Every code cell's input prompt: "[3]:" once run, "[*]:" while queued or running."""
        texts = self.panel.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()
        return [t.strip() for t in texts]

    def unrun(self) -> list[str]:
        """The prompts of code cells that have not run: anything but "[<number>]:"."""
        return [p for p in self.prompts() if not RAN.fullmatch(p)]

    def errors(self) -> list[str]:
        """The text of every output that shows a Python traceback."""
        outputs = self.panel.locator(".jp-OutputArea-output").all_text_contents()
        return [t for t in outputs if ERROR_MARK in t]

    def wait_until_loaded(self, timeout: float = 120) -> None:
        """Wait until the notebook is on screen with its kernel: code cells rendered in this
        panel, and the status bar past "Initializing" (while a large notebook loads, the page
        can show an earlier render's cells and an idle indicator)."""
        status = self.page.locator("#jp-main-statusbar")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = status.text_content() if status.count() else ""
            if (self.code_cells().count() and "Initializing" not in (text or "")
                    and "No Kernel" not in (text or "") and self.kernel_status() == "idle"):
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: not loaded after {timeout} s; status bar: "
                             f"{status.text_content() if status.count() else ''!r}")

    def is_dirty(self) -> bool:
        """Whether JupyterLab marks this notebook modified (its tab's ``jp-mod-dirty``)."""
        tab = self.page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
        return "jp-mod-dirty" in (tab.first.get_attribute("class") or "")

    def code_cells(self) -> Locator:
        return self.panel.locator(".jp-CodeCell")

    # -- widgets ---------------------------------------------------------------------------

    def widget_outputs(self) -> Locator:
        """Every output that holds a rendered widget."""
        return self.panel.locator(".jp-OutputArea-output").filter(
            has=self.page.locator(".jupyter-widgets"))

    def wait_for_widgets(self, expected: int, timeout: float = 60) -> None:
        """Wait until ``expected`` widgets have rendered; fail naming how many did."""
        deadline = time.monotonic() + timeout
        while (found := self.widget_outputs().count()) < expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {found} of {expected} widgets rendered "
                                     f"after {timeout} s; {self.widget_failures()}")
            time.sleep(0.1)
        assert found == expected, f"{self.name}: {found} widgets rendered, expected {expected}"

    def widget_failures(self) -> list[str]:
        """Outputs where a widget did not render: its placeholder or error text."""
        texts = self.panel.locator(".jp-OutputArea-output").all_text_contents()
        return [t for t in texts if any(mark in t for mark in WIDGET_FAILURES)]

    def panels(self) -> list[Panel]:
        """Every rendered slider panel: a widget with sliders and an output area."""
        found = self.widget_outputs().filter(has=self.page.locator(".widget-output")).filter(
            has=self.page.locator(".widget-slider"))
        return [Panel(found.nth(i)) for i in range(found.count())]


@dataclass(frozen=True)
class Reading:
    """What a panel shows: its figure (a digest of the image) and its table's text."""

    figure: str
    numbers: str


# Keys a keyboard user tries on a slider, in turn, until its panel shows something new: one
# step, then the far end, then the near end. One step is enough for most sliders; some only
# act past a threshold (a cap above every wait clips nothing).
ESCALATION = ("step", "End", "Home")


# The page's own stopwatch for one redraw, run on the panel's output element before a key press
# or click: the input event's time (a keydown, pointerdown or change anywhere in the page,
# captured first) to the moment the output holds a new figure (an image not tagged as seen, or
# the tagged image with a new source) and a table, the image decoded and two animation frames
# later: painted. Python's polling of the page adds tens of milliseconds that this leaves out.
WATCH = """o => {
  const imgs = () => o.querySelectorAll('img');
  imgs().forEach(i => { i.dataset.seen = '1'; i.dataset.seenSrc = i.src.length + ':' +
                                                    i.src.slice(-64); });
  if (window.__atlasObserver) window.__atlasObserver.disconnect();
  const watch = window.__atlasWatch = {input: null, shown: null, painted: null};
  const onInput = e => { if (watch.input === null) watch.input = e.timeStamp; };
  for (const kind of ['keydown', 'pointerdown', 'change'])
    document.addEventListener(kind, onInput, {capture: true, once: true});
  const fresh = i => !i.dataset.seen ||
      i.dataset.seenSrc !== i.src.length + ':' + i.src.slice(-64);
  const check = () => {
    const shown = imgs();
    if (watch.shown !== null || shown.length !== 1 || !fresh(shown[0]) ||
        o.querySelectorAll('table').length !== 1) return;
    watch.shown = performance.now();
    window.__atlasObserver.disconnect();
    const img = shown[0];
    const painted = () => requestAnimationFrame(() => requestAnimationFrame(() => {
      watch.painted = performance.now(); }));
    (img.decode ? img.decode() : Promise.resolve()).then(painted, painted);
  };
  window.__atlasObserver = new MutationObserver(check);
  window.__atlasObserver.observe(o, {subtree: true, childList: true, attributes: true,
                                     attributeFilter: ['src']});
}"""


class Panel:
    """One ``atlas_sim.widgets.Panel`` as rendered in the page."""

    def __init__(self, root: Locator) -> None:
        self.root = root
        self.output = root.locator(".widget-output")
        self.in_page: float | None = None  # the last redraw's seconds by the page's clock
        self.acted_at = 0.0  # time.perf_counter() just before the last key press or click
        self.answered_at = 0.0  # and when the test saw its new figure and table

    def title(self) -> str:
        """The panel's title (its first bold text), or "" if it has none."""
        bold = self.root.locator(".widget-html b")
        return (bold.first.text_content() or "").strip() if bold.count() else ""

    def sliders(self) -> Locator:
        return self.root.locator(".widget-slider")

    def slider(self, label: str) -> Locator:
        return self.sliders().filter(has=self.root.page.get_by_text(label, exact=True))

    def track_widths(self) -> dict[str, float]:
        """Each slider's track (ipywidgets 8: the noUiSlider element ``.slider`` inside
        ``.slider-container``), its width in CSS pixels as laid out, by the slider's label."""
        widths = self.sliders().evaluate_all("""sliders => sliders.map(s => [
            (s.querySelector('.widget-label') || {}).textContent || '?',
            (s.querySelector('.slider-container .slider') || s).getBoundingClientRect().width])""")
        return {label.strip(): width for label, width in widths}

    def slider_labels(self) -> list[str]:
        return [t.strip() for t in self.sliders().locator(".widget-label").all_text_contents()]

    def reading(self) -> Reading | None:
        """The figure and numbers now shown, or None while the output is being redrawn."""
        images, tables = self.output.locator("img"), self.output.locator("table")
        if images.count() != 1 or tables.count() != 1:
            return None
        source = images.first.get_attribute("src") or ""
        return Reading(figure=hashlib.sha1(source.encode()).hexdigest(),
                       numbers=tables.first.text_content() or "")

    def message(self) -> str:
        """What the output shows as text (the table, or "Cannot run this combination ...")."""
        return " ".join((self.output.text_content() or "").split())

    # -- redraws ---------------------------------------------------------------------------

    def _mark_shown(self) -> None:
        """Tag the figure now shown, so that a redraw (a new image element) can be told from
        it even when the new figure is identical; and start the page's own stopwatch (see
        ``WATCH``)."""
        self.output.evaluate(WATCH)

    def _wait_for_redraw(self, timeout: float = 60) -> Reading:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            watch = self.root.page.evaluate("() => window.__atlasWatch || null")
            if watch and watch.get("shown") is not None and (now := self.reading()) is not None:
                self.answered_at = time.perf_counter()
                self.in_page = self._in_page_seconds()
                return now
            if "Cannot run this combination" in self.message():
                raise AssertionError(f"the panel refused: {self.message()[:300]}")
            time.sleep(0.02)
        raise AssertionError(f"no redraw within {timeout} s; the panel shows "
                             f"{self.message()[:300]!r}")

    def _in_page_seconds(self, timeout: float = 5) -> float | None:
        """Seconds from the key press (or click) to the new figure and table painted, by the
        page's own clock (``WATCH``); None if the page saw no input event (a programmatic
        change)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            watch = self.root.page.evaluate("() => window.__atlasWatch")
            if watch and watch.get("painted") is not None:
                if watch.get("input") is None:
                    return None
                return (watch["painted"] - watch["input"]) / 1000
            time.sleep(0.01)
        return None

    def act(self, action: Callable[[], None]) -> Reading:
        """Do ``action`` (a click, a key) and return what the panel shows once redrawn."""
        self._mark_shown()
        self.acted_at = time.perf_counter()
        action()
        return self._wait_for_redraw()

    # -- what a reader does ----------------------------------------------------------------

    def reset(self) -> Reading:
        """Click Reset: every control back to its default, the experiment run once."""
        return self.act(lambda: self.root.get_by_role("button", name="Reset").click())

    def press(self, label: str, key: str) -> Reading:
        """Focus the slider ``label`` and press ``key``; "step" is one arrow-key step (right,
        or left at the maximum)."""
        handle = self.slider(label).locator('[role="slider"]')
        handle.scroll_into_view_if_needed()
        handle.focus()
        if key == "step":
            at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
            key = "ArrowLeft" if at_max else "ArrowRight"
        elif key in ("End", "Home") and handle.get_attribute("aria-valuenow") == \
                handle.get_attribute("aria-valuemax" if key == "End" else "aria-valuemin"):
            return self.reading() or self._wait_for_redraw()  # already there: nothing to redraw
        return self.act(lambda: handle.press(key))

    def set_slider(self, label: str, value: float) -> Reading:
        """Home, then right-arrow steps until the slider reads ``value``."""
        handle = self.slider(label).locator('[role="slider"]')
        now = self.press(label, "Home")
        for _ in range(200):
            if abs(float(handle.get_attribute("aria-valuenow") or "nan") - value) < 1e-9:
                return now
            now = self.press(label, "ArrowRight")
        raise AssertionError(f"slider {label!r} never reached {value}: it reads "
                             f"{handle.get_attribute('aria-valuenow')}")

    def choose(self, label: str, option: str) -> Reading:
        """Pick ``option`` in the dropdown ``label``."""
        dropdown = self.root.locator(".widget-dropdown").filter(
            has=self.root.page.get_by_text(label, exact=True))
        return self.act(lambda: dropdown.locator("select").select_option(option))

    def move_until_it_changes(self, label: str,
                              before: Reading) -> tuple[str, float, float | None]:
        """Press the ESCALATION keys in turn until both the figure and the numbers differ from
        ``before``; return the key that did it, the seconds from that key press to the redraw
        as the test saw it (polling the page every 20 ms), and the same by the page's own clock
        (``WATCH``: key press to the new figure painted; None if the page could not tell).
        Fails naming the slider if none did."""
        for key in ESCALATION:
            self.in_page = None
            now = self.press(label, key)
            if now.figure != before.figure and now.numbers != before.numbers:
                return key, self.answered_at - self.acted_at, self.in_page
        same = "figure" if now.figure == before.figure else "numbers"
        raise AssertionError(f"slider {label!r}: after {', '.join(ESCALATION)} the panel still "
                             f"shows the same {same}: {self.message()[:300]!r}")
