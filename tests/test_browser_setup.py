"""The browser tests' own rule: without Chromium they skip outside CI and fail under CI=true."""

from __future__ import annotations

import pytest
from _pytest.outcomes import Failed, Skipped

from tests.browser.conftest import in_ci, unavailable


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
