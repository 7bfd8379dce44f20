"""The package's boundaries: no module imports from its own layer or one above (the layer table in
ARCHITECTURE.md), and the pure policy core loads no heavy library."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "atlas_sim"


def layers() -> dict[str, int]:
    """``{unit: layer}`` from the table in ARCHITECTURE.md (``| 1 | `policies`, `clocks` |``)."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    table: dict[str, int] = {}
    for number, names in re.findall(r"^\| (\d+) \| (`[^|]+`) \|$", text, flags=re.MULTILINE):
        for name in re.findall(r"`([a-z_]+)`", names):
            table[name] = int(number)
    assert table, "ARCHITECTURE.md has no layer table"
    return table


def unit_of(module: str) -> str:
    """``atlas_sim.service.loadgen.run`` -> ``service``."""
    return module.split(".")[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every ``atlas_sim`` module that ``path`` imports, at top level or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("atlas_sim."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("atlas_sim.") or target == "atlas_sim":
                if target == "atlas_sim":  # from . import x
                    found.update(f"atlas_sim.{a.name}" for a in node.names)
                else:
                    found.add(target)
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_every_unit_of_the_package_has_a_layer():
    table = layers()
    units = {unit_of(module_name(p)) for p in modules()}
    assert units <= set(table), f"not in ARCHITECTURE.md's layer table: {units - set(table)}"


def violations(module: str, targets: set[str], table: dict[str, int]) -> list[str]:
    """The imports of ``module`` that reach its own layer or one above (its own unit aside)."""
    own = unit_of(module)
    return sorted(f"{module} (layer {table[own]}) imports {t} (layer {table[unit_of(t)]})"
                  for t in targets if unit_of(t) != own and table[unit_of(t)] >= table[own])


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_its_own_layer_or_above(path):
    assert violations(module_name(path), imported(path), layers()) == []


def test_the_check_finds_upward_and_sideways_imports():
    table = layers()
    assert violations("atlas_sim.sim.engine", {"atlas_sim.service.app"}, table)  # sideways
    assert violations("atlas_sim.policies.retry", {"atlas_sim.results"}, table)  # upward
    assert not violations("atlas_sim.sim.engine", {"atlas_sim.sim.scenario",
                                                   "atlas_sim.policies.call"}, table)
    relative = imported(PACKAGE / "sim" / "engine.py")
    assert {"atlas_sim.policies", "atlas_sim.results", "atlas_sim.sim.scenario"} <= relative


def test_policies_load_numpy_and_the_standard_library_only():
    code = ("import sys, atlas_sim.policies; "
            "print(','.join(m for m in ('pandas', 'pydantic', 'pydantic_settings', 'simpy', "
            "'httpx', 'matplotlib', 'scipy', 'fastapi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == ""
