"""Figures updated in place: the same figure, new data on its artists, the limits a new figure
would have, and the layout solved again only when a margin's text changes."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from atlas_sim.analysis import TimeseriesFigure, plot_timeseries
from atlas_sim.analysis.figures import ComparisonFigure, layout_key
from atlas_sim.sim import simulate
from atlas_sim.sim.scenarios import dependency_outage, retry_storm


def snapshot(figure: Figure) -> list[dict[str, object]]:
    """What a figure shows, in data coordinates (so not the layout): per axes the limits,
    titles, lines, patches, collections, texts and legend."""
    def rounded(values: object) -> list[float | None]:  # None for NaN: NaN != NaN
        flat = np.round(np.asarray(values, dtype=float), 9).ravel()
        return [None if np.isnan(v) else float(v) for v in flat]

    def named(artist: object) -> str:  # "_child3" and the like: an artist without a name
        label = str(artist.get_label())  # type: ignore[attr-defined]
        return "" if label.startswith("_") else label

    shown = []
    for ax in figure.axes:
        legend = ax.get_legend()
        shown.append({
            "limits": rounded([*ax.get_xlim(), *ax.get_ylim()]),
            "labels": (ax.get_title(), ax.get_title("left"), ax.get_xlabel(), ax.get_ylabel()),
            "lines": [(named(line), rounded(line.get_xdata()), rounded(line.get_ydata()))
                      for line in ax.lines],
            "patches": [rounded(p.get_patch_transform().transform(p.get_path().vertices))
                        for p in ax.patches],
            "collections": [([rounded(path.vertices) for path in c.get_paths()],
                             rounded(c.get_offsets())) for c in ax.collections],
            "texts": [(t.get_text(), rounded(getattr(t, "xy", t.get_position())))
                      for t in ax.texts],
            "legend": [t.get_text() for t in legend.get_texts()] if legend else None,
        })
    shown.append({"suptitle": figure.get_suptitle()})
    return shown


def out_of_view(figure: Figure) -> list[str]:
    """The artists whose data (lines, patches and dots placed in data coordinates) reach
    outside their axes' limits: a figure whose limits were set from its data has none. (On a
    log axis, values at or below zero are left out: matplotlib masks them.)"""
    found = []
    for k, ax in enumerate(figure.axes):
        (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        points = [(str(line.get_label()), np.column_stack([line.get_xdata(), line.get_ydata()]))
                  for line in ax.lines if line.get_transform() == ax.transData]
        points += [(str(p.get_label()), p.get_patch_transform().transform(p.get_path().vertices))
                   for p in ax.patches if p.get_transform().contains_branch(ax.transData)]
        points += [(str(c.get_label()), c.get_offsets()) for c in ax.collections
                   if len(c.get_offsets()) and c.get_offset_transform() == ax.transData]
        for label, xy in points:
            xy = np.asarray(xy, dtype=float)
            xy = xy[np.isfinite(xy).all(axis=1)]
            for i, scale in enumerate((ax.get_xscale(), ax.get_yscale())):
                if scale == "log":  # a log axis cannot show zero or less: matplotlib masks it
                    xy = xy[xy[:, i] > 0]
            low = np.array([x0, y0]) - 1e-9 * max(1.0, abs(x1), abs(y1))
            high = np.array([x1, y1]) + 1e-9 * max(1.0, abs(x1), abs(y1))
            if len(xy) and not ((xy >= low).all() and (xy <= high).all()):
                found.append(f"axes {k}: {label}")
    return found


@pytest.fixture(scope="module")
def runs():
    return {"breaker": simulate(dependency_outage(True, seed=3)),
            "no breaker": simulate(dependency_outage(False, seed=3)),
            "storm": simulate(retry_storm("none", seed=3))}


def test_an_update_keeps_the_figure_and_puts_the_new_data_on_its_artists(runs):
    plot = TimeseriesFigure(1.0, title="{name}")
    figure = plot.draw({"breaker": runs["breaker"]})
    rates = figure.axes[0]
    offered = rates.lines[0]
    assert plot.draw({"no breaker": runs["no breaker"]}) is figure  # the same figure ...
    assert rates.lines[0] is offered  # ... and the same line, with the other run's data
    ts = runs["no breaker"].timeseries(1.0)
    assert offered.get_ydata() == pytest.approx(ts["offered"].to_numpy())
    assert figure.get_suptitle() == "no breaker"
    shaded = [c for c in rates.collections if len(c.get_paths())]
    assert shaded == [c for c in shaded if c.get_alpha() == 0.6]  # only the fault bar is left


@pytest.mark.parametrize("order", [("breaker", "no breaker", "storm"),
                                   ("storm", "breaker", "no breaker")])
def test_updated_in_place_it_shows_what_a_new_figure_shows(runs, order):
    plot = TimeseriesFigure(1.0)
    for name in order:
        figure = plot.draw(runs[name])
    fresh = plot_timeseries(runs[order[-1]], 1.0)
    assert snapshot(figure) == snapshot(fresh)  # data, limits, shading, legend, titles


def test_the_layout_is_solved_once_and_again_only_when_a_margin_text_changes(runs):
    plot = TimeseriesFigure(1.0, title="Dependency hangs ({name})")
    figure = plot.draw({"breaker": runs["breaker"]})
    assert plot.layouts == 1 and figure.get_layout_engine() is None  # draws lay out nothing
    positions = [ax.get_position().bounds for ax in figure.axes]
    (title,) = [t for t in figure.texts if t.get_text() == figure.get_suptitle()]
    title_at = title.get_position()  # where constrained layout put it
    plot.draw({"breaker": runs["breaker"]})  # the same again: nothing to lay out anew
    assert title.get_position() == title_at and plot.layouts == 1  # the title stays there
    plot.draw({"breaker": simulate(dependency_outage(True, seed=4))})  # another seed
    key = layout_key(figure)
    plot.draw({"breaker": simulate(dependency_outage(True, seed=4))})
    assert layout_key(figure) == key and plot.layouts <= 2
    solved = plot.layouts
    plot.draw({"no breaker": runs["no breaker"]})  # fewer legend entries: new margins
    assert plot.layouts == solved + 1
    assert [ax.get_position().bounds for ax in figure.axes] != positions


def test_digits_count_as_one_width_in_the_layout_key():
    from atlas_sim.analysis.figures import _shape_of

    assert _shape_of("120") == _shape_of("350") != _shape_of("1200")
    assert _shape_of(r"$\mathdefault{10^{-3}}$") == _shape_of(r"$\mathdefault{10^{-7}}$")


def test_a_table_with_other_rows_gets_a_new_figure():
    import pandas as pd

    plot = ComparisonFigure(["calls"])
    first = plot.draw(pd.DataFrame({"calls": [3.0, 5.0]}, index=["a", "b"]))
    same_rows = plot.draw(pd.DataFrame({"calls": [30.0, 50.0]}, index=["a", "b"]))
    assert same_rows is first
    assert [t.get_text() for t in first.axes[0].texts] == ["30", "50"]
    other_rows = plot.draw(pd.DataFrame({"calls": [1.0]}, index=["c"]))
    assert other_rows is not first and len(other_rows.axes[0].patches) == 1


def test_a_line_cut_to_the_view_ends_where_it_crosses_the_limits():
    from atlas_sim.analysis.figures import clip_to_view

    # rises through 10 between x = 1 and 2 (at 1.5), comes back at 3.5, and leaves by 0
    x, y = clip_to_view([0, 1, 2, 3, 4, 5], [5, 8, 12, 14, 6, -2], 0.0, 10.0)
    assert np.allclose(x, [0, 1, 1.5, np.nan, 3.5, 4, 4.75, np.nan], equal_nan=True)
    assert np.allclose(y, [5, 8, 10, np.nan, 10, 6, 0, np.nan], equal_nan=True)
    # a line all in view comes back as it is
    x, y = clip_to_view([0, 1], [1, 2], 0.0, 10.0)
    assert x.tolist() == [0, 1] and y.tolist() == [1, 2]
    # a log axis draws a segment straight in log y: 1e-2 -> 1e-6 crosses 1e-4 half-way;
    # a zero (clipped far below by the axis) crosses at once
    x, y = clip_to_view([0, 2, 3], [1e-2, 1e-6, 0.0], 1e-4, 1.0, log=True)
    assert np.allclose(x, [0, 1, np.nan], equal_nan=True)
    x, y = clip_to_view([0, 1], [1e-3, 0.0], 1e-4, 1.0, log=True)
    assert x[1] == pytest.approx(0.0, abs=1e-2) and y[1] == 1e-4
    # a steps-post line crosses on the riser, at the later point's x; a segment through the
    # whole view crosses both limits
    x, y = clip_to_view([0, 1, 2, 3], [0.5, 0.2, 20, -5], 0.0, 10.0, steps=True)
    assert np.allclose(x, [0, 1, 2, np.nan, 3, 3, np.nan], equal_nan=True)
    assert np.allclose(y, [0.5, 0.2, 10, np.nan, 10, 0, np.nan], equal_nan=True)


def test_a_panel_canvas_draws_the_pixels_agg_draws_texts_moved_and_changed():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from atlas_sim.analysis.figures import PanelCanvas

    def pixels(canvas_class: type, figure: Figure) -> np.ndarray:
        canvas_class(figure)
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba()).copy()

    figure = Figure(figsize=(5, 3), dpi=90)
    ax = figure.subplots()
    (line,) = ax.plot([0, 1], [0, 1], label="a line")
    ax.legend(loc="upper left")
    ax.set_ylabel("rotated label")
    note = ax.annotate("note", (0.3, 0.5), rotation=30)
    ax.set_title("$x^2$ and plain text")  # mathtext goes to Agg as it is
    for step in range(3):  # the same texts again, then moved by fractions of a pixel, changed
        line.set_data([0, 1 + step * 0.37], [0, 2 + step])
        ax.relim()
        ax.autoscale_view()
        note.set_text(f"note {step}" if step else "note")
        note.xy = (0.3 + 0.013 * step, 0.5)
        assert np.array_equal(pixels(PanelCanvas, figure), pixels(FigureCanvasAgg, figure))


def test_a_panel_canvas_draws_agg_s_pixels_at_a_second_dpi_and_after_a_font_change():
    # the caches are shared by every panel canvas: a text drawn at 90 dpi, then at 150, then
    # with another sans-serif font, must not come back with the first draw's layout or glyphs
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from atlas_sim.analysis.figures import PanelCanvas

    def pixels(canvas_class: type, dpi: float) -> np.ndarray:
        figure = Figure(figsize=(4, 2), dpi=dpi)
        ax = figure.subplots()
        ax.set_title("the same words at two sizes")
        ax.set_xlabel("latency (ms)")
        canvas_class(figure)
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba()).copy()

    for dpi in (90, 150, 90):
        assert np.array_equal(pixels(PanelCanvas, dpi), pixels(FigureCanvasAgg, dpi)), dpi
    with matplotlib.rc_context({"font.sans-serif": ["DejaVu Serif"],
                                "font.family": "sans-serif"}):
        assert np.array_equal(pixels(PanelCanvas, 90), pixels(FigureCanvasAgg, 90))
