"""Panels and controls: update(**values) changes the summary, caches, and validates its input."""

from __future__ import annotations

import importlib
import itertools
import re
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from atlas_sim.analysis import plot_latency_cdf
from atlas_sim.server_config import ServerConfig
from atlas_sim.sim import Scenario, simulate
from atlas_sim.widgets import Control, Panel
from atlas_sim.workload import Distribution, Load

CALLS: list[dict] = []


def run(workers: int, utilisation: float, dist: str, seed_twice: bool):
    CALLS.append({"workers": workers})
    scenario = Scenario(load=Load(rate=utilisation * workers / 0.05, duration=30.0),
                        server=ServerConfig(workers=workers,
                                            service_time=Distribution(mean=0.05, kind=dist)))
    return {"queue": simulate(scenario)}


def make_panel() -> Panel:
    return Panel(
        run,
        [Control.slider("workers", 1, 8, 2),
         Control.slider("utilisation", 0.1, 0.95, 0.7, step=0.05),
         Control.dropdown("dist", ["exponential", "constant"], "exponential"),
         Control.checkbox("seed_twice", False)],
        lambda results: plot_latency_cdf(results).figure,
        title="A queue",
    )


def test_update_with_new_values_changes_the_summary():
    panel = make_panel()
    calm = panel.update()
    busy = panel.update(utilisation=0.95)
    assert busy.table.loc["queue", "p99"] > 2 * calm.table.loc["queue", "p99"]
    assert busy.params["workers"] == 2 and panel.values["utilisation"] == 0.95
    assert busy.figure.axes and not busy.cached
    plt.close("all")


def test_values_seen_before_come_from_the_cache():
    panel = make_panel()
    CALLS.clear()
    first = panel.update(workers=3)
    panel.update(workers=4)
    again = panel.update(workers=3)
    assert again.cached and again.results is first.results
    assert len(CALLS) == 2
    plt.close("all")


def test_reset_restores_the_defaults():
    panel = make_panel()
    panel.update(workers=5, dist="constant")
    view = panel.reset()
    assert view.params == panel.defaults == {"workers": 2, "utilisation": 0.7,
                                             "dist": "exponential", "seed_twice": False}
    plt.close("all")


@pytest.mark.parametrize(
    ("values", "message"),
    [({"workers": 9}, "workers must be an integer >= 1 and <= 8, got 9"),
     ({"utilisation": 1.5}, "utilisation must be a number >= 0.1 and <= 0.95"),
     ({"dist": "gamma"}, "dist must be one of 'exponential', 'constant'"),
     ({"seed_twice": "yes"}, "seed_twice must be True or False"),
     ({"speed": 1}, r"unknown parameter\(s\) \['speed'\]")],
)
def test_bad_values_are_refused_with_the_allowed_range(values, message):
    with pytest.raises(ValueError, match=message):
        make_panel().update(**values)


def test_controls_make_released_not_dragged_widgets():
    panel = make_panel()
    box = panel.widget()
    sliders = [w for w in panel._widgets.values() if hasattr(w, "continuous_update")]
    assert len(sliders) == 2 and all(not s.continuous_update for s in sliders)
    assert panel.widget() is box  # built once
    panel._widgets["workers"].value = 4  # what a slider release does
    assert panel.values["workers"] == 4 and panel.last.params["workers"] == 4
    plt.close("all")


def test_control_specs_are_validated():
    assert Control.slider("n", 1, 10, 5).kind == "int"
    assert Control.slider("x", 0.0, 1.0, 0.5).step == pytest.approx(0.01)
    with pytest.raises(ValueError, match="n must be an integer >= 1 and <= 10, got 11"):
        Control.slider("n", 1, 10, 11)
    with pytest.raises(ValueError, match="low < high needed"):
        Control.slider("n", 5, 5, 5)
    with pytest.raises(ValueError, match="a choice needs options"):
        Control.dropdown("j", [], None)
    with pytest.raises(ValueError, match="control names must be unique"):
        Panel(run, [Control.checkbox("a", True), Control.checkbox("a", False)], lambda r: None)


def test_update_leaves_no_figure_open_in_pyplot():
    plt.close("all")
    panel = make_panel()
    for utilisation in (0.3, 0.5, 0.7):
        view = panel.update(utilisation=utilisation)
    assert plt.get_fignums() == [] and view.figure.axes  # built, not left open


def test_reset_runs_the_experiment_once_however_many_controls_moved():
    panel = make_panel()
    panel.widget()
    for name, value in (("workers", 5), ("utilisation", 0.9), ("dist", "constant")):
        panel._widgets[name].value = value
    shown: list[int] = []
    original = panel.update

    def counting_update(**values):
        shown.append(1)
        return original(**values)

    panel.update = counting_update
    panel.reset()
    assert len(shown) == 1 and panel.values == panel.defaults
    assert [w.value for w in panel._widgets.values()] == list(panel.defaults.values())
    plt.close("all")


def test_panel_figures_render_to_png_once():
    from atlas_sim.widgets import render_png

    png = render_png(make_panel().update().figure)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("pyplot", [False, True])
def test_render_png_gives_the_pixels_savefig_gives(pyplot):
    import io

    from PIL import Image

    from atlas_sim.analysis.figures import TimeseriesFigure
    from atlas_sim.sim import simulate
    from atlas_sim.sim.scenarios import dependency_outage
    from atlas_sim.widgets import render_png

    figure = TimeseriesFigure(1.0, pyplot=pyplot).draw(simulate(dependency_outage(True, seed=1)))
    if pyplot:  # constrained layout, solved at each draw, settles after the first two
        for _ in range(2):
            figure.savefig(io.BytesIO(), format="png", dpi=90)
    saved = io.BytesIO()
    figure.savefig(saved, format="png", dpi=90)
    drawn = render_png(figure)
    if not pyplot:  # a panel's figure (at 90 dpi): no alpha channel, it is opaque
        assert Image.open(io.BytesIO(drawn)).mode == "RGB"
    pixels = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in
              (saved.getvalue(), drawn)]
    assert pixels[0].shape == pixels[1].shape and np.array_equal(*pixels)
    plt.close("all")


def test_a_displayed_panel_carries_the_widget_and_a_static_figure_and_table():
    panel = make_panel()
    bundle = panel._repr_mimebundle_()
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == panel.widget().model_id
    static = bundle["text/html"]
    assert '<img src="data:image/png;base64,' in static and "<table" in static
    assert "A queue" in static and "workers = 2" in static
    assert "VBox" not in bundle["text/plain"] and "A queue" in bundle["text/plain"]
    plt.close("all")


def test_the_output_area_holds_exactly_one_figure_and_one_table_after_each_move():
    panel = make_panel()
    panel.widget()
    first = panel._output.outputs
    panel._widgets["workers"].value = 3
    kinds = [sorted(o["data"]) for o in panel._output.outputs]
    assert kinds == [["image/png", "text/plain"], ["text/html", "text/plain"]]
    assert panel._output.outputs != first
    panel._widgets["utilisation"].value = 0.95
    panel._widgets["workers"].value = 1  # utilisation 0.95 on one worker: still valid
    assert len(panel._output.outputs) == 2
    sent: list[object] = []
    panel._output.observe(lambda change: sent.append(change["new"]), names="outputs")
    panel._widgets["seed_twice"].value = True  # changes nothing in the figure or the table
    panel._widgets["seed_twice"].value = False
    assert len(sent) == 2 and sent[0] != sent[1]  # drawn anew each time all the same
    plt.close("all")


def test_a_refused_combination_is_said_in_the_output_area():
    def run(n: int):
        if n == 2:
            raise ValueError("no such queue")
        return run_queue(n)

    def run_queue(n: int):
        return {"queue": simulate(Scenario(load=Load(rate=10.0, duration=5.0),
                                           server=ServerConfig(workers=n)))}

    panel = Panel(run, [Control.slider("n", 1, 3, 1)],
                  lambda results: plot_latency_cdf(results).figure)
    panel.widget()
    panel._widgets["n"].value = 2
    [said] = panel._output.outputs
    assert said["data"]["text/plain"].startswith("Cannot run this combination: no such queue")
    plt.close("all")


class CountingPlot:
    """An in-place plot: one figure, its line given each run's latencies."""

    def __init__(self) -> None:
        self.figure = None
        self.built = 0

    def draw(self, results):
        latency = results["queue"].requests["latency"].sort_values().to_numpy()
        if self.figure is None:
            self.built += 1
            self.figure = plt.figure()  # on pyplot's books: the panel takes it off
            (self.line,) = self.figure.subplots().plot(latency)
        self.line.set_ydata(latency)
        self.line.set_xdata(range(len(latency)))
        return self.figure


def in_place_panel() -> tuple[Panel, CountingPlot]:
    plot = CountingPlot()
    return Panel(run, [Control.slider("workers", 1, 8, 2),
                       Control.slider("utilisation", 0.1, 0.95, 0.7, step=0.05),
                       Control.dropdown("dist", ["exponential", "constant"], "exponential"),
                       Control.checkbox("seed_twice", False)], plot, title="In place"), plot


def test_an_in_place_plot_keeps_one_figure_and_moves_its_data():
    from atlas_sim.widgets import InPlacePlot

    panel, plot = in_place_panel()
    assert isinstance(plot, InPlacePlot)
    calm = panel.update()
    line = calm.figure.axes[0].lines[0]
    calm_data = line.get_ydata().copy()
    busy = panel.update(utilisation=0.95)
    assert busy.figure is calm.figure and busy.figure.axes[0].lines[0] is line
    assert plot.built == 1 and len(line.get_ydata()) != len(calm_data)
    assert line.get_ydata().max() > 2 * calm_data.max()  # the busier queue's tail
    assert plt.get_fignums() == []  # taken off pyplot's books all the same


def test_a_plot_function_still_gets_a_new_figure_per_update():
    panel = make_panel()
    first = panel.update().figure
    assert panel.update(workers=3).figure is not first
    plt.close("all")


def test_an_in_place_panel_shows_a_new_png_after_each_move():
    panel, plot = in_place_panel()
    panel.widget()
    shown = panel._output.outputs[0]["data"]["image/png"]
    panel._widgets["utilisation"].value = 0.95
    now = panel._output.outputs[0]["data"]["image/png"]
    assert now != shown and plot.built == 1
    assert panel.static_html().count("data:image/png;base64," + now) == 1


# -- every panel of every notebook: layout and readouts (issue 20, items 8 and 11) ------------

NOTEBOOK_SOURCES = sorted((Path(__file__).resolve().parents[1] / "notebooks" / "src").glob("*.py"))


def notebook_panels() -> list[tuple[str, Callable[[], Panel]]]:
    """Every panel a notebook builds (``module.name_panel(...)`` in its source), once each, as
    ``("NN module.name_panel", factory)``."""
    found: dict[str, Callable[[], Panel]] = {}
    for source in NOTEBOOK_SOURCES:
        for module, name in re.findall(r"\b(\w+)\.(\w+_panel)\(", source.read_text()):
            factory = getattr(importlib.import_module(f"atlas_sim.experiments.{module}"), name)
            found.setdefault(f"{source.stem[:2]} {module}.{name}", factory)
    return sorted(found.items())


PANELS = notebook_panels()


def test_every_notebook_panel_is_found():
    assert len(PANELS) >= 15 and {key[:2] for key, _ in PANELS} == {"00", "01", "02", "03"}


def _em_and_ch(css: str) -> tuple[float, float]:
    """``calc(Nch + Mem)``, ``Nch`` or ``Mem`` as (M, N)."""
    em = sum(float(x) for x in re.findall(r"([\d.]+)em", css))
    ch = sum(float(x) for x in re.findall(r"([\d.]+)ch", css))
    assert re.fullmatch(r"(calc\()?[\d.]+(ch|em)( \+ [\d.]+(ch|em))?\)?", css), css
    return em, ch


@pytest.mark.parametrize(("key", "make"), PANELS, ids=[key for key, _ in PANELS])
def test_every_slider_keeps_room_for_its_track_beside_the_longest_description(key, make):
    """ipywidgets' default box is 300 px whatever the description: with
    ``description_width="initial"`` a long description ("follower tail index (lower = more
    skewed)") left the track zero pixels wide. Every control of a panel now keeps one room for
    the descriptions, a character-width per character of the longest, and is wider than that
    room by a track of at least ``TRACK_MIN_EM`` and a readout (the browser test measures the
    tracks themselves)."""
    from atlas_sim.widgets import READOUT_EM, TRACK_MIN_EM

    panel = make()
    widgets = panel.control_widgets()
    longest = max(len(c.description) for c in panel.controls.values())
    rooms = {w.style.description_width for w in widgets.values()}
    assert len(rooms) == 1, f"{key}: descriptions of different widths {rooms}"
    (room,) = rooms
    assert _em_and_ch(room) == (0, longest + 1), f"{key}: {room} for {longest} characters"
    for name, widget in widgets.items():
        assert widget.description == panel.controls[name].description
        em, ch = _em_and_ch(widget.layout.width)
        assert ch == longest + 1 and em >= TRACK_MIN_EM + READOUT_EM, (key, name, em, ch)
        assert widget.layout.max_width == "100%"


# A readout or table entry a reader should not have to decode: a float's raw repr (five or more
# significant decimals: "65.21739130434783"; "0.000273" has three), scientific notation for a
# number above one ("1.00e+3"), a fraction of a whole thing ("0.445 accounts"). Tiny
# probabilities ("3.37e-06") may stay as they are: that is how one that small is written.
RAW_FLOAT = re.compile(r"\d\.0*[1-9]\d{4,}")
BIG_SCIENTIFIC = re.compile(r"\d(?:\.\d+)?e\+\d+", re.IGNORECASE)
WHOLE_THINGS = re.compile(r"accounts|servers|workers|replicas", re.IGNORECASE)  # counts, not means


def _settings(panel: Panel) -> list[dict[str, object]]:
    """The defaults, then each slider at its low and its high end (the others at defaults)."""
    ends = [{name: end} for name, c in panel.controls.items() if c.kind in ("int", "float")
            for end in (c.low if c.kind == "float" else int(c.low),  # type: ignore[arg-type]
                        c.high if c.kind == "float" else int(c.high))]  # type: ignore[arg-type]
    return [{}, *ends]


@pytest.mark.parametrize(("key", "make"), PANELS, ids=[key for key, _ in PANELS])
def test_readouts_and_tables_show_numbers_a_reader_can_read(key, make):
    panel = make()
    for name, control in panel.controls.items():
        if control.kind in ("int", "float"):
            for value in (control.low, control.high, control.default):
                shown = control.format(value)
                assert not RAW_FLOAT.search(shown) and "e" not in shown, (key, name, shown)
    for setting in _settings(panel):
        try:
            view = panel.update(**{**panel.defaults, **setting})
        except ValueError:
            continue  # a combination the panel refuses, and says so
        text = view.table.to_string()
        where = f"{key} at {setting or 'defaults'}"
        assert not RAW_FLOAT.search(text), f"{where}: {RAW_FLOAT.findall(text)}\n{text}"
        assert not BIG_SCIENTIFIC.search(text), f"{where}: {BIG_SCIENTIFIC.findall(text)}"
        for column in view.table.columns:
            if WHOLE_THINGS.search(str(column)) and not re.search(r"[/%]|per |rate|share",
                                                                  str(column)):
                for cell in view.table[column].astype(str):
                    assert not re.fullmatch(r"\d*\.\d*[1-9]\d*", cell), (where, column, cell)
        static = panel.static_html()
        settings = re.search(r"<i>(.*?) \(run the notebook", static)
        assert settings and not RAW_FLOAT.search(settings.group(1)), (where, settings)
    plt.close("all")


def test_a_float_readout_has_the_decimals_of_its_step():
    assert Control.slider("mean_ms", 5.0, 1000.0, 50.0, step=5.0).format(1000.0) == "1000"
    assert Control.slider("ratio", 0.5, 200.0, 65.21739130434783, step=0.5).format(
        65.21739130434783) == "65.2"
    assert Control.slider("p", 0.001, 0.05, 0.01, step=0.001).format(0.05) == "0.050"
    assert Control.slider("x", 0.0, 1.0, 0.5, step=1 / 3).readout_format() == ".4f"


# The smallest text a panel's figure may carry, in points: matplotlib's "small" (8.33 pt at the
# default 10 pt) is about 10 px in the panel's 90 dpi PNG; "x-small" (6.9 pt, under 9 px) was
# the size of the legends and labels readers could not read.
MIN_TEXT_PT = 8.0


def _shown_texts(figure) -> list:
    """The figure's texts a reader sees: visible, not empty, and no tick label of a tick
    outside its axis's view (matplotlib keeps those, and does not draw them)."""
    from matplotlib.text import Text

    unseen = set()
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = 1e-9 * (high - low)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - slack <= tick.get_loc() <= high + slack:
                    unseen.update((id(tick.label1), id(tick.label2)))
    return [t for t in figure.findobj(Text)
            if id(t) not in unseen and t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize(("key", "make"), PANELS, ids=[key for key, _ in PANELS])
def test_panel_figures_have_readable_unclipped_text_and_tick_labels_apart(key, make):
    """At the defaults and each slider's ends: every text at least ``MIN_TEXT_PT``, inside the
    figure (a label past the edge is cut off in the PNG), and no two tick labels of one axis
    overlapping."""
    from atlas_sim.widgets import render_png

    panel = make()
    for setting in _settings(panel):
        try:
            figure = panel.update(**{**panel.defaults, **setting}).figure
        except ValueError:
            continue
        render_png(figure)  # lays out and draws, as the panel does
        renderer = figure.canvas.get_renderer()
        edge = figure.bbox
        where = f"{key} at {setting or 'defaults'}"
        texts = _shown_texts(figure)
        small = [(t.get_text(), round(t.get_size(), 1)) for t in texts
                 if t.get_size() < MIN_TEXT_PT]
        assert not small, f"{where}: text under {MIN_TEXT_PT} pt: {small}"
        outside = []
        for text in texts:
            box = text.get_window_extent(renderer)
            if (box.x0 < edge.x0 - 2 or box.x1 > edge.x1 + 2 or box.y0 < edge.y0 - 2
                    or box.y1 > edge.y1 + 2):
                outside.append(text.get_text())
        assert not outside, f"{where}: text cut off at the figure's edge: {outside}"
        shown = {id(t) for t in texts}
        for ax in figure.axes:
            for axis in (ax.xaxis, ax.yaxis):
                labels = [t for t in axis.get_ticklabels(which="both") if id(t) in shown]
                boxes = [t.get_window_extent(renderer) for t in labels]
                for i, j in itertools.combinations(range(len(labels)), 2):
                    assert not boxes[i].overlaps(boxes[j]), (
                        f"{where}: tick labels {labels[i].get_text()!r} and "
                        f"{labels[j].get_text()!r} overlap")
    plt.close("all")
