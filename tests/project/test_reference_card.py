"""docs/reference-card.md: its settings table states each variable's default, unit and meaning
as the code has them (``Settings.table()``), and every setting of the code is in the table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from atlas_sim import Settings
from atlas_sim.config import unit_of

CARD = Path(__file__).resolve().parents[2] / "docs" / "reference-card.md"


def card_settings() -> dict[str, tuple[str, str, str]]:
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", CARD.read_text(),
                      re.MULTILINE)
    return {name: (default.strip(), unit.strip(), meaning.strip())
            for name, default, unit, meaning in rows}


def test_the_card_states_every_setting_with_the_codes_default():
    code = Settings().environment()
    card = card_settings()
    assert set(card) == set(code)
    for name, value in code.items():
        stated = card[name][0]
        if isinstance(value, bool):
            assert stated == str(value).lower(), name
        else:
            assert float(stated) == float(value), name


def test_the_card_and_the_code_give_each_setting_the_same_unit_and_meaning():
    card = card_settings()
    table = Settings().table()
    assert list(table.columns) == ["value", "unit", "meaning"]
    for name, row in table.iterrows():
        assert (row["value"], row["unit"], row["meaning"]) == card[str(name)], name
        assert row["unit"], name


def test_the_settings_table_shows_a_changed_value_with_its_unit():
    table = Settings(http_timeout=2.5, retry_jitter=False).table()
    assert table.loc["HTTP_TIMEOUT", "value"] == "2.5"
    assert table.loc["HTTP_TIMEOUT", "unit"] == "s"
    assert table.loc["RETRY_JITTER", "value"] == "false"
    assert table.loc["RETRY_MAX_ATTEMPTS", "value"] == "3"  # a count, not 3.0


def test_unit_of_an_unknown_setting_is_an_error():
    with pytest.raises(KeyError):
        unit_of("no_such_setting")
