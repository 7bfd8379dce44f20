"""A committed notebook opens in JupyterLab unmodified: what was built is exactly what
JupyterLab would save (issue 20: "every notebook shows as modified right after opening").

JupyterLab marked every notebook modified about a second after opening: it writes the running
kernel's spec into the notebook's metadata, and the build had written a bare "Python 3" where
ipykernel's spec says "Python 3 (ipykernel)". A save then also turned every whole float of the
saved widget state ("value": 20.0) into an integer (JavaScript has one number type) and added a
final newline. The browser test checks the modified mark itself; these check the file.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def build_tool():
    spec = importlib.util.spec_from_file_location("build_notebooks",
                                                  ROOT / "tools" / "build_notebooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_a_committed_notebook_is_byte_for_byte_what_jupyterlab_would_save(notebook):
    text = notebook.read_text(encoding="utf-8")
    node = nbformat.reads(text, as_version=4)
    nbformat.validate(node)
    assert (node.nbformat, node.nbformat_minor) == (4, nbformat.current_nbformat_minor)
    saved = nbformat.writes(nbformat.from_dict(
        build_tool().as_saved_by_jupyterlab(json.loads(text)))) + "\n"
    assert text == saved, f"{notebook.name}: a save in JupyterLab would change it"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_a_committed_notebook_names_the_kernel_as_the_installed_spec_does(notebook):
    metadata = json.loads(notebook.read_text(encoding="utf-8"))["metadata"]
    assert metadata["kernelspec"] == build_tool().kernelspec("python3"), notebook.name


def test_whole_floats_become_integers_as_javascript_writes_them():
    saved = build_tool().as_saved_by_jupyterlab(
        {"value": 20.0, "step": 0.5, "max": [1e3, -0.0], "huge": 1e21, "n": 3, "flag": True})
    assert saved == {"value": 20, "step": 0.5, "max": [1000, 0], "huge": 1e21, "n": 3,
                     "flag": True}
    assert [type(saved["value"]), type(saved["huge"]), type(saved["flag"])] == [int, float, bool]
