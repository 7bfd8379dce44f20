"""Each exercise's check in every notebook source: accepted forms pass, wrong answers do not."""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import jupytext
import numpy as np
import pytest

from atlas_sim import exercises
from atlas_sim.exercises import Check, check

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))


# -- reading the exercises out of the sources ----------------------------------------------

def _bound(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def _used(tree: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
            and not hasattr(builtins, node.id)}


def _checked_answer(tree: ast.AST) -> str | None:
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id == "check"]
    assert len(calls) <= 1, "one check per check cell, so that the cell shows its verdict"
    if calls and isinstance(calls[0].args[0], ast.Name):
        return calls[0].args[0].id
    return None


@dataclass
class Exercise:
    notebook: str
    answer: str
    expected: Any
    options: dict[str, Any]

    def check(self, answer: Any) -> Check:
        return check(answer, self.expected, **self.options)


def exercises_of(source: Path) -> list[Exercise]:
    """Each ``check(answer_..., expected, ...)`` of a source, with the expectation its cell
    computes. The cells the exercises need are run first, and only those: the exercises'
    free names are looked up in the cells before them, recursively."""
    code = [c.source for c in jupytext.read(source).cells if c.cell_type == "code"]
    trees = [ast.parse(c) for c in code]
    answered = [i for i, t in enumerate(trees)
                if any(n.startswith("answer_") for n in _bound(t)) or _checked_answer(t)]
    start = answered[0]
    chosen: set[int] = set()

    def need(names: set[str], before: int) -> None:
        for name in names:
            cell = next((i for i in range(before - 1, -1, -1) if name in _bound(trees[i])), None)
            assert cell is not None, f"{source.name}: no cell before the exercises binds {name}"
            if cell not in chosen:
                assert "start_service(" not in code[cell], "an exercise needs the live service"
                chosen.add(cell)
                need(_used(trees[cell]) - _bound(trees[cell]), cell)

    for i in answered:
        need(_used(trees[i]) - set().union(*(_bound(trees[j]) for j in answered)), start)
    found: list[Exercise] = []

    def recording(answer: Any, expected: Any, **options: Any) -> Check:
        found.append(Exercise(source.stem, "", expected, options))
        return check(answer, expected, **options)

    namespace: dict[str, Any] = {}
    for i in sorted(chosen) + answered:
        namespace["check"] = recording
        exec(compile(code[i], f"{source.name}, cell {i}", "exec"), namespace)
        if (answer := _checked_answer(trees[i])) is not None:
            found[-1].answer = answer
    return found


@pytest.fixture(scope="module")
def all_exercises() -> dict[tuple[str, str], Exercise]:
    return {(e.notebook, e.answer): e for s in SOURCES for e in exercises_of(s)}


# -- the forms each kind of answer may take --------------------------------------------------

@dataclass(frozen=True)
class Kind:
    accepted: Callable[[Exercise], list[Any]]
    wrong: Callable[[Exercise], list[Any]]
    unreadable: list[Any]
    is_expected: Callable[[Any], bool]


def _figures(x: float, figures: int) -> str:
    """``x`` to ``figures`` significant figures, written out as a reader would ("0.50", "1.4",
    "7100000"), never in scientific notation."""
    return np.format_float_positional(x, precision=figures, unique=False, fractional=False,
                                      trim="-" if abs(x) >= 10**figures else "k")


def _grouped(x: float) -> list[str]:
    """The forms the notebooks print large numbers in: "900,000", "900k", "7.07M"."""
    if abs(x) < 1000:
        return []
    scale, suffix = (1e6, "M") if abs(x) >= 1e6 else (1e3, "k")
    return [f"{x:,.0f}", f"{x / scale:.3g}{suffix}", f"{x / scale:.3g} {suffix}",
            f"{x:,.0f}".replace(",", " ")]


def _count_forms(e: Exercise) -> list[Any]:
    n = e.expected
    return [n, float(n), np.int64(n), str(n), f" {n} ", f"{n:,}", f"{float(n):.1f}"]


def _time_forms(e: Exercise) -> list[Any]:
    t = float(e.expected)
    forms = [t, np.float64(t), str(t), f"{t:g} s", f"{t:g}s", f"{t:g} seconds",
             f"t = {t:g}", f"{1000 * t:g} ms"]
    forms += [_figures(t, 2), f"about {_figures(t, 3)}", float(_figures(t, 2))]
    return forms + ([int(t), str(int(t))] if t.is_integer() else [])


def _share_forms(e: Exercise) -> list[Any]:
    p = float(e.expected)
    return [p, str(p), f"{100 * p:g}%", f"{100 * p:g} %", str(Fraction(p).limit_denominator(10**6)),
            f"{p:.3e}", _figures(p, 2), f"{_figures(100 * p, 2)}%", f"~{_figures(100 * p, 3)}%"]


def _name_forms(e: Exercise) -> list[Any]:
    name = e.expected
    return [name, name.upper(), name.capitalize(), f"  {name} ", f'"{name}"', f"{name} jitter"]


def _letter_forms(e: Exercise) -> list[Any]:
    letter = e.expected
    return [letter, letter.upper(), f"({letter})", f"{letter})", f" {letter}. "]


def _names_forms(e: Exercise) -> list[Any]:
    names = sorted(e.expected)
    return [set(names), frozenset(names), names, tuple(reversed(names)), names + names[:1],
            {n.upper() for n in names}, ", ".join(names), " and ".join(names),
            np.array(names)]


def _other_choice(e: Exercise) -> list[Any]:
    return [next(c for c in e.options["choices"] if c != e.expected)]


def _other_names(e: Exercise) -> list[Any]:
    names, others = set(e.expected), set(e.options["choices"]) - set(e.expected)
    return [names - {min(names)}, names | {min(others)}, set()]


def _rate_forms(e: Exercise) -> list[Any]:
    x = float(e.expected)
    return [x, np.float64(x), str(x), f"{x:.2f}", f"{x:.3g}", f" {x:.2f} ", _figures(x, 2),
            f"{x:.2e}", *_grouped(x)]


COUNT = Kind(_count_forms, lambda e: [e.expected + 1, str(e.expected - 1)], ["many", [1], True],
             lambda x: isinstance(x, int) and not isinstance(x, bool))
TIME = Kind(_time_forms, lambda e: [1.5 * e.expected + 1, f"{1.5 * e.expected + 1:g} s"],
            ["later", (1.0,), "soon s"], lambda x: isinstance(x, float))
SHARE = Kind(_share_forms, lambda e: [2 * e.expected, f"{200 * e.expected:g}%"],
             ["tiny", [0.1], "1/0"], lambda x: isinstance(x, float) and 0 <= x <= 1)
RATE = Kind(_rate_forms, lambda e: [2 * e.expected, f"{e.expected / 2:.2f}"],
            ["daily", [1.0], "1.3 or so"], lambda x: isinstance(x, float) and x > 1)
NAME = Kind(_name_forms, _other_choice, [3, "no idea", {"full"}], lambda x: isinstance(x, str))
LETTER = Kind(_letter_forms, _other_choice, ["d", 2, "a or b"], lambda x: x == "b")
NAMES = Kind(_names_forms, _other_names, [42, ["budget", 3], "budget, nonsense"],
             lambda x: isinstance(x, set) and len(x) >= 1)

#: Every exercise of every notebook and the kind of its answer. A new exercise must be added
#: here (test_the_table_lists_every_exercise_of_every_source), so none goes untested.
KINDS: dict[tuple[str, str], Kind] = {
    ("00_welcome", "answer_1"): TIME,  # the first probe, s
    ("00_welcome", "answer_2a"): COUNT,  # calls rejected
    ("00_welcome", "answer_2b"): LETTER,  # why: probes sooner, closes sooner
    ("00_welcome", "answer_3"): TIME,  # the rate breaker opens, s
    ("01_reliability_retries", "answer_1"): SHARE,  # 0.2 ** 4
    ("01_reliability_retries", "answer_2"): NAME,  # the jitter with the lowest peak
    ("01_reliability_retries", "answer_3"): COUNT,  # failures before the budget refuses
    ("01_reliability_retries", "answer_4"): COUNT,  # 3 ** 4 calls
    ("01_reliability_retries", "answer_5"): RATE,  # disks failing per day
    ("01_reliability_retries", "answer_6"): LETTER,  # a third replica against a shared fault
    ("01_reliability_retries", "answer_7"): LETTER,  # what limits a human error
    ("01_reliability_retries", "answer_8"): SHARE,  # a shared fault: retries change nothing
    ("02_reliability_breakers_timeouts", "answer_1"): TIME,  # first half-open, s
    ("02_reliability_breakers_timeouts", "answer_2"): TIME,  # a timeout, s
    ("02_reliability_breakers_timeouts", "answer_3"): NAMES,  # the fixes that recover
    ("02_reliability_breakers_timeouts", "answer_4"): COUNT,  # a concurrency limit
    ("03_scalability_load_and_latency", "answer_1"): RATE,  # peak timeline inserts per second
    ("03_scalability_load_and_latency", "answer_2"): RATE,  # followers of the largest account
    ("03_scalability_load_and_latency", "answer_3"): TIME,  # averaged p99 of 30 s windows, s
    ("03_scalability_load_and_latency", "answer_4"): TIME,  # histogram_quantile(0.8), s
    ("03_scalability_load_and_latency", "answer_5"): COUNT,  # closed-loop stalled samples
    ("03_scalability_load_and_latency", "answer_6"): TIME,  # open-loop p99 under a stall, s
    ("03_scalability_load_and_latency", "answer_7"): RATE,  # M/M/1 W at 90%, service times
    ("03_scalability_load_and_latency", "answer_8"): TIME,  # head-of-line busy period, s
    ("03_scalability_load_and_latency", "answer_9"): SHARE,  # 1 - 0.99 ** 100
    ("03_scalability_load_and_latency", "answer_10"): COUNT,  # width where hedging's floor bites
    ("03b_data_systems", "answer_1"): SHARE,  # Erlang C: a pool of 2 at 80% waits
    ("03b_data_systems", "answer_2"): TIME,  # the celebrity's followers / inserts per second, s
    ("03b_data_systems", "answer_3"): COUNT,  # the offset a restarted consumer reads first
    ("03b_data_systems", "answer_4"): COUNT,  # lag = end offset - committed offset
}
CASES = sorted(KINDS)


def test_the_table_lists_every_exercise_of_every_source(all_exercises):
    assert sorted(all_exercises) == CASES
    for key, exercise in all_exercises.items():
        assert KINDS[key].is_expected(exercise.expected), (key, exercise.expected)


@pytest.mark.parametrize("key", CASES, ids="/".join)
def test_every_accepted_form_of_the_right_answer_passes(all_exercises, key):
    exercise = all_exercises[key]
    for form in KINDS[key].accepted(exercise):
        result = exercise.check(form)
        assert result.ok, (form, result.message)
        assert result.message.startswith("Right")


@pytest.mark.parametrize("key", CASES, ids="/".join)
def test_a_wrong_answer_gets_the_hint(all_exercises, key):
    exercise = all_exercises[key]
    for wrong in KINDS[key].wrong(exercise):
        result = exercise.check(wrong)
        assert not result.ok, wrong
        assert result.message.startswith("Not yet"), result.message
        assert f"Hint: {exercise.options['hint']}" in result.message


@pytest.mark.parametrize("key", CASES, ids="/".join)
def test_an_unreadable_answer_is_told_the_expected_form_not_the_hint(all_exercises, key):
    exercise = all_exercises[key]
    for odd in KINDS[key].unreadable:
        result = exercise.check(odd)
        assert not result.ok, odd
        assert result.message.startswith(f"Cannot read {odd!r}: give "), result.message
        assert "Hint" not in result.message
    assert exercise.check(...).message.startswith("Not answered yet")


#: Kinds whose answers are numbers, and which of them are counts (matched exactly).
NUMERIC = {id(COUNT), id(TIME), id(SHARE), id(RATE)}


@pytest.mark.parametrize("key", [k for k in CASES if id(KINDS[k]) in NUMERIC], ids="/".join)
def test_a_number_with_too_few_figures_is_asked_for_more_and_a_wrong_one_is_wrong(
        all_exercises, key):
    exercise = all_exercises[key]
    x, rel = float(exercise.expected), exercise.options.get("rel", 0.0)
    # the right answer to two figures passes (its rounding is within 5% of it)
    assert exercise.check(_figures(x, 2)), _figures(x, 2)
    # a wrong answer to two figures is wrong however it is rounded
    assert exercise.check(_figures(1.5 * x + 1, 2)).message.startswith("Not yet")
    # one figure: right if it is within the tolerance, or its rounding pins the answer within
    # 5%; otherwise neither right nor wrong (a count is exact: one figure is just a number)
    coarse = f"{x:.1g}"  # "0.6", "2", "1e+01"
    value = float(coarse)
    mantissa, _, exponent = coarse.partition("e")
    half = 0.5 * 10.0 ** (int(exponent or 0) - len(mantissa.partition(".")[2]))
    result = exercise.check(coarse)
    if abs(value - x) <= rel * abs(x) + 1e-9 or (abs(value - x) <= half and half <= 0.05 * abs(x)
                                                 and KINDS[key] is not COUNT):
        assert result.ok, (coarse, result.message)
    elif KINDS[key] is COUNT or abs(value - x) > half:
        assert result.message.startswith("Not yet"), (coarse, result.message)
    else:
        assert not result.ok and result.message.startswith("Too few figures"), result.message
        assert "Hint" not in result.message


@pytest.mark.parametrize(("notebook", "answer", "forms"), [
    # the forms the issue found refused, each as the notebook itself prints it
    ("03_scalability_load_and_latency", "answer_1", ["900,000", "900k", "900 k", "0.9M",
                                                      "900,000 inserts/s", "900k/s"]),
    ("03_scalability_load_and_latency", "answer_2", ["7.07M", "7,071,078", "7.07 million"]),
    ("01_reliability_retries", "answer_5", ["1.4", 1.4, "1.37", "1.4 a day", "1.4 disks a day",
                                            "1.4/day"]),
    ("03_scalability_load_and_latency", "answer_7", ["10", "10 service times", "10.0"]),
])
def test_the_forms_the_notebooks_print_pass(all_exercises, notebook, answer, forms):
    exercise = all_exercises[(notebook, answer)]
    for form in forms:
        assert exercise.check(form), (form, exercise.check(form).message)


def test_too_few_figures_is_neither_right_nor_wrong():
    result = check("1", 1.3698, rel=0.02, hint="n / (MTTF + MTTR)")
    assert not result.ok
    assert result.message.startswith("Too few figures")
    assert "2 significant figures" in result.message
    assert "Hint" not in result.message
    assert check("1.4", 1.3698) and not check("1.5", 1.3698) and not check("1.40", 1.3698)
    assert not check(80, 81) and not check("8e1", 81)  # a count is exact
    assert check("0.16%", 0.0016) and check("0.2%", 0.0016).message.startswith("Too few")
    for odd in ("7m", "1,5", "1,00,000", "12 parsecs", "1.4 a fortnight"):
        assert check(odd, 1.5, unit="/day").message.startswith("Cannot read"), odd


def test_an_exercise_whose_rule_has_an_approximation_says_which_rule_it_checks():
    # Exercise 10 of notebook 03: N p^2 >= 0.1% gives 10, the exact 1 - (1 - p^2)^N >= 0.1%
    # gives 11 (at 10 it is 0.09996%); the prose must name the rule the check computes
    p2 = 1e-4
    assert min(n for n in range(1, 100) if n * p2 >= 1e-3 - 1e-15) == 10
    assert min(n for n in range(1, 100) if 1 - (1 - p2) ** n >= 1e-3) == 11
    source = (ROOT / "notebooks" / "src" / "03_scalability_load_and_latency.py").read_text()
    prose = source.split("**Exercise 10.**")[1].split("answer_10 = ...")[0]
    assert "1 − (1 − p²)^N" in prose and "not" in prose and "N·p²" in prose


def test_an_unreadable_answer_names_the_form_and_the_choices():
    assert "a number, e.g." in check("soon", 19.0).message
    message = check(["budget", "typo"], {"budget"}, choices=["budget", "breaker"]).message
    assert "a set or a list of strings" in message and "'budget', 'breaker'" in message
    message = check(7, "full", choices=["none", "full"]).message
    assert "one of 'none', 'full', as a string" in message


@pytest.mark.parametrize(("answer", "expected"), [
    ("0.5", 0.5), ("50%", 0.5), ("1/2", 0.5), (".5", 0.5), ("5e-1", 0.5), ("330 ms", 0.33),
    ("t=19s", 19.0), ("1_000", 1000), (np.float32(0.5), 0.5),
])
def test_numbers_are_read_from_their_usual_spellings(answer, expected):
    assert check(answer, expected)


@pytest.mark.parametrize("answer", ["not full", "full or equal", "fullest"])
def test_a_name_among_other_words_is_not_guessed(answer):
    assert check(answer, "full", choices=["none", "full"]).message.startswith("Cannot read")


def test_without_choices_a_name_is_compared_without_case_or_spaces():
    assert check(" Budget ", "budget") and not check("breaker", "budget")
    assert check({"A", "b"}, {"a", "B"}) and not check({"a"}, {"a", "b"})


def test_the_module_documents_the_forms():
    assert "1/625" in exercises.__doc__ and "cannot be read" in exercises.__doc__
