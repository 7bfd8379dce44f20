"""How fast do the notebooks' slider panels answer? One slider move, kernel side, by phase.

For every panel of notebooks 00-03b, one slider (the panel's first) is moved step by step
through values not seen before (so nothing comes from the panel's cache), as a reader moves it,
and each move is timed by phase with ``time.perf_counter``:

* run: the experiment (simulation, or closed forms) for the new values;
* table: the numbers under the figure;
* figure: the plot. "in place" is what the panels do (``analysis.figures.InPlaceFigure``:
  new data on the figure's artists, the layout kept); "rebuilt" is what they did before issue
  14, measured in the same run as a baseline: a new figure per move, constrained layout solved
  at every draw (the same drawing code with a fresh figure each time);
* png: ``widgets.render_png`` (draw at 90 dpi and encode), and of that the encoding alone;
* message: the PNG in base64 and the table in HTML, as JSON (what the comm carries).

Run: .venv/bin/python benchmarks/bench_widgets.py [--moves N] [--profile PANEL]

``--sliders`` instead moves every slider of every panel as the browser tests do (Reset, then
one arrow-key step from the defaults: right, or left at the maximum; a control the test sets
first, set first), through the panel's own widget code (``Panel._show``, no kernel), and prints
the kernel's steps as the draw log has them (``Panel.last_draw``: run, figure, table, png,
send, total; median over ``--rounds`` fresh panels). ``--notebooks 03 03b`` keeps those
notebooks' panels; ``--json FILE`` writes the rows. ``--against DIR`` is the A/B for a quiet
machine: each round runs this script once with ``PYTHONPATH=DIR`` (a base checkout, e.g.
/work/wt-base) and once with this checkout, alternating, and prints both per panel.

``--png`` times the PNG encoding of each panel's figure as ``savefig`` did it and as
``render_png`` does it. ``--profile "02 retry storm"`` prints cProfile's top functions over
the moves of one panel, in place. What the browser adds (comm round trip, JupyterLab
rendering the output, the image decoded and painted) is measured by the browser tests:
``build/browser/timings.json``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imsave

from atlas_sim.experiments import (
    breakers,
    datasystem_panel,
    faults,
    load,
    omission,
    percentiles,
    queueing,
    retries,
    tail,
    welcome,
)
from atlas_sim.widgets import InPlacePlot, Panel, render_png

PANELS: dict[str, Callable[[], Panel]] = {
    "00 breaker": welcome.breaker_panel,
    "01 fleet": faults.fleet_panel,
    "01 redundancy": faults.redundancy_panel,
    "01 backoff": retries.backoff_panel,
    "01 thundering herd": retries.herd_panel,
    "01 contention": retries.contention_panel,
    "01 retry budget": retries.budget_panel,
    "02 circuit breaker": breakers.breaker_panel,
    "02 timeout": breakers.timeout_panel,
    "02 overload": breakers.overload_panel,
    "02 retry storm": breakers.storm_panel,
    "03 load parameters": load.load_panel,
    "03 recording": percentiles.recording_panel,
    "03 omission": omission.omission_panel,
    "03 queueing": queueing.queueing_panel,
    "03 tail at scale": tail.tail_panel,
    "03b pool": datasystem_panel.pool_panel,
}
PHASES = ("run", "table", "figure", "png", "encode", "message")


def slider_values(panel: Panel, moves: int) -> tuple[str, list[Any]]:
    """The first slider of ``panel`` and ``moves`` values it takes from its default, step by
    step, turning back at an end."""
    control = next(c for c in panel.controls.values() if c.kind in ("int", "float"))
    assert control.step is not None and control.low is not None and control.high is not None
    values: list[Any] = []
    value, step = control.default, control.step
    while len(values) < moves:
        if not control.low <= value + step <= control.high:
            step = -step
        value = value + step
        values.append(int(value) if control.kind == "int" else round(value, 10))
    return control.name, values


def rebuilt(plot: Any) -> Callable[[Any], Any]:
    """The figure as panels drew it before issue 14: a new figure per move, laid out by
    constrained layout at every draw."""
    if not isinstance(plot, InPlacePlot):
        return plot  # a plot function already makes a new figure each time

    def draw(results: Any) -> Any:
        fresh = copy.copy(plot)
        fresh.figure, fresh.freeze_layout = None, False  # type: ignore[attr-defined]
        return fresh.draw(results)
    return draw


def encode_only(figure: Any) -> float:
    """Seconds to encode the figure's last drawing as PNG (what ``savefig`` does after its
    draw)."""
    canvas = figure.canvas
    if not hasattr(canvas, "buffer_rgba"):  # a figure closed in pyplot: give it Agg's canvas
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
    started = time.perf_counter()
    imsave(io.BytesIO(), np.asarray(canvas.buffer_rgba()), format="png")
    return time.perf_counter() - started


def one_move(panel: Panel, draw: Callable[[Any], Any], params: dict[str, Any]) -> dict[str, float]:
    times: dict[str, float] = {}
    started = time.perf_counter()
    results = panel.run_fn(**params)
    times["run"] = time.perf_counter() - started
    started = time.perf_counter()
    table = panel.table_fn(results)
    times["table"] = time.perf_counter() - started
    started = time.perf_counter()
    figure = draw(results)
    times["figure"] = time.perf_counter() - started
    started = time.perf_counter()
    png = render_png(figure)
    times["png"] = time.perf_counter() - started
    times["encode"] = encode_only(figure)
    started = time.perf_counter()
    message = json.dumps([{"image/png": base64.b64encode(png).decode("ascii")},
                          {"text/html": table.to_html()}])
    times["message"] = time.perf_counter() - started
    times["kb"] = len(message) / 1024
    plt.close("all")
    return times


def measure(make: Callable[[], Panel], moves: int, mode: str) -> dict[str, float]:
    panel = make()
    panel.update()  # the cell that shows the panel: the figure is built here
    name, values = slider_values(panel, moves)
    plot = panel.plot_fn
    # a panel with a plain plot function draws a new figure per move in either mode
    draw = plot.draw if mode == "in place" and isinstance(plot, InPlacePlot) else rebuilt(plot)
    rows = [one_move(panel, draw, {**panel.defaults, name: value}) for value in values]
    medians = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    medians["total"] = sum(medians[p] for p in ("run", "table", "figure", "png", "message"))
    return medians


def profile(name: str, moves: int) -> None:
    panel = PANELS[name]()
    panel.update()
    slider, values = slider_values(panel, moves)
    profiler = cProfile.Profile()
    profiler.enable()
    for value in values:
        view = panel.update(**{slider: value})
        render_png(view.figure)
    profiler.disable()
    print(f"cProfile, {name}: {moves} moves of {slider!r}, update + render_png")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


# -- every slider, as the browser tests move it -------------------------------------------

#: Controls the browser tests set before moving a slider (tests/browser's SETTINGS_FIRST, by
#: parameter name): slider -> [(control, value)].
SETTINGS_FIRST: dict[str, list[tuple[str, Any]]] = {
    "window_size": [("mode", "failure_rate")],
    "token_ratio": [("error_rate", 0.3)],
}
DRAW_STEPS = ("run", "figure", "table", "png", "send", "total")


def browser_moves(name: str, make: Callable[[], Panel]) -> list[dict[str, Any]]:
    """Each slider of a new panel moved as the browser test moves it: Reset (the defaults, from
    the cache), any setting the test makes first, then one step right (left at the maximum),
    through the widgets' own callbacks; the draw log's steps (``Panel.last_draw``) of that
    move, in seconds, one dict per slider."""
    panel = make()
    panel.widget()  # the first draw, as the cell that shows the panel
    rows = []
    for slider, control in panel.controls.items():
        if control.kind not in ("int", "float"):
            continue
        assert control.step is not None and control.high is not None
        panel._show(panel.reset)  # the Reset button
        for other, value in SETTINGS_FIRST.get(slider, ()):
            if other in panel._widgets:
                panel._widgets[other].value = value
        widget = panel._widgets[slider]
        step = -control.step if widget.value + control.step > control.high + 1e-9 \
            else control.step
        value = widget.value + step
        widget.value = int(value) if control.kind == "int" else round(value, 10)
        rows.append({"panel": name, "slider": slider,
                     **{k: panel.last_draw.get(k) for k in ("cached", *DRAW_STEPS)}})
    plt.close("all")
    return rows


def sliders(names: list[str], rounds: int) -> list[dict[str, Any]]:
    """``browser_moves`` for the panels ``names``, ``rounds`` times (a new panel each round,
    so nothing is cached from the round before), rounds interleaved across panels."""
    rows: list[dict[str, Any]] = []
    for round_ in range(rounds):
        for name in names:
            rows += [{**row, "round": round_} for row in browser_moves(name, PANELS[name])]
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per panel, the median over its moves (all sliders, all rounds) of each draw step (s),
    and per notebook (the panel names' first word) the median and 90th percentile of total."""
    out: dict[str, dict[str, float]] = {}
    for key in dict.fromkeys([r["panel"] for r in rows] + [r["panel"].split()[0] for r in rows]):
        mine = [r for r in rows if r["panel"] == key or r["panel"].split()[0] == key]
        totals = sorted(r["total"] for r in mine)
        out[key] = {step: statistics.median(r[step] for r in mine) for step in DRAW_STEPS}
        out[key]["p90"] = (statistics.quantiles(totals, n=10, method="inclusive")[8]
                           if len(totals) > 1 else totals[0])
        out[key]["moves"] = len(mine)
    return out


def print_summary(label: str, summary: dict[str, dict[str, float]]) -> None:
    print(f"{label}: kernel steps of one slider move as the browser tests make it, "
          "median ms (p90 of total)")
    print(f"{'panel':<22}{'moves':>6}" + "".join(f"{s:>8}" for s in (*DRAW_STEPS, "p90")))
    for name, row in summary.items():
        print(f"{name:<22}{row['moves']:>6}"
              + "".join(f"{1000 * row[s]:8.1f}" for s in (*DRAW_STEPS, "p90")))


def against(base: str, names: list[str], rounds: int) -> None:
    """The A/B: this script with ``--sliders --json`` under ``PYTHONPATH=base`` and under this
    checkout, one round each in turn, ``rounds`` times; both summaries printed."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    here = Path(__file__).resolve().parents[1]
    rows: dict[str, list[dict[str, Any]]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for label, root in (("base", base), ("this", str(here))):
                out = Path(tmp) / f"{label}-{round_}.json"
                subprocess.run([sys.executable, __file__, "--sliders", "--rounds", "1",
                                "--json", str(out), "--notebooks", *names],
                               env={**os.environ, "PYTHONPATH": root, "MPLBACKEND": "Agg"},
                               cwd=root, check=True, stdout=subprocess.DEVNULL)
                rows[label] += json.loads(out.read_text())
    for label, found in rows.items():
        print_summary(f"{label} ({base if label == 'base' else here})", summarise(found))


def png_encodings(rounds: int) -> None:
    """Each panel's figure encoded as ``savefig`` did (RGBA, zlib level 6) and as
    ``render_png`` does (RGB, ``PNG_COMPRESS_LEVEL``), interleaved, ``rounds`` times: median
    ms and KB."""
    from PIL import Image

    from atlas_sim.widgets import PNG_COMPRESS_LEVEL

    def encode(rgba: np.ndarray, mode: str, level: int) -> tuple[float, int]:
        started = time.perf_counter()
        pixels = rgba if mode == "RGBA" else np.ascontiguousarray(rgba[..., :3])
        out = io.BytesIO()
        Image.fromarray(pixels, mode).save(out, format="png", compress_level=level)
        return time.perf_counter() - started, len(out.getvalue())

    ways = (("RGBA", 6), ("RGB", PNG_COMPRESS_LEVEL))
    print(f"{'panel':<22}" + "".join(f"{f'{m} level {lv}':>22}" for m, lv in ways))
    for name, make in PANELS.items():
        figure = make().update().figure
        render_png(figure)
        rgba = np.asarray(figure.canvas.buffer_rgba()).copy()
        seen: dict[tuple[str, int], list[tuple[float, int]]] = {way: [] for way in ways}
        for _ in range(rounds):
            for way in ways:
                seen[way].append(encode(rgba, *way))
        cells = [f"{1000 * statistics.median(t for t, _ in seen[w]):10.1f} ms "
                 f"{seen[w][0][1] / 1024:5.0f} KB" for w in ways]
        print(f"{name:<22}" + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=9)
    parser.add_argument("--profile", choices=sorted(PANELS))
    parser.add_argument("--sliders", action="store_true",
                        help="every slider, one step from the defaults, as the browser tests")
    parser.add_argument("--notebooks", nargs="*", default=None,
                        help="with --sliders: only these notebooks' panels (00 01 02 03 03b)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="with --sliders: write every move's steps here")
    parser.add_argument("--against", metavar="DIR",
                        help="with --sliders: A/B against the checkout DIR, rounds alternated")
    parser.add_argument("--png", action="store_true",
                        help="PNG encodings of each panel's figure: savefig's and render_png's")
    args = parser.parse_args()
    if args.png:
        png_encodings(args.rounds * 3)
        return
    if args.profile:
        profile(args.profile, args.moves)
        return
    if args.sliders:
        names = [n for n in PANELS if args.notebooks is None or n.split()[0] in args.notebooks]
        if args.against:
            against(args.against, args.notebooks or sorted({n.split()[0] for n in PANELS}),
                    args.rounds)
            return
        rows = sliders(names, args.rounds)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as out:
                json.dump(rows, out)
        print(f"load average {os.getloadavg()[0]:.2f}")
        print_summary("this checkout", summarise(rows))
        return
    print(f"python {platform.python_version()}, matplotlib {matplotlib.__version__}, "
          f"{platform.machine()}, load average {os.getloadavg()[0]:.2f}; median of "
          f"{args.moves} moves, ms")
    header = "".join(f"{p:>8}" for p in ("run", "table", "figure", "png", "(enc)", "msg"))
    print(f"{'panel':<20}{'mode':<10}{header}{'total':>8}{'KB':>6}{'ratio':>7}")
    for name, make in PANELS.items():
        before = measure(make, args.moves, "rebuilt")
        after = measure(make, args.moves, "in place")
        for mode, row in (("rebuilt", before), ("in place", after)):
            cells = "".join(f"{1000 * row[p]:8.1f}" for p in PHASES)
            ratio = f"{after['total'] / before['total']:7.2f}" if mode == "in place" else ""
            print(f"{name:<20}{mode:<10}{cells}{1000 * row['total']:8.0f}{row['kb']:6.0f}"
                  f"{ratio}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
