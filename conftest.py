"""Project-wide pytest set-up.

``--no-skips`` (which ``make test`` passes) turns every skipped test into a failure: in CI a test
group that quietly does not run is as bad as one that fails. Hypothesis runs derandomised and
without its per-example deadline, so that CI is repeatable and never fails on a slow machine.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

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
        report.outcome = "failed"
        report.longrepr = f"skipped under --no-skips: {reason}"


def pytest_configure(config: pytest.Config) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no screen in CI
