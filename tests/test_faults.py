"""Faults spelled once: ``atlas_sim.faults.FAULT_TABLE`` is the one description of each fault
field, and every other spelling of the fields is derived from it or checked against it."""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from pathlib import Path

import pytest

from atlas_sim import faults
from atlas_sim.faults import FAULT_TABLE, WIRE_NAMES, Fault, FaultConditions, check_fields
from atlas_sim.service.dependency import Faults
from atlas_sim.service.faults import FAULT_FIELDS
from atlas_sim.service.loadgen.timeline import FAULTS_OFF, plan_faults
from atlas_sim.sim.conditions import Conditions

ROOT = Path(__file__).resolve().parents[1]
NAMES = [f.name for f in FAULT_TABLE]


def test_every_spelling_of_the_fault_fields_is_the_tables():
    off = [f.off for f in FAULT_TABLE]
    on_fault = [f for f in dataclasses.fields(Fault) if f.name in NAMES]
    assert [f.name for f in on_fault] == NAMES and [f.default for f in on_fault] == off
    assert [f.name for f in dataclasses.fields(FaultConditions)] == NAMES
    assert [f.default for f in dataclasses.fields(FaultConditions)] == off
    assert issubclass(Conditions, FaultConditions)  # the simulator's: the same fields
    assert FaultConditions() == FaultConditions.of(())
    conditions = Conditions()  # the simulator's, changed in place at each window edge
    assert vars(conditions) == vars(FaultConditions())
    active = [Fault(start=0.0, capacity=0.5, stall=True, dependency_slow_rate=0.1)]
    conditions.apply(active)
    assert vars(conditions) == vars(FaultConditions.of(active))
    wire = [f for f in FAULT_TABLE if f.wire is not None]
    assert list(WIRE_NAMES) == [f.wire for f in wire]
    assert {f.wire: (0.0 if f.off is None else f.off) for f in wire} == FAULTS_OFF
    assert {f.wire: f.wire_spec() for f in wire} == FAULT_FIELDS
    dependency = [f.wire for f in wire if f.acts_on == "dependency"]
    assert [f.name for f in dataclasses.fields(Faults)] == dependency
    # the simulation-only field, said so in the table
    assert [f.name for f in FAULT_TABLE if f.wire is None] == ["added_latency"]
    # the module docstring's table says the same, row by row
    rows = re.findall(r"^\| ``(\w+)`` \|.*\| (?:``(\w+)``|\(simulation only\)) \| [^|]+ \|$",
                      faults.__doc__ or "", flags=re.MULTILINE)
    assert rows == [(f.name, f.wire or "") for f in FAULT_TABLE]


def test_a_class_that_spells_the_fields_otherwise_is_refused():
    @dataclasses.dataclass
    class Drifted:
        capacity: float = 1.0
        stall: bool = False

    check_fields(Drifted, ["capacity", "stall"], [1.0, False])
    with pytest.raises(TypeError, match=r"must declare \['capacity', 'stall', 'outage'\]"):
        check_fields(Drifted, ["capacity", "stall", "outage"])
    with pytest.raises(TypeError, match="defaults must be"):
        check_fields(Drifted, ["capacity", "stall"], [0.0, False])


def _spelled(path: Path) -> set[str]:
    """The fault field names and wire names ``path`` spells as a string or a class-level
    field (a list of them, a table, a dataclass of them), not as a keyword or an attribute."""
    known = set(NAMES) | set(WIRE_NAMES)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known:
            found.add(node.value)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                        and item.target.id in known):
                    found.add(item.target.id)
    return found


def test_no_seventh_module_spells_the_fault_fields():
    # faults.py owns them; the dependency's Faults declares its fields (checked on import)
    # and service/faults.py says where the server's three live (checked on import)
    allowed = {"atlas_sim/faults.py", "atlas_sim/service/dependency.py",
               "atlas_sim/service/faults.py"}
    spellers = {}
    for path in sorted((ROOT / "atlas_sim").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        spelled = _spelled(path)
        if len(spelled) >= 4 and name not in allowed:  # a list, a table: not a knob or two
            spellers[name] = sorted(spelled)
    assert spellers == {}, "these modules spell the fault fields: derive them from FAULT_TABLE"


def test_the_tables_rule_combines_overlapping_windows():
    a = Fault(start=0.0, capacity=0.5, dependency_error_rate=0.2, dependency_added_latency=0.1)
    b = Fault(start=0.0, capacity=0.5, dependency_added_latency=0.2, dependency_outage=True)
    both = FaultConditions.of([a, b])
    assert both.capacity == 0.25 and both.dependency_added_latency == pytest.approx(0.3)
    assert both.dependency_error_rate == 0.2 and both.dependency_outage
    assert FaultConditions.of([b]).dependency_error_rate is None  # the dependency's own rate
    assert FaultConditions.of([b]).wire()["error_rate"] == 0.0  # on the wire: none injected
    rules = {f.name: f.combine for f in FAULT_TABLE}
    assert rules["capacity"] == "multiply" and rules["stall"] == "any"


def test_the_plan_has_an_instance_dimension():
    everywhere = Fault(start=1.0, end=3.0, dependency_error_rate=0.3)
    one = Fault(start=2.0, end=4.0, capacity=0.0, instances=(1,))
    assert plan_faults([everywhere, one]) == plan_faults([everywhere, one], instance=0) == [
        (1.0, {"error_rate": 0.3}), (3.0, {"error_rate": 0.0})]
    assert plan_faults([everywhere, one], instance=1) == [
        (1.0, {"error_rate": 0.3}), (2.0, {"capacity": 0.0}), (3.0, {"error_rate": 0.0}),
        (4.0, {"capacity": 1.0})]
    assert plan_faults([one], instance=2) == []
    assert plan_faults([Fault(start=0.0, stall=True, instances=(0, 2))], instance=2) == [
        (0.0, {"stall": True}), (math.inf, {"stall": False})]
    with pytest.raises(ValueError, match="instance must be an integer >= 0"):
        plan_faults([one], instance=-1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"capacity": 1.5}, "capacity must be a number >= 0 and <= 1"),
    ({"dependency_added_latency": 4000}, "dependency_added_latency must be a number >= 0 and "
                                         "<= 3600"),
    ({"dependency_outage": 1}, "dependency_outage must be True or False"),
    ({"dependency_error_rate": "0.1"}, "dependency_error_rate must be a number"),
])
def test_a_faults_fields_are_checked_by_the_table(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Fault(start=0.0, **kwargs)
