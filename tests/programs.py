"""Tests that need a program from a Debian package (PostgreSQL, Redis, promtool, Chromium).

The rule, the browser tests' since issue 20 and now every such test's: under ``CI=true`` a
missing program is a failure (CI must run these tests, not quietly leave them out); elsewhere
the test skips with a message naming the package that would run it. ``require_program``'s skips
start with ``SKIP_PREFIX``, and the root ``conftest.py``'s ``--no-skips`` (which ``make test``
passes) lets exactly those through outside CI, so a reader's ``make test`` says what to install
instead of failing. Kept light: importing this module imports no part of Atlas.
"""

from __future__ import annotations

import os
import re
from typing import NoReturn

import pytest

#: How every missing-program skip begins: ``needs Debian's <package> (apt install <package>)``.
SKIP_PREFIX = "needs Debian's "


def in_ci() -> bool:
    """True when the ``CI`` environment variable says so (anything but '', 0, false, no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def fail_in_ci_else_skip(message: str) -> NoReturn:
    """Fail the test under ``CI=true``; skip it elsewhere. ``message`` says what is missing
    and how to get it."""
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def require_program(name: str, package: str) -> str:
    """The path of program ``name`` (``atlas_sim.service.find_program``), else: under
    ``CI=true`` the test fails, elsewhere it skips with
    ``needs Debian's <package> (apt install <package>): <what was looked for>``."""
    from atlas_sim.service.programs import ProgramMissing, find_program

    try:
        return find_program(name, package=package)
    except ProgramMissing as missing:
        fail_in_ci_else_skip(f"{SKIP_PREFIX}{package} (apt install {package}): {missing}")


def missing_package(reason: str) -> str | None:
    """The package a ``require_program`` skip names (None for any other skip reason; pytest's
    ``Skipped: `` prefix is allowed)."""
    match = re.match(re.escape(SKIP_PREFIX) + r"(\S+) \(apt install ",
                     reason.removeprefix("Skipped: "))
    return match.group(1) if match else None
