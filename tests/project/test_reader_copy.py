"""The reader's copy (tools/reader_copy.py): new notebooks arrive, untouched ones update, and a
notebook the reader changed is never overwritten."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("reader_copy", ROOT / "tools" / "reader_copy.py")
assert spec is not None and spec.loader is not None
reader_copy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reader_copy)


def test_a_readers_work_is_never_overwritten(tmp_path):
    source, target = tmp_path / "notebooks", tmp_path / "workbook"
    source.mkdir()
    (source / "01.ipynb").write_text("v1")
    (source / "02.ipynb").write_text("v1")
    assert reader_copy.sync(source, target) == ["copied 01.ipynb", "copied 02.ipynb"]
    assert reader_copy.sync(source, target) == []  # nothing new: nothing done
    (target / "01.ipynb").write_text("my answers")  # the reader works in 01
    (source / "01.ipynb").write_text("v2")  # and a new version of both arrives
    (source / "02.ipynb").write_text("v2")
    (source / "03.ipynb").write_text("v1")
    assert reader_copy.sync(source, target) == [
        "kept your 01.ipynb; the new version is 01 (new version).ipynb",
        "updated 02.ipynb", "copied 03.ipynb"]
    assert (target / "01.ipynb").read_text() == "my answers"
    assert (target / "01 (new version).ipynb").read_text() == "v2"
    assert (target / "02.ipynb").read_text() == "v2"
    assert reader_copy.sync(source, target) == []


def test_the_workbook_folder_is_ignored_by_git():
    assert "workbook/" in (ROOT / ".gitignore").read_text().splitlines()


def test_a_missing_source_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match="source must be a folder of notebooks"):
        reader_copy.sync(tmp_path / "nowhere", tmp_path / "workbook")
