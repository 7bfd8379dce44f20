"""A committed notebook as a reader sees it unrun: panel figures and tables, no widget repr."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# ipywidgets' repr, what GitHub and an untrusted notebook show for a bare widget output:
# "VBox(children=(HTML(value='<b>...", "IntSlider(value=5, ...", "HBox(children=(HTML(..."
WIDGET_REPR = re.compile(r"^\s*(V|H)?Box\(children=|^\s*[A-Z]\w*\((value|children|layout)=")
# tqdm's text: "requests:   0%|          | 0/510"; a finished bar says 100%| (not matched)
STUCK_BAR = re.compile(r"(?<!\d)0%\|")
INLINE_PNG = '<img src="data:image/png;base64,'


def outputs(notebook: nbformat.NotebookNode) -> Iterator[tuple[int, Any]]:
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                yield index, output


def texts(output: Any) -> list[str]:
    """The text a renderer may show for an output: stream text, text/plain, text/html."""
    if output.get("output_type") == "stream":
        return [output.get("text", "")]
    data = output.get("data", {})
    return [data[key] for key in ("text/plain", "text/html") if isinstance(data.get(key), str)]


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_output_is_a_widget_repr(path):
    found = [(index, text[:80]) for index, output in outputs(read(path))
             for text in texts(output) if WIDGET_REPR.search(text)]
    assert not found, f"{path.name}: widget reprs where a reader expects a figure: {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_progress_bar_is_left_in_the_outputs(path):
    notebook = read(path)
    stuck = [(index, text[:80]) for index, output in outputs(notebook)
             for text in texts(output) if STUCK_BAR.search(text)]
    assert not stuck, f"{path.name}: progress bars stuck at 0%: {stuck}"
    # A widget output whose model was not saved (a progress bar that closed itself) shows
    # "Error displaying widget: model not found" once the page is reloaded.
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    orphans = [index for index, output in outputs(notebook)
               if WIDGET_VIEW in output.get("data", {})
               and output["data"][WIDGET_VIEW]["model_id"] not in state]
    assert not orphans, f"{path.name}: widget outputs with no saved model, cells {orphans}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_panel_shows_its_figure_and_table_without_a_kernel(path):
    notebook = read(path)
    panels = [(index, output["data"]) for index, output in outputs(notebook)
              if WIDGET_VIEW in output.get("data", {})]
    assert panels, f"{path.name} shows no panel"
    blank = [index for index, data in panels
             if not (INLINE_PNG in data.get("text/html", "") or "image/png" in data)
             or "<table" not in data.get("text/html", "")]
    assert not blank, f"{path.name}: panels with no static figure and table, cells {blank}"
