"""How much memory does the Jupyter kernel hold while a notebook runs top to bottom?

Each notebook is built from its source (``notebooks/src/<name>.py``, as
``tools/build_notebooks.py`` does) and executed in a fresh ``python3`` kernel with nbclient,
in memory only: nothing is written. The kernel's own numbers come from Linux, in
``/proc/<kernel pid>/status``:

* ``VmHWM``, the kernel process's peak resident set ("high water mark") since it started: the
  figure issue 23 bounds (<= 250 MiB per notebook);
* ``VmRSS`` after each cell, and the peak after each cell, to say which cells raise it.

Processes the kernel starts (notebook 03b's services, PostgreSQL, Redis, and the process pool
of a sweep) are not the kernel: their peaks are reported apart, sampled every
``--interval`` seconds while the notebook runs (each child's own ``VmHWM``, read until it
exits; a child that lives less than one interval may be missed).

A/B against another checkout: ``--root /work/wt-base`` runs that checkout's notebook sources
with ``PYTHONPATH`` set to it, so the kernel imports that checkout's ``atlas_sim``; the
table is printed per notebook with the root named.

Run: .venv/bin/python benchmarks/kernel_memory.py [NAME ...] [--root DIR] [--top N]
     [--json FILE] [--ipynb]

``NAME`` is a notebook's stem or a prefix of it (``00``, ``03b``); default every notebook.
``--ipynb`` executes the committed ``notebooks/<name>.ipynb`` instead of the source.
Peak memory is nearly deterministic for one environment (unlike times on a shared machine);
differences of a few MiB between runs come from the allocator and garbage collection timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jupytext
import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from build_notebooks import poll_in_steps  # the build's guard against missed wake-ups

HERE = Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 300  # seconds: generous, a busy shared machine is slow
MIB = 1024 * 1024
#: Packages worth knowing whether a notebook's kernel imported (each costs MiB to import).
WATCHED = ("scipy.special", "scipy.linalg", "scipy.optimize", "scipy.stats", "pandas",
           "matplotlib.pyplot", "fastapi", "uvicorn", "httpx", "redis", "psycopg", "aiosqlite",
           "prometheus_client", "hdrh", "ipywidgets", "simpy", "dask", "distributed", "PIL")
#: A cell appended to each notebook: which of ``WATCHED`` the kernel has imported by the end,
#: and how much resident memory a full garbage collection, then ``malloc_trim``, give back
#: (garbage that only a full collection frees: cycles such as closed figures; then freed heap
#: memory glibc had kept). Run after the last measured cell, so it changes no number above.
PROBE = f"""import ctypes as _ct, gc as _gc, json as _json, sys as _sys
def _rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
_before = _rss(); _gc.collect(); _collected = _rss()
_ct.CDLL("libc.so.6").malloc_trim(0)
print("ATLAS-LOADED", _json.dumps([_m for _m in {WATCHED!r} if _m in _sys.modules]))
print("ATLAS-GC", _json.dumps([_before, _collected, _rss()]))"""


def status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (bytes) of process ``pid``, empty if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def children_of(pid: int) -> dict[int, str]:
    """Every descendant of ``pid`` now: {pid: command line}."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # the command in parentheses may hold spaces: split after its closing one
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, ValueError, PermissionError):
            continue
        parents[int(entry.name)] = ppid
        commands[int(entry.name)] = cmd.strip()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = commands[child]
                frontier.append(child)
    return found


@dataclass
class ChildWatch:
    """Samples the kernel's descendants in a thread: each one's largest ``VmHWM`` seen."""

    kernel: int
    interval: float
    peaks: dict[int, tuple[str, int]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        for pid, cmd in children_of(self.kernel).items():
            hwm = status(pid).get("VmHWM", 0)
            if hwm > self.peaks.get(pid, ("", 0))[1]:
                self.peaks[pid] = (cmd, hwm)


@dataclass
class CellMemory:
    index: int
    first_line: str
    rss: int  # after the cell
    hwm: int  # the kernel's peak after the cell
    raised: int  # by how much this cell raised the peak
    grew: int  # by how much this cell changed the resident set


@dataclass
class NotebookMemory:
    name: str
    root: str
    start_rss: int = 0  # the kernel, ready, before the first cell
    peak: int = 0
    final_rss: int = 0
    seconds: float = 0.0
    cells: list[CellMemory] = field(default_factory=list)
    children: dict[int, tuple[str, int]] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)  # of WATCHED, imported by the end
    who: dict[str, list[str]] = field(default_factory=dict)  # --who-imports: the stacks
    gc: list[int] = field(default_factory=list)  # RSS at the end, after gc, after malloc_trim


def first_line(source: str) -> str:
    for line in source.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line[:70]
    return source.strip().splitlines()[0][:70] if source.strip() else ""


#: A cell put first with ``--who-imports``: an audit hook that keeps, for each watched module,
#: the atlas_sim lines that led to its first import (an import inside a function shows here).
WHO_IMPORTS = """import sys as _sys, traceback as _tb
_atlas_who = {}
def _atlas_hook(event, args, _watch=%r):
    if event == "import" and args[0] in _watch and args[0] not in _atlas_who:
        _atlas_who[args[0]] = [f"{f.filename.split('/atlas_sim/')[-1]}:{f.lineno} {f.name}"
                               for f in _tb.extract_stack()
                               if "atlas_sim" in f.filename or "ipykernel" in f.filename][-6:]
_sys.addaudithook(_atlas_hook)"""
WHO_PROBE = "import json as _json\nprint('ATLAS-WHO', _json.dumps(_atlas_who))"


def measure(path: Path, root: Path, interval: float,
            who_imports: tuple[str, ...] = ()) -> NotebookMemory:
    """Execute the notebook at ``path`` in a fresh kernel whose ``PYTHONPATH`` is ``root``."""
    notebook = jupytext.read(path) if path.suffix == ".py" else nbformat.read(path, 4)
    result = NotebookMemory(name=path.stem, root=str(root))
    if who_imports:  # (an audit hook cannot be removed: it slows every import a little)
        notebook.cells.insert(0, nbformat.v4.new_code_cell(WHO_IMPORTS % (who_imports,)))
        notebook.cells.append(nbformat.v4.new_code_cell(WHO_PROBE))
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
    os.environ["PYTHONPATH"] = str(root)  # the kernel inherits this process's environment
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, startup_timeout=120,
                            kernel_name="python3",
                            resources={"metadata": {"path": str(root / "notebooks")}})
    state: dict[str, Any] = {}

    def kernel_pid() -> int:
        provisioner = client.km.provisioner  # type: ignore[union-attr]
        return int(provisioner.process.pid)  # type: ignore[union-attr]

    def started(notebook: Any) -> None:
        pid = kernel_pid()
        state["pid"] = pid
        state["last"] = status(pid)
        result.start_rss = state["last"].get("VmRSS", 0)
        watch = ChildWatch(kernel=pid, interval=interval)
        watch.start()
        state["watch"] = watch
        kernel = client.kc
        assert kernel is not None
        poll_in_steps(kernel.shell_channel)
        poll_in_steps(kernel.iopub_channel)

    def executed(cell: Any, cell_index: int, execute_reply: Any) -> None:
        if cell.source in (PROBE, WHO_PROBE):  # not a notebook cell: read what it printed
            for output in cell.get("outputs", []):
                for line in output.get("text", "").splitlines():
                    if line.startswith("ATLAS-LOADED "):
                        result.loaded = json.loads(line.removeprefix("ATLAS-LOADED "))
                    if line.startswith("ATLAS-GC "):
                        result.gc = json.loads(line.removeprefix("ATLAS-GC "))
                    if line.startswith("ATLAS-WHO "):
                        result.who = json.loads(line.removeprefix("ATLAS-WHO "))
            return
        now = status(state["pid"])
        last = state["last"]
        state["watch"].sample()
        result.cells.append(CellMemory(
            index=cell_index, first_line=first_line(cell.source), rss=now.get("VmRSS", 0),
            hwm=now.get("VmHWM", 0), raised=now.get("VmHWM", 0) - last.get("VmHWM", 0),
            grew=now.get("VmRSS", 0) - last.get("VmRSS", 0)))
        state["last"] = now

    def finished(notebook: Any) -> None:
        # the kernel may be shut down already: then the last cell's numbers are the last ones
        now = status(state["pid"]) or state["last"]
        result.peak = max([now.get("VmHWM", 0)] + [c.hwm for c in result.cells])
        result.final_rss = now.get("VmRSS", 0)
        state["watch"].stop()
        result.children = dict(state["watch"].peaks)

    client.on_notebook_start = started
    client.on_cell_executed = executed
    client.on_notebook_complete = finished
    client.on_notebook_error = finished
    began = time.perf_counter()
    client.execute()
    result.seconds = time.perf_counter() - began
    return result


def report(result: NotebookMemory, top: int) -> str:
    mib = lambda n: f"{n / MIB:7.1f}"  # noqa: E731
    lines = [f"## {result.name}  (root {result.root}; {result.seconds:.0f} s)",
             f"kernel: ready {mib(result.start_rss)} MiB, peak (VmHWM) {mib(result.peak)} MiB, "
             f"at the end (VmRSS) {mib(result.final_rss)} MiB",
             f"imported by the end: {', '.join(result.loaded) or '?'}"]
    if len(result.gc) == 3:
        before, collected, trimmed = result.gc
        lines.append(f"at the end, a full gc.collect() frees {mib(before - collected)} MiB of "
                     f"RSS, then malloc_trim {mib(collected - trimmed)} MiB")
    lines += ["", f"cells that raised the kernel's peak most (top {top}):",
              "| cell | raised peak MiB | RSS change MiB | RSS after MiB | peak after MiB | code |",
              "|---|---|---|---|---|---|"]
    for cell in sorted(result.cells, key=lambda c: -c.raised)[:top]:
        if cell.raised <= 0:
            break
        lines.append(f"| {cell.index} | {mib(cell.raised)} | {mib(cell.grew)} | {mib(cell.rss)} "
                     f"| {mib(cell.hwm)} | `{cell.first_line}` |")
    for module, stack in result.who.items():
        lines.append(f"first import of {module}: " + " <- ".join(reversed(stack)))
    if result.children:
        ranked = sorted(result.children.items(), key=lambda kv: -kv[1][1])
        lines += ["", f"child processes (not the kernel): {len(ranked)}, the largest {top} "
                  "by their own peak (a PostgreSQL backend's includes shared buffers):",
                  "| pid | peak MiB | command |", "|---|---|---|"]
        for pid, (cmd, hwm) in ranked[:top]:
            lines.append(f"| {pid} | {mib(hwm)} | `{cmd[:90]}` |")
    else:
        lines.append("\nno child processes seen")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="notebook stems or prefixes (default: all)")
    parser.add_argument("--root", type=Path, default=HERE,
                        help="checkout whose notebooks and atlas_sim to run (default: this one)")
    parser.add_argument("--top", type=int, default=6, help="cells listed per notebook")
    parser.add_argument("--interval", type=float, default=0.05,
                        help="seconds between samples of the child processes")
    parser.add_argument("--ipynb", action="store_true",
                        help="execute the committed .ipynb rather than the source")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--who-imports", default="",
                        help="comma-separated modules (scipy.stats,redis): show which "
                             "atlas_sim code first imported each")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.ipynb:
        paths = sorted((root / "notebooks").glob("*.ipynb"))
    else:
        paths = sorted((root / "notebooks" / "src").glob("*.py"))
    if args.names:
        paths = [p for p in paths if any(p.stem == n or p.stem.startswith(n + "_")
                                         for n in args.names)]
    if not paths:
        sys.exit(f"no notebooks matched {args.names or '*'} under {root}")
    results = []
    for path in paths:
        result = measure(path, root, args.interval,
                         tuple(m for m in args.who_imports.split(",") if m))
        results.append(result)
        print(report(result, args.top), flush=True)
        print(flush=True)
    print("| notebook | kernel peak MiB | largest child MiB |")
    print("|---|---|---|")
    for result in results:
        child = max((hwm for _, hwm in result.children.values()), default=0)
        print(f"| {result.name} | {result.peak / MIB:.1f} | {child / MIB:.1f} |")
    if args.json:
        args.json.write_text(json.dumps([
            {"name": r.name, "root": r.root, "start_rss": r.start_rss, "peak": r.peak,
             "final_rss": r.final_rss, "seconds": r.seconds, "loaded": r.loaded,
             "gc": r.gc, "who": r.who,
             "cells": [vars(c) for c in r.cells],
             "children": {str(pid): {"cmd": cmd, "hwm": hwm}
                          for pid, (cmd, hwm) in r.children.items()}} for r in results],
            indent=1))


if __name__ == "__main__":
    main()
