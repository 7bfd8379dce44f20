"""Project-wide pytest set-up.

``--no-skips`` (which ``make test`` passes) turns every skipped test into a failure: in CI a test
group that quietly does not run is as bad as one that fails. One kind of skip is let through
outside CI: a test that needs a program from a Debian package the machine lacks
(``tests/programs.py``'s ``require_program``: PostgreSQL, Redis, promtool) skips with the
package's name and its ``apt install`` line, and the run's summary lists what to install; under
``CI=true`` that test fails instead (``.ci/run`` installs the packages).

Hypothesis runs derandomised and without its per-example deadline, so that CI is repeatable and
never fails on a slow machine.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from tests.programs import in_ci, missing_package

settings.register_profile("atlas", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("atlas")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-skips",
        action="store_true",
        default=False,
        help="fail any test that would be skipped (CI: no test group may be skipped silently)",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.config.getoption("--no-skips") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        if not in_ci() and missing_package(str(reason)) is not None:
            return  # a reader's machine without the package: the skip says which one
        report.outcome = "failed"
        report.longrepr = f"skipped under --no-skips: {reason}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """After the run: which Debian packages would have run the tests that skipped for want of
    them, as one ``apt install`` line."""
    packages: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        package = missing_package(str(reason))
        if package is not None:
            packages[package] = packages.get(package, 0) + 1
    if packages:
        count = sum(packages.values())
        terminalreporter.write_line(
            f"{count} test{'s' if count > 1 else ''} skipped for want of Debian packages; to run "
            f"them too: sudo apt-get install -y {' '.join(sorted(packages))}", yellow=True)


def pytest_configure(config: pytest.Config) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no screen in CI
