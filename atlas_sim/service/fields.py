"""Admin bodies: a table of fields, each with one strict type rule, checked all before any is
applied (``parse_admin_update``).

A table maps a field's name to ``(kind, low, high)``. One strict rule per kind: a number is a
JSON number (not a boolean, not a string), finite, within [low, high]; a flag (``boolean``) is
JSON ``true`` or ``false`` (not 0/1, not a string); ``number or null`` is a number so checked,
or JSON ``null``. Unknown or repeated fields are refused; a refusal names every wrong field and
what it allows. The tables are the routes' own (``faults.FAULT_FIELDS``,
``routes.fanout.FANOUT_FIELDS``).
"""

from __future__ import annotations

import json
from typing import Any

from .bodies import InvalidBody, parse_json_body

__all__ = ["FieldTable", "parse_admin_update"]

#: name -> (kind, low, high); kind is ``"number"``, ``"boolean"`` or ``"number or null"``.
FieldTable = dict[str, tuple[str, float | None, float | None]]


def _allowed(kind: str, low: float | None, high: float | None) -> str:
    if kind == "boolean":
        return "true or false"
    number = f"a number from {low:g} to {high:g}"
    return number + " or null" if kind == "number or null" else number


def parse_admin_update(raw: bytes, fields: FieldTable) -> dict[str, Any]:
    """The changes in an admin body whose ``fields`` are name -> (kind, low, high), all
    checked, or ``InvalidBody`` naming every field that is wrong (``parse_json_body`` first)."""
    body = parse_json_body(raw)
    if not isinstance(body, dict):
        raise InvalidBody([{"loc": ["body"],
                            "msg": f"body must be a JSON object of {sorted(fields)}"}])
    problems, changes = [], {}
    for name, value in body.items():
        if name not in fields:
            problems.append({"loc": ["body", name[:50]], "field": name[:50],
                             "msg": f"unknown field {name[:50]!r}; allowed: {sorted(fields)}"})
            continue
        kind, low, high = fields[name]
        allowed = _allowed(kind, low, high)
        if kind == "boolean":
            ok = isinstance(value, bool)
        elif kind == "number or null" and value is None:
            ok = True
        else:
            # the range check also refuses inf (and huge integers) without converting them
            ok = type(value) in (int, float) and low <= value <= high
        if not ok:
            problems.append({"loc": ["body", name], "field": name, "allowed": allowed,
                             "msg": f"{name} must be {allowed}, got {json.dumps(value)[:50]}"})
        else:
            changes[name] = value if kind == "boolean" or value is None else float(value)
    if problems:
        raise InvalidBody(problems)
    return changes
