"""Build the workbook's notebooks from their sources and execute them top to bottom.

Each notebook's source is a plain-text file in ``notebooks/src/`` (jupytext's percent format:
cells start with ``# %%``), which reviews and diffs well. This script turns each source into
``notebooks/<name>.ipynb`` and runs it in a fresh kernel, so that the committed outputs are
exactly what a reader gets from "Run All". ``make notebooks`` runs it; never edit outputs by hand.

Usage: python tools/build_notebooks.py [NAME ...]   (default: every source)
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from queue import Empty
from typing import Any

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "notebooks" / "src"
OUT = ROOT / "notebooks"
CELL_TIMEOUT = 120  # seconds: a cell that takes longer is a bug, not a slow machine
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def kernelspec(name: str = "python3") -> dict[str, str]:
    """The notebook's ``kernelspec`` metadata as JupyterLab writes it once the kernel starts:
    the installed spec's display name and language (ipykernel's: "Python 3 (ipykernel)").
    Anything else there, such as the bare "Python 3" written here before, JupyterLab replaces
    on opening, and the notebook then shows as modified before the reader did anything."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(name)
    return {"display_name": spec.display_name, "language": spec.language, "name": name}


def as_saved_by_jupyterlab(node: Any) -> Any:
    """``node`` (JSON data) as it comes back after a round trip through JupyterLab's
    JavaScript: a JavaScript number has no integer type, so a whole float (the ``20.0`` of a
    float slider's saved state) is written back as ``20``. Floats of 1e21 and more stay floats
    (JavaScript writes them with an exponent)."""
    if isinstance(node, dict):
        return type(node)((key, as_saved_by_jupyterlab(value)) for key, value in node.items())
    if isinstance(node, list):
        return [as_saved_by_jupyterlab(value) for value in node]
    if isinstance(node, float) and node.is_integer() and abs(node) < 1e21:
        return int(node)
    return node


def build(source: Path) -> Path:
    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = kernelspec()
    notebook.metadata.pop("jupytext", None)
    seen: Counter[str] = Counter()
    for cell in notebook.cells:  # an id from the cell, not a random one: a rebuild changes
        # the ids of changed cells only (equal cells are told apart by how many came before)
        seen[cell.source] += 1
        cell.id = hashlib.sha1(f"{seen[cell.source]}\n{cell.source}".encode()).hexdigest()[:12]
    started = time.perf_counter()
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, startup_timeout=60,
                            kernel_name="python3", resources={"metadata": {"path": str(OUT)}})

    def poll_channels(notebook: Any) -> None:
        kernel = client.kc
        assert kernel is not None  # on_notebook_start runs once the kernel client exists
        poll_in_steps(kernel.shell_channel)
        poll_in_steps(kernel.iopub_channel)

    client.on_notebook_start = poll_channels
    client.execute()
    for cell in notebook.cells:  # keep diffs to what matters
        cell.metadata.pop("execution", None)
    target = OUT / f"{source.stem}.ipynb"
    # with the final newline that Jupyter's contents manager writes, so that a save changes
    # nothing
    target.write_text(renumber_widgets(notebook) + "\n", encoding="utf-8")
    print(f"{target.relative_to(ROOT)}: executed in {time.perf_counter() - started:.1f} s")
    return target


def poll_in_steps(channel: Any, step: float = 1.0) -> None:
    """Make ``channel.get_msg`` wait in polls of at most ``step`` seconds.

    Now and then a message is already on the kernel client's socket but its asyncio poll is
    never woken: seen here with notebook 01's first widget panel, in about one build in three,
    with ipykernel 6 and 7 and pyzmq 26 and 27 alike, the kernel idle meanwhile. The wait then
    lasted the whole cell timeout and ended with the reply found, so a 20 s build took
    65-140 s. A poll that times out looks at the socket once more, so short polls bound the
    delay to ``step``.

    What set it off: panels displayed into an ipywidgets ``Output`` with ``with output:``,
    and for each captured display nbclient, playing the front end, sends a comm message on the
    shell channel. Panels now set the output area's state instead, and readers' tools
    (nbconvert, papermill) no longer stall (``tests/project/test_nbconvert_execute.py``);
    the short polls stay as a guard should a cell capture into an ``Output`` again.
    """
    get_msg = channel.get_msg

    async def stepped(timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = step if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await get_msg(timeout=min(step, left))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    channel.get_msg = stepped


def renumber_widgets(notebook: nbformat.NotebookNode) -> str:
    """The notebook as JSON, its widget models renamed in the order a reader meets them, its
    numbers as JupyterLab saves them (``as_saved_by_jupyterlab``).

    ipywidgets names each model with a random UUID and the saved state is sorted by name, so
    every rebuild rewrote the whole widget state. Here the models are numbered by a walk from
    each widget output, cell by cell, through the models each one refers to (its state in key
    order); models no output reaches come last, ordered by their content.
    """
    text = nbformat.writes(notebook)
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    order: list[str] = []

    def visit(model_id: str) -> None:
        if model_id in order or model_id not in state:
            return
        order.append(model_id)
        refs = json.dumps(state[model_id].get("state", {}), sort_keys=True)
        for ref in re.findall(r"IPY_MODEL_([0-9a-f]{32})", refs):
            visit(ref)

    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view:
                visit(view["model_id"])
    order += sorted(set(state) - set(order), key=lambda m: json.dumps(state[m], sort_keys=True))
    renamed = {old: f"{index:032x}" for index, old in enumerate(order)}
    text = re.sub(r"[0-9a-f]{32}", lambda m: renamed.get(m.group(), m.group()), text)
    # sorted again, by the new names, and numbers as JupyterLab would save them
    renumbered = nbformat.from_dict(as_saved_by_jupyterlab(json.loads(text)))
    return nbformat.writes(renumbered)


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
