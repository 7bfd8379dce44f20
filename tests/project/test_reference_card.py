"""docs/reference-card.md: its settings table states each variable's default as the code has it,
and every setting of the code is in the table."""

from __future__ import annotations

import re
from pathlib import Path

from atlas_sim import Settings

CARD = Path(__file__).resolve().parents[2] / "docs" / "reference-card.md"


def card_settings() -> dict[str, str]:
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \| ([^|]+) \|", CARD.read_text(), re.MULTILINE)
    return {name: default.strip() for name, default, _unit in rows}


def test_the_card_states_every_setting_with_the_codes_default():
    code = Settings().environment()
    card = card_settings()
    assert set(card) == set(code)
    for name, value in code.items():
        stated = card[name]
        if isinstance(value, bool):
            assert stated == str(value).lower(), name
        else:
            assert float(stated) == float(value), name


def test_every_row_of_the_settings_table_has_a_unit():
    rows = re.findall(r"^\| `[A-Z_]+` \| [^|]+ \| ([^|]+) \|", CARD.read_text(), re.MULTILINE)
    assert rows and all(unit.strip() for unit in rows)
