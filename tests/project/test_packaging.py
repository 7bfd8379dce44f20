"""The project's own promises about its set-up: conda and pip agree, CI runs the README's
command, and the README shows both commands."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def _normalise(requirement: str) -> tuple[str, str]:
    requirement = requirement.split(";")[0].strip()  # drop environment markers
    match = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", requirement)
    assert match, requirement
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name, match.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = [project["dependencies"], *project["optional-dependencies"].values()]
    pairs = [_normalise(r) for group in groups for r in group]
    return {name: spec for name, spec in pairs if name != "tomli"}  # a Python 3.10 backport


def conda_requirements() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("dependencies:") + 1
    items = [ln.strip()[2:] for ln in lines[start:] if ln.strip().startswith("- ")]
    pairs = [_normalise(item) for item in items]
    return {name: spec for name, spec in pairs if name not in {"python", "pip"}}


def test_environment_yml_and_pyproject_list_the_same_dependencies():
    assert conda_requirements() == pyproject_requirements()


def test_the_notebook_stack_is_installed_by_the_lab_command():
    needed = {"jupyterlab", "ipywidgets", "simpy", "numpy", "matplotlib", "pandas", "fastapi",
              "uvicorn", "httpx", "prometheus-client", "pydantic-settings", "tqdm"}
    assert needed <= set(pyproject_requirements())


def test_ci_runs_the_readmes_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
