"""The browser tests' own helpers, without a browser: the CI rule and JupyterLab's clean-up."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from _pytest.outcomes import Failed, Skipped

from tests.browser.conftest import stop_process_group, unavailable
from tests.programs import in_ci


@pytest.mark.parametrize("value, expected", [("true", True), ("1", True), ("yes", True),
                                             ("", False), ("false", False), ("0", False)])
def test_ci_is_read_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_a_missing_browser_fails_in_ci_and_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(Failed, match="apt-get install -y chromium"):
        unavailable("Chromium, not found at /nowhere")


def test_a_missing_browser_skips_elsewhere_and_says_how_to_enable_it(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(Skipped, match="ATLAS_CHROMIUM"):
        unavailable("Chromium, not found at /nowhere")


def test_stopping_a_process_that_already_exited_is_quiet():
    # JupyterLab exiting at start: poll() reaps it, and its process group is gone
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"],
                               start_new_session=True)
    while process.poll() is None:
        process.wait()
    stop_process_group(process)
    assert process.returncode == 3


def test_the_start_failure_is_what_the_user_sees_not_the_clean_up():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"],
                               start_new_session=True)
    with pytest.raises(Failed, match="JupyterLab did not start") as failure:
        try:
            process.wait()
            pytest.fail("JupyterLab did not start:\n(its log)")
        finally:
            stop_process_group(process)
    assert failure.value.__context__ is None


def test_stopping_a_running_process_group_ends_it():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                               start_new_session=True)
    stop_process_group(process, timeout=10)
    assert process.returncode == -signal.SIGTERM
