"""The notebooks' prose holds together: no heading twice in a notebook, every exercise a
sentence points to exists (by number), and each recap's "Next" agrees with the README's table of
notebooks (issue 20, item 11: a duplicated "Exercises" heading, "the second exercise" meaning
Exercise 10, a recap announcing a notebook 04 the README does not plan)."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
            "ninth", "tenth", "last", "next", "previous")


def markdown(source: Path) -> list[str]:
    return [c.source for c in jupytext.read(source).cells if c.cell_type == "markdown"]


def readme_notebooks() -> dict[str, tuple[str, str]]:
    """The README's table of notebooks: file name -> (what it teaches, status)."""
    rows = re.findall(r"^\| `(\d\d[a-z]?_\w+\.ipynb)` \| (.*?) \| (\w+) \|$",
                      (ROOT / "README.md").read_text(), re.MULTILINE)
    return {name: (teaches, status) for name, teaches, status in rows}


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_no_heading_appears_twice_in_a_notebook(source):
    headings = [line.strip() for cell in markdown(source) for line in cell.splitlines()
                if re.match(r"#{1,6} ", line)]
    twice = sorted({h for h in headings if headings.count(h) > 1})
    assert not twice, f"{source.stem}: headings used more than once: {twice}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_exercises_are_numbered_in_order_and_referred_to_by_an_existing_number(source):
    prose = "\n".join(markdown(source))
    numbers = [int(n) for n in re.findall(r"\*\*Exercise (\d+)\.\*\*", prose)]
    assert numbers == list(range(1, len(numbers) + 1)), f"{source.stem}: exercises {numbers}"
    # every other mention: "Exercise 7", "exercises 3 and 4", "(exercise 2)"
    mentions = re.sub(r"\*\*Exercise \d+\.\*\*", "", prose)
    referred = [int(n) for group in re.findall(r"[Ee]xercises? ((?:\d+(?:,| and| or|-|–)? ?)+)",
                                               mentions)
                for n in re.findall(r"\d+", group)]
    missing = sorted(set(referred) - set(numbers))
    assert not missing, f"{source.stem}: prose refers to exercises {missing}, which do not exist"
    vague = re.findall(rf"\bthe ({'|'.join(ORDINALS)}) exercise\b", mentions, re.IGNORECASE)
    assert not vague, (f"{source.stem}: say which exercise by its number, not "
                       f"'the {vague[0]} exercise'")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_the_recap_announces_the_next_notebook_as_the_readme_lists_it(source):
    table = readme_notebooks()
    assert f"{source.stem}.ipynb" in table, f"the README's table lacks {source.stem}"
    nexts = [" ".join(m.split()) for cell in markdown(source)
             for m in re.findall(r"\*\*Next:\*\*(.*?)(?:\n#?\s*\n|\Z)", cell, re.DOTALL)]
    assert len(nexts) == 1, f"{source.stem}: one **Next:** line expected, found {nexts}"
    named = re.findall(r"`(\d\d_\w+\.ipynb)`", nexts[0])
    number = int(source.stem[:2]) + 1
    assert len(named) == 1 and named[0].startswith(f"{number:02d}_"), (
        f"{source.stem}: **Next:** should name notebook {number:02d} by its file: {nexts[0]}")
    teaches, status = table[named[0]]
    if status == "planned":
        assert "planned" in nexts[0] and teaches.lower() in nexts[0].lower(), (
            f"{source.stem}: the README plans {named[0]} as '{teaches}'; the recap says "
            f"'{nexts[0]}'")
    else:
        assert (ROOT / "notebooks" / named[0]).exists(), named[0]
