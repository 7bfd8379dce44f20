"""Each notebook executes with the standard tool, `jupyter nbconvert --execute`, unstalled."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))
CELL_TIMEOUT = 120  # seconds, as tools/build_notebooks.py


def kernel_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.mark.live
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_nbconvert_executes_the_notebook_without_a_stall(source, tmp_path):
    """A reader's command line. nbclient (under nbconvert and papermill) can miss a cell's
    reply that is already waiting and sleep until the cell timeout (nbclient issue 312); it
    then finds the reply and carries on without an error, so a stall shows only in the timing:
    the next cell starts a whole timeout after this one did, however short this one was. No
    cell may come near the limit anyway (a cell that takes longer fails), so a start-to-start
    time of 90% of the timeout or more fails here."""
    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    given = tmp_path / f"{source.stem}.ipynb"
    nbformat.write(notebook, given)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}  # this checkout's package
    done = subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute",
         f"--ExecutePreprocessor.timeout={CELL_TIMEOUT}", "--output-dir", str(tmp_path / "out"),
         str(given)],
        env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=CELL_TIMEOUT * (len(notebook.cells) + 1))
    assert done.returncode == 0, done.stderr[-3000:]

    executed = nbformat.read(tmp_path / "out" / given.name, as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    timings = [c.metadata["execution"] for c in code]
    spans = [(kernel_time(after["iopub.execute_input"])
              - kernel_time(before["iopub.execute_input"])).total_seconds()
             for before, after in pairwise(timings)]
    stalled = [(code[i].source.splitlines()[-1], round(span)) for i, span in enumerate(spans)
               if span >= 0.9 * CELL_TIMEOUT]
    assert not stalled, f"nbconvert stalled for the cell timeout after {stalled}"
