"""Build the workbook's notebooks from their sources and execute them top to bottom.

Each notebook's source is a plain-text file in ``notebooks/src/`` (jupytext's percent format:
cells start with ``# %%``), which reviews and diffs well. This script turns each source into
``notebooks/<name>.ipynb`` and runs it in a fresh kernel, so that the committed outputs are
exactly what a reader gets from "Run All". ``make notebooks`` runs it; never edit outputs by hand.

Usage: python tools/build_notebooks.py [NAME ...]   (default: every source)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "notebooks" / "src"
OUT = ROOT / "notebooks"
CELL_TIMEOUT = 120  # seconds: a cell that takes longer is a bug, not a slow machine


def build(source: Path) -> Path:
    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    notebook.metadata.pop("jupytext", None)
    started = time.perf_counter()
    NotebookClient(notebook, timeout=CELL_TIMEOUT, startup_timeout=60, kernel_name="python3",
                   resources={"metadata": {"path": str(OUT)}}).execute()
    for cell in notebook.cells:  # keep diffs to what matters
        cell.metadata.pop("execution", None)
    target = OUT / f"{source.stem}.ipynb"
    nbformat.write(notebook, target)
    print(f"{target.relative_to(ROOT)}: executed in {time.perf_counter() - started:.1f} s")
    return target


def main(names: list[str]) -> None:
    sources = sorted(SOURCES.glob("*.py"))
    if names:
        sources = [s for s in sources if s.stem in names or s.name in names]
    if not sources:
        sys.exit(f"no notebook sources matched {names or '*'} in {SOURCES}")
    for source in sources:
        build(source)


if __name__ == "__main__":
    main(sys.argv[1:])
