"""``make lab`` really serves JupyterLab, on loopback only, on the reader's own copy of the
notebooks (never the tracked ones), with the notebook sources hidden."""

from __future__ import annotations

import os
import re
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


def _plan(target: str) -> str:
    return subprocess.run(["make", "-n", "-B", target, "VENV=/nonexistent-venv"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


def test_make_lab_installs_only_what_a_reader_needs():
    """The lab target depends on the reader's set-up, which installs the ``lab`` extra only;
    the test targets install the ``test`` extra as well, and say what they are doing."""
    plan = _plan("lab")
    assert set(re.findall(r"'\.\[[^]]*\]'", plan)) == {"'.[lab]'"}, plan
    assert "Installing Atlas and JupyterLab" in plan
    assert "--ContentsManager.hide_globs=src" in plan
    assert set(re.findall(r"'\.\[[^]]*\]'", _plan("unit"))) == {"'.[lab,test]'"}


def _fake_venv(tmp_path: Path, fetch_ok: bool, uv_ok: bool, pip_ok: bool) -> Path:
    """A venv whose python logs its arguments: ``pip install --target DIR`` (fetching uv) puts
    a ``uv`` there that logs and exits with ``uv_ok``, or fails when not ``fetch_ok``; any other
    ``pip install`` exits with ``pip_ok``."""
    log = tmp_path / "calls.log"
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"""#!/bin/sh
echo "python $*" >> {log}
case "$*" in
  *--target*)
    [ {int(fetch_ok)} = 1 ] || exit 1
    while [ "$1" != --target ]; do shift; done
    mkdir -p "$2/bin"
    printf '#!/bin/sh\\necho "uv $*" >> {log}\\nexit {int(not uv_ok)}\\n' > "$2/bin/uv"
    chmod +x "$2/bin/uv"; exit 0;;
  *) exit {int(not pip_ok)};;
esac
""")
    python.chmod(0o755)
    return tmp_path / "venv"


def _install(tmp_path: Path, **outcomes: bool) -> tuple[subprocess.CompletedProcess[str], str]:
    venv = _fake_venv(tmp_path, **outcomes)
    done = subprocess.run(["make", "-s", f"VENV={venv}", f"{venv}/.atlas-lab-installed"],
                          cwd=ROOT, capture_output=True, text=True)
    calls = (tmp_path / "calls.log").read_text()
    return done, calls


@pytest.mark.parametrize("fetch_ok, uv_ok", [(True, True), (False, True), (True, False)])
def test_the_readers_install_uses_uv_or_else_pip_and_says_each_step(tmp_path, fetch_ok, uv_ok):
    """pip fetches uv (pinned) into a throwaway folder; uv installs the reader's extra
    (editable, with its progress: not quiet); where uv cannot be fetched or fails, pip installs
    the same, with its progress bar. Each step is printed, and the time it all took."""
    done, calls = _install(tmp_path, fetch_ok=fetch_ok, uv_ok=uv_ok, pip_ok=True)
    assert done.returncode == 0, done.stdout + done.stderr
    fetch = re.search(r"-m pip install --quiet .*--target (\S+) uv==\d+\.\d+\.\d+$", calls, re.M)
    assert fetch, calls
    uv_call = re.search(r"^uv pip install --python \S+/bin/python (.*)$", calls, re.M)
    pip_call = re.search(r"^python -m pip install (.* -e \S+)$", calls, re.M)
    if fetch_ok:
        assert uv_call and uv_call.group(1).endswith("-e .[lab]"), calls
        assert "--quiet" not in uv_call.group(1)
        assert "Installing Atlas with '.[lab]' and what it needs, with uv" in done.stdout
    else:
        assert not uv_call and "uv could not be fetched" in done.stdout
    if fetch_ok and uv_ok:
        assert not pip_call, calls
    else:
        assert pip_call and pip_call.group(1).endswith("-e .[lab]"), calls
        assert "--quiet" not in pip_call.group(1) and "--progress-bar on" in pip_call.group(1)
        assert "with pip" in done.stdout
    assert re.search(r"^Installed in \d+ s\.$", done.stdout, re.M), done.stdout
    assert (tmp_path / "venv" / ".atlas-lab-installed").exists()
    assert not Path(fetch.group(1)).exists()  # the throwaway folder of uv is gone


def test_a_failed_install_fails_make_and_leaves_no_stamp(tmp_path):
    done, _ = _install(tmp_path, fetch_ok=True, uv_ok=False, pip_ok=False)
    assert done.returncode != 0
    assert "Installed in" not in done.stdout
    assert not (tmp_path / "venv" / ".atlas-lab-installed").exists()


def test_the_test_set_up_compiles_bytecode_and_the_readers_does_not():
    """The reader's set-up leaves bytecode to each module's first import (smaller, faster to
    install) unless PYTHONDONTWRITEBYTECODE would keep it from ever being written; the test
    set-up, whose many processes start at once, compiles all up front."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def uv_line(target: str, environ: dict[str, str]) -> str:
        plan = subprocess.run(["make", "-n", "-B", target, "VENV=/nonexistent-venv"], cwd=ROOT,
                              env=environ, capture_output=True, text=True, check=True).stdout
        found = re.search(r"uv\" pip install [^&]*", plan)
        assert found, plan
        return found.group(0)

    assert "--compile-bytecode" not in uv_line("lab", env)
    assert "--compile-bytecode" in uv_line("lab", {**env, "PYTHONDONTWRITEBYTECODE": "1"})
    assert "--compile-bytecode" in uv_line("unit", env)
