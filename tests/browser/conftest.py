"""Fixtures for the browser tests: Debian's Chromium, driven by Playwright, against a JupyterLab
of our own on 127.0.0.1 serving a temporary copy of ``notebooks/``.

Chromium is never downloaded (``playwright install`` fails on machines without internet): the
tests use the system's, ``/usr/bin/chromium`` by default or ``ATLAS_CHROMIUM``. Without it they
skip with a message saying how to get it, except under ``CI=true``, where a missing browser is a
failure: CI must run these tests, not quietly leave them out.

Screenshots and timings go to ``ATLAS_BROWSER_ARTEFACTS`` (default ``build/browser``);
``make test`` prints that folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port
from tests.programs import fail_in_ci_else_skip

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
HOW_TO_ENABLE = (
    "install Debian's Chromium (`sudo apt-get install -y chromium`) or point ATLAS_CHROMIUM at a "
    "Chromium binary; `make test` then runs these tests too (CI installs it in .ci/run)"
)
# JupyterLab settings for a test run: every cell in the page (no virtual scrolling, so a
# screenshot shows what is there), and no news or update pop-ups over the notebook.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True},
}


# Each panel draw in a kernel, as a line of JSON (``atlas_sim.widgets.Panel._show``).
PANEL_LOG = "panel_draws.jsonl"


def unavailable(reason: str) -> None:
    """Fail in CI, skip elsewhere (``tests/programs.py``'s rule), always saying how to enable
    the browser tests."""
    fail_in_ci_else_skip(f"browser tests need {reason}: {HOW_TO_ENABLE}")


def artefacts_dir() -> Path:
    return Path(os.environ.get("ATLAS_BROWSER_ARTEFACTS", ROOT / "build" / "browser")).resolve()


@dataclass
class Timings:
    """Seconds per step, recorded (never asserted) and written to ``timings.json``."""

    lab_start: float | None = None
    notebooks: dict[str, dict[str, object]] = field(default_factory=dict)

    def record(self, notebook: str, **values: object) -> None:
        self.notebooks.setdefault(notebook, {}).update(values)

    def as_dict(self) -> dict[str, object]:
        """Per notebook, what was recorded, and for the slider moves (``slider_moves_each``:
        one dict per move with ``panel``, ``title``, ``slider``, ``key``, ``seconds`` as the
        test saw it, ``in_page`` by the page's clock, and ``kernel``: the kernel's own time
        for the draw, with ``kernel_steps`` its split) the median and 90th percentile of key
        press to new figure and table, and of the kernel's part, over the notebook and per
        panel."""
        rows: dict[str, dict[str, object]] = {}
        for name, values in self.notebooks.items():
            rows[name] = dict(values)
            moves = values.get("slider_moves_each")
            if not isinstance(moves, list) or not moves:
                continue
            rows[name].update(spread("slider_to_output", [m["seconds"] for m in moves]))
            rows[name].update(spread("slider_to_paint_in_page",
                                     [m["in_page"] for m in moves]))
            rows[name].update(spread("kernel", [m.get("kernel") for m in moves]))
            rows[name]["slider_moves"] = len(moves)
            panels: dict[str, dict[str, object]] = {}
            for move in moves:
                panel = panels.setdefault(str(move["panel"]), {
                    "title": move["title"], "seconds": [], "in_page": [], "kernel": []})
                for key in ("seconds", "in_page", "kernel"):
                    panel[key].append(move.get(key))  # type: ignore[union-attr]
            rows[name]["panels"] = {
                key: {"title": p["title"], "slider_moves": len(p["seconds"]),  # type: ignore
                      **spread("slider_to_output", p["seconds"]),  # type: ignore[arg-type]
                      **spread("slider_to_paint_in_page", p["in_page"]),  # type: ignore
                      **spread("kernel", p["kernel"])}  # type: ignore[arg-type]
                for key, p in panels.items()}
        return {"jupyterlab_start": self.lab_start, "notebooks": rows}


def spread(name: str, seconds: list[float | None]) -> dict[str, float | None]:
    """``{name_median, name_p90}`` of the values that are there (None where none is); the 90th
    percentile interpolated between the two nearest (``statistics.quantiles``, inclusive)."""
    known = sorted(s for s in seconds if s is not None)
    if not known:
        return {f"{name}_median": None, f"{name}_p90": None}
    p90 = statistics.quantiles(known, n=10, method="inclusive")[8] if len(known) > 1 else known[0]
    return {f"{name}_median": statistics.median(known), f"{name}_p90": p90}


@pytest.fixture(scope="session")
def artefacts() -> Path:
    folder = artefacts_dir()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="session")
def timings(artefacts: Path) -> Iterator[Timings]:
    recorded = Timings()
    yield recorded
    (artefacts / "timings.json").write_text(json.dumps(recorded.as_dict(), indent=2) + "\n")


@pytest.fixture(scope="session")
def chromium() -> str:
    path = os.environ.get("ATLAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        unavailable(f"Chromium, not found at {path}")
    return path


def stop_process_group(process: subprocess.Popen, *, timeout: float = 30.0) -> None:
    """Stop a process started with ``start_new_session=True`` and all it started (kernels):
    SIGTERM to its process group, SIGKILL if it is still there after ``timeout`` seconds.

    A group that is already gone is not an error: when JupyterLab exits at start (no
    jupyterlab installed, a bad option), ``poll()`` has reaped it and ``killpg`` raises
    ``ProcessLookupError``, which would replace the fixture's own "JupyterLab did not start"
    failure and its log with a traceback about the clean-up.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    root: Path

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(method, f"{self.url}/api/{path}", timeout=10, trust_env=False,
                             headers={"Authorization": f"token {self.token}"}, **kwargs)

    def shut_down_kernels(self) -> None:
        for session in self.api("GET", "sessions").json():
            self.api("DELETE", f"sessions/{session['id']}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, timings: Timings,
        artefacts: Path) -> Iterator[Lab]:
    """JupyterLab from this project's environment, on 127.0.0.1, a random port and a token,
    serving a copy of the notebooks (running them in the browser must not touch the repo).
    Its log ends up beside the screenshots, for failures that only the server saw."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "notebooks"
    root.mkdir()
    for notebook in NOTEBOOKS:
        shutil.copy(notebook, root)
    for name, values in LAB_SETTINGS.items():
        target = home / "settings" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "ATLAS_PANEL_LOG": str(artefacts / PANEL_LOG),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    command = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}"]
    if os.getuid() == 0:
        command.append("--allow-root")  # containers and CI machines often run as root
    log = open(home / "jupyterlab.log", "wb")  # noqa: SIM115 - closed in finally
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    lab = Lab(url=f"http://127.0.0.1:{port}", token=token, root=root)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if lab.api("GET", "status").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("JupyterLab did not start:\n"
                            + (home / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.2)
        timings.lab_start = time.perf_counter() - started
        yield lab
    finally:
        try:
            stop_process_group(process)
        finally:
            log.close()
            shutil.copy(home / "jupyterlab.log", artefacts / "jupyterlab.log")


@pytest.fixture(scope="session")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory):
    """A headless Chromium with a fresh profile (``--user-data-dir``), driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright Python package (pip install -e '.[test]')")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1800},
        )
        try:
            yield context
        finally:
            context.close()
