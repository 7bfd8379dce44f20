"""``make lab`` really serves JupyterLab, on loopback only, on the reader's own copy of the
notebooks (never the tracked ones), with the notebook sources hidden."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, non_loopback_addresses, refuses_connection

pytestmark = pytest.mark.live  # real sockets on 127.0.0.1

ROOT = Path(__file__).resolve().parents[2]


def test_make_lab_serves_jupyterlab_on_loopback(tmp_path):
    port, token = free_port(), "atlas-test-token"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    lab = subprocess.Popen(
        ["make", "-s", "lab", f"LAB_PORT={port}", f"WORKBOOK={tmp_path / 'workbook'}",
         f"LAB_ARGS=--no-browser --IdentityProvider.token={token}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        status = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and lab.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/api/status",
                                   headers={"Authorization": f"token {token}"}, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert status is not None, "JupyterLab did not answer: " + lab.stdout.read1().decode()
        assert status.status_code == 200 and "started" in status.json()
        tree = httpx.get(f"http://127.0.0.1:{port}/api/contents",
                         headers={"Authorization": f"token {token}"}, timeout=5).json()
        names = {item["name"] for item in tree["content"]}
        assert "00_welcome.ipynb" in names  # rooted at the reader's copy
        assert (tmp_path / "workbook" / "00_welcome.ipynb").exists()
        assert "src" not in names  # the jupytext sources are not offered to readers
        for address in non_loopback_addresses():
            assert refuses_connection(address, port), f"JupyterLab is reachable on {address}"
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=30)


def test_make_lab_installs_only_what_a_reader_needs():
    """The lab target depends on the reader's set-up, which installs the ``lab`` extra only;
    the test targets install the ``test`` extra as well, and say what they are doing."""
    plan = subprocess.run(["make", "-n", "-B", "lab", "VENV=/nonexistent-venv"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    installs = [line for line in plan.splitlines() if "pip install" in line]
    assert installs and all("'.[lab]'" in line for line in installs), plan
    assert "Installing Atlas and JupyterLab" in plan
    assert "--ContentsManager.hide_globs=src" in plan
    tests = subprocess.run(["make", "-n", "-B", "unit", "VENV=/nonexistent-venv"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    assert "'.[lab,test]'" in tests
