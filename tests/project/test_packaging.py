"""The project's own promises about its set-up: conda and pip agree, CI runs the README's
command, and the README shows both commands."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

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
    return dict(pairs)


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


def test_ci_installs_every_debian_package_a_test_requires():
    """A test that needs a program says which Debian package has it (``require_program(name,
    package)``); under CI=true a missing one fails, so ``.ci/run`` must install each."""
    calls = re.compile(r"require_program\(\s*[^,()]+,\s*\"([^\"]+)\"\s*\)")
    packages = {package for path in (ROOT / "tests").rglob("*.py")
                for package in calls.findall(path.read_text())}
    packages -= {"atlas-fake", "dash"}  # test_programs.py's own: a missing one, and sh's
    assert packages >= {"postgresql", "redis-server", "prometheus"}
    ci = (ROOT / ".ci" / "run").read_text()
    assert not {p for p in packages if f"missing+=({p})" not in ci}


def python_floors() -> dict[str, tuple[int, int]]:
    """The oldest Python each place names: pyproject's requires-python and mypy target, the
    Makefile's check, environment.yml and the README's sentence."""
    def version(text: str) -> tuple[int, int]:
        major, minor = text.split(".")
        return int(major), int(minor)

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    makefile = (ROOT / "Makefile").read_text()
    check = re.search(r"v >= \((\d+), (\d+)\) else f\"Atlas needs Python (\d+\.\d+) or newer",
                      makefile)
    assert check, "the Makefile's Python check was not found"
    conda = re.search(r"^\s*- python>=(\d+\.\d+)\s*$", (ROOT / "environment.yml").read_text(),
                      re.MULTILINE)
    readme = re.search(r"Needs only Python (\d+\.\d+) or newer", (ROOT / "README.md").read_text())
    assert conda and readme
    return {
        "pyproject requires-python": version(pyproject["project"]["requires-python"]
                                             .removeprefix(">=")),
        "mypy python_version": version(pyproject["tool"]["mypy"]["python_version"]),
        "Makefile check": (int(check.group(1)), int(check.group(2))),
        "Makefile message": version(check.group(3)),
        "environment.yml": version(conda.group(1)),
        "README": version(readme.group(1)),
    }


def test_every_place_names_the_same_python_floor_of_3_11():
    """Python 3.10 is past its end of life and current numpy has left it: 3.11 is the floor,
    and the places that name it agree (issue 20, item 19)."""
    floors = python_floors()
    assert set(floors.values()) == {(3, 11)}, floors


def test_no_requirement_is_left_for_pythons_below_the_floor():
    """No environment marker for a Python older than the floor (such as tomli's backport)."""
    text = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r"python_version\s*<\s*'3\.11'", text)
    assert not re.search(r"python_version\s*>=\s*'3\.11'", text)  # always true now
