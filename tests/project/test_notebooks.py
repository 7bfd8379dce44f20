"""The notebooks as files: built from their sources, committed executed, and well-formed.
(nbval, in ``make nbval``, executes them and compares outputs.)"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))


def test_every_source_has_a_notebook_and_every_notebook_a_source():
    built = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert built == {s.stem for s in SOURCES} and built


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_is_its_source_executed_top_to_bottom(source):
    expected = [(c.cell_type, c.source) for c in jupytext.read(source).cells]
    notebook = nbformat.read(ROOT / "notebooks" / f"{source.stem}.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in notebook.cells] == expected, (
        "notebook differs from its source: run `make notebooks`")
    counts = [c.execution_count for c in notebook.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), "not executed top to bottom in one go"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_notebook_has_goals_a_prediction_exercises_a_recap_and_one_seed(source):
    cells = jupytext.read(source).cells
    prose = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    code = [c.source for c in cells if c.cell_type == "code"]
    assert "you will" in prose.lower()  # learning goals
    assert "predict" in prose.lower()
    assert prose.count("**Exercise") >= 3 and sum("check(" in c for c in code) >= 3
    assert "## Recap" in prose and "## References" in prose
    assert sum(c.lstrip().startswith("SEED =") for c in code) == 1


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_a_notebook_that_starts_a_live_server_stops_it_at_the_end(source):
    code = [c.source for c in jupytext.read(source).cells if c.cell_type == "code"]
    started = [line.split("=")[0].strip() for c in code for line in c.splitlines()
               if "start_service(" in line]
    for name in started:
        assert f"{name}.stop()" in code[-1], f"{name} is started but not stopped at the end"
