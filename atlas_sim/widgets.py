"""Slider panels: a pure experiment function wrapped in ipywidgets.

A ``Panel`` is built from

* ``run(**params)``: a pure function from parameter values to results (a ``RunResult`` or a
  ``{name: RunResult}`` dict), for example "build a scenario, simulate it";
* a list of ``Control`` specs, one per parameter (a slider, a dropdown or a checkbox);
* ``plot``: either a function ``plot(results)`` that draws the results on a new matplotlib
  ``Figure`` and returns it, or an in-place plot (``InPlacePlot``: an object whose
  ``draw(results)`` returns one figure, built on the first call and updated in place after
  that, such as ``atlas_sim.analysis.figures.InPlaceFigure`` and its subclasses). A slider
  move then redraws only what changed: new data on the same artists, the layout kept;
* optionally ``table(results)``: the numbers shown under the figure (default: the runs'
  ``summary_table``).

``panel.update(**values)`` runs exactly what a slider release does, without a browser, and
returns a ``PanelView`` (parameters, results, table, figure): tests and benchmarks drive it.
Results for parameter values seen before come from a small cache, so moving a slider back is
instant. Sliders use ``continuous_update=False``: the experiment runs when a slider is released,
not on every pixel of a drag. A Reset button restores the defaults.

Displayed in a notebook, a panel is one output that carries two forms: the live widget
(JupyterLab, with a kernel, shows it) and a static copy of what the widget showed when the cell
ran, the figure as an inline PNG and the table as HTML. A reader who has not run anything
(GitHub, nbviewer, an untrusted notebook in JupyterLab, nbconvert to HTML) sees the static copy
instead of a one-line widget repr.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .analysis.tables import summary_table
from .validation import check_choice, check_int, check_real

__all__ = ["Control", "InPlacePlot", "Panel", "PanelView", "render_png"]

ControlKind = Literal["int", "float", "choice", "bool"]


@dataclass(frozen=True, kw_only=True)
class Control:
    """One parameter's control: ``Control.slider("clients", 10, 500, 200)`` and friends.

    ``kind`` is ``"int"`` or ``"float"`` (a slider from ``low`` to ``high`` by ``step``),
    ``"choice"`` (a dropdown of ``options``) or ``"bool"`` (a checkbox).
    """

    name: str
    kind: ControlKind
    default: Any
    low: float | None = None
    high: float | None = None
    step: float | None = None
    options: tuple[Any, ...] = ()
    label: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"name must be a Python identifier, got {self.name!r}")
        check_choice("kind", self.kind, ("int", "float", "choice", "bool"))
        numeric = self.kind in ("int", "float")
        if numeric and (self.low is None or self.high is None or not self.low < self.high):
            raise ValueError(f"{self.name}: low < high needed, got {self.low!r}, {self.high!r}")
        if self.kind == "choice" and not self.options:
            raise ValueError(f"{self.name}: a choice needs options")
        self.check(self.default)

    @classmethod
    def slider(cls, name: str, low: float, high: float, default: float, *,
               step: float | None = None, label: str = "") -> Control:
        """An integer slider if ``low``, ``high``, ``default`` and ``step`` are all integers,
        else a float slider (``step`` then defaults to a hundredth of the range)."""
        numbers = (low, high, default, 1 if step is None else step)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in numbers):
            return cls(name=name, kind="int", low=low, high=high, step=step or 1,
                       default=default, label=label)
        return cls(name=name, kind="float", low=low, high=high, default=default, label=label,
                   step=step if step is not None else (high - low) / 100)

    @classmethod
    def dropdown(cls, name: str, options: Sequence[Any], default: Any, *,
                 label: str = "") -> Control:
        return cls(name=name, kind="choice", options=tuple(options), default=default,
                   label=label)

    @classmethod
    def checkbox(cls, name: str, default: bool, *, label: str = "") -> Control:
        return cls(name=name, kind="bool", default=default, label=label)

    def check(self, value: Any) -> Any:
        """``value`` if it is allowed for this control, else ValueError naming the range."""
        if self.kind == "int":
            assert self.low is not None and self.high is not None  # checked on creation
            return check_int(self.name, value, low=int(self.low), high=int(self.high))
        if self.kind == "float":
            return check_real(self.name, value, low=self.low, high=self.high)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be True or False, got {value!r}")
            return value
        if value not in self.options:
            listed = ", ".join(repr(o) for o in self.options)
            raise ValueError(f"{self.name} must be one of {listed}, got {value!r}")
        return value

    @property
    def description(self) -> str:
        """The text beside the control: its label, or its name with spaces."""
        return self.label or self.name.replace("_", " ")

    def widget(self, description_width: str | None = None) -> Any:
        """The ipywidgets control, released-not-dragged (``continuous_update=False``).

        ``description_width`` (a CSS length) is the room kept for the description on the left;
        a panel gives every control the one width that holds its longest description
        (``description_width``), so that the tracks line up. The control is then as wide as
        that room plus ``CONTROL_ROOM_EM`` (a slider's track, at least ``TRACK_MIN_EM``, and
        its readout), at most the output area's width. (ipywidgets' own default, a fixed 300 px
        box with ``description_width="initial"``, let a long description push the track to
        zero width: a mouse could then only jump to the ends.)
        """
        import ipywidgets as w

        width = description_width or _description_width([self.description])
        style = {"description_width": width}
        layout = w.Layout(width=f"calc({width} + {CONTROL_ROOM_EM}em)", max_width="100%")
        common = {"description": self.description, "style": style, "layout": layout}
        if self.kind == "int":
            return w.IntSlider(value=self.default, min=self.low, max=self.high, step=self.step,
                               continuous_update=False, **common)
        if self.kind == "float":
            return w.FloatSlider(value=self.default, min=self.low, max=self.high,
                                 step=self.step, continuous_update=False,
                                 readout_format=self.readout_format(), **common)
        if self.kind == "bool":
            return w.Checkbox(value=self.default, **common)
        return w.Dropdown(options=list(self.options), value=self.default, **common)

    def format(self, value: Any) -> str:
        """``value`` as this control shows it: a float slider's value in its readout format,
        anything else as Python prints it."""
        if self.kind == "float":
            return format(float(value), self.readout_format())
        return str(value)

    def readout_format(self) -> str:
        """The float slider's readout, a Python format spec (d3-format in the browser): fixed
        point with as many decimals as the step has, so that every value the slider can take
        reads the same way ("0.25", "1.00", "1000" rather than "1.00e+3"); at most 4."""
        if self.kind != "float":
            return "d"
        return f".{_decimals(float(self.step or 1))}f"


#: Room for a slider's track and readout beside its description, in em (of the widget's font,
#: 13 px in JupyterLab): the track gets at least ``TRACK_MIN_EM`` (about 200 px), the readout
#: and the margins the rest.
TRACK_MIN_EM = 15
READOUT_EM = 6
CONTROL_ROOM_EM = TRACK_MIN_EM + READOUT_EM


def _description_width(descriptions: Sequence[str]) -> str:
    """A CSS width that holds the longest of ``descriptions`` on one line: one ``ch`` (the
    width of "0", wider than the average letter of a proportional font) per character, plus
    one for the label's padding."""
    return f"{max((len(d) for d in descriptions), default=0) + 1}ch"


def _decimals(step: float) -> int:
    """How many decimals a value on a grid of ``step`` needs (0.25 -> 2, 5 -> 0), at most 4."""
    for decimals in range(5):
        if abs(round(step, decimals) - step) <= 1e-9 * max(1.0, abs(step)):
            return decimals
    return 4


@runtime_checkable
class InPlacePlot(Protocol):
    """A plot a panel updates in place: ``draw(results)`` returns the figure showing
    ``results``, the same ``Figure`` from one call to the next (built on the first), with new
    data on its artists. ``atlas_sim.analysis.figures.InPlaceFigure`` is one; a panel takes it
    where it would take a plot function."""

    def draw(self, results: Any) -> Any: ...


def render_png(figure: Any, dpi: int = 90) -> bytes:
    """The figure as PNG bytes, drawn once. (IPython's default display computes a tight bounding
    box first, which draws the figure twice; the panels' figures lay themselves out.)

    A figure on Agg's plain canvas and outside pyplot is drawn on a ``PanelCanvas``, whose
    texts come from a cache of their glyphs (the same pixels). An opaque figure at ``dpi`` is
    encoded from the canvas as RGB at zlib level ``PNG_COMPRESS_LEVEL``: no alpha channel
    that is 255 everywhere, and about a third less encoding time than ``savefig``'s RGBA at
    level 6, for a file no larger (``benchmarks/bench_widgets.py --png`` measures both).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .analysis.figures import PanelCanvas

    canvas = figure.canvas
    if type(canvas) is FigureCanvasAgg and getattr(canvas, "manager", None) is None:
        canvas = PanelCanvas(figure)
    buffer = io.BytesIO()
    opaque = figure.patch.get_alpha() in (None, 1.0) and figure.patch.get_facecolor()[3] == 1.0
    if (isinstance(canvas, FigureCanvasAgg) and figure.dpi == dpi and opaque
            and not plt.rcParams["savefig.transparent"]):
        from PIL import Image

        canvas.draw()
        rgb = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])
        Image.fromarray(rgb, "RGB").save(buffer, format="png",
                                         compress_level=PNG_COMPRESS_LEVEL)
    else:
        figure.savefig(buffer, format="png", dpi=dpi,
                       pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return buffer.getvalue()


#: zlib level of the panels' PNGs (Pillow's default, and matplotlib's, is 6).
PNG_COMPRESS_LEVEL = 3


@dataclass(frozen=True, eq=False)
class PanelView:
    """What one update produced."""

    params: dict[str, Any]
    results: Any
    table: pd.DataFrame
    figure: Any = field(repr=False)  # with an in-place plot, the panel's one figure
    cached: bool = False
    #: wall seconds of each step: ``run`` (the experiment, or the cache), ``figure``, ``table``
    seconds: dict[str, float] = field(default_factory=dict, repr=False)


class Panel:
    """Sliders around a pure experiment; see the module docstring."""

    def __init__(
        self,
        run: Callable[..., Any],
        controls: Sequence[Control],
        plot: Callable[[Any], Any] | InPlacePlot,
        *,
        table: Callable[[Any], pd.DataFrame] | None = None,
        title: str = "",
        cache_size: int = 32,
    ) -> None:
        names = [c.name for c in controls]
        if len(set(names)) != len(names):
            raise ValueError(f"control names must be unique, got {names}")
        self.run_fn = run
        self.controls = {c.name: c for c in controls}
        self.plot_fn = plot
        self.table_fn = table or (lambda results: summary_table(results, digits=4))
        self.title = title
        self.cache_size = check_int("cache_size", cache_size, low=1)
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._values = self.defaults
        self._box: Any = None
        self._widgets: dict[str, Any] = {}
        self._output: Any = None
        self._muted = False  # True while reset() moves the widgets back: one redraw, not many
        self._shown: tuple[bytes, pd.DataFrame] | None = None  # the PNG and table last shown
        self._draws = 0  # how many times the output area was drawn
        self.last_draw: dict[str, Any] = {}  # the last draw's seconds per step (see _show)
        self.last: PanelView | None = None

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: c.default for name, c in self.controls.items()}

    @property
    def values(self) -> dict[str, Any]:
        """The parameter values of the last update (the defaults before the first)."""
        return dict(self._values)

    def results(self, **values: Any) -> tuple[Any, bool]:
        """Results for the current values changed by ``values`` (cached), and whether cached."""
        params = self._merge(values)
        key = tuple(sorted(params.items()))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key], True
        results = self.run_fn(**params)
        self._cache[key] = results
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return results, False

    def update(self, **values: Any) -> PanelView:
        """Run the experiment for these values (the others unchanged), draw, tabulate."""
        params = self._merge(values)
        started = time.perf_counter()
        results, cached = self.results(**params)
        ran = time.perf_counter()
        if isinstance(self.plot_fn, InPlacePlot):
            figure = self.plot_fn.draw(results)  # the same figure, new data on its artists
        else:
            figure = self.plot_fn(results)
        # Take the figure off pyplot's books: it is shown only where the panel displays it
        # (a notebook's inline backend would otherwise also show every open figure at the end
        # of the cell), and it cannot pile up in memory as sliders move. (An in-place plot's
        # figure is usually not on them: closing it is then nothing.)
        plt.close(figure)
        plotted = time.perf_counter()
        table = self.table_fn(results)
        seconds = {"run": ran - started, "figure": plotted - ran,
                   "table": time.perf_counter() - plotted}
        view = PanelView(params=params, results=results, table=table, figure=figure,
                         cached=cached, seconds=seconds)
        self._values = params
        self.last = view
        return view

    def reset(self) -> PanelView:
        """Back to the defaults (the Reset button): the controls move back without running
        anything, then the experiment runs once."""
        self._values = self.defaults
        self._muted = True
        try:
            for name, widget in self._widgets.items():
                widget.value = self.controls[name].default
        finally:
            self._muted = False
        return self.update()

    def _merge(self, values: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; this panel has "
                             f"{sorted(self.controls)}")
        merged = {**self._values, **values}
        return {name: self.controls[name].check(merged[name]) for name in self.controls}

    # -- in a notebook -------------------------------------------------------------------

    def widget(self) -> Any:
        """The ipywidgets box: controls, a Reset button, and the figure with its table."""
        if self._box is not None:
            return self._box
        import ipywidgets as w

        self._widgets = self.control_widgets()
        for widget in self._widgets.values():
            widget.value = self._values[self._name_of(widget)]
            widget.observe(self._on_change, names="value")
        reset = w.Button(description="Reset", icon="undo", tooltip="restore the defaults")
        reset.on_click(lambda _: self._show(self.reset))
        self._output = w.Output()
        header = [w.HTML(f"<b>{self.title}</b>")] if self.title else []
        controls = w.VBox([*self._widgets.values(), reset])
        self._box = w.VBox([*header, controls, self._output])
        self._show(self.update)
        return self._box

    def control_widgets(self) -> dict[str, Any]:
        """One new ipywidgets control per parameter, by name, every description given the
        room of the longest (see ``Control.widget``)."""
        width = _description_width([c.description for c in self.controls.values()])
        return {name: c.widget(width) for name, c in self.controls.items()}

    def _name_of(self, widget: Any) -> str:
        return next(n for n, wdg in self._widgets.items() if wdg is widget)

    def _on_change(self, change: Mapping[str, Any]) -> None:
        if self._muted:
            return
        name = self._name_of(change["owner"])
        self._show(lambda: self.update(**{name: change["new"]}))

    def _show(self, produce: Callable[[], PanelView]) -> None:
        """Run ``produce`` and put its figure and table in the panel's output area.

        The output area's ``outputs`` are set from here, in one piece, rather than captured
        with ``with output: display(...)``: a captured display makes a script that executes
        the notebook (nbclient, so nbconvert and papermill) play the front end and send a
        comm message back on the shell channel for every output, and that send is what leaves
        its wait for the cell's reply asleep until the cell timeout (nbclient issue 312).
        Setting the state sends only from the kernel, and the figure replaces the old one
        without a blank in between. Each draw is numbered in the outputs' metadata: an output
        equal to the one shown would be no change to ipywidgets (nor to the page's Backbone
        model), and a slider release must always draw anew, even an identical figure.

        ``last_draw`` keeps the wall seconds of each step in the kernel (``run``, ``figure``,
        ``table``, ``png``: draw and encode; ``send``: the HTML table, the message and its
        send; ``total``); with ``ATLAS_PANEL_LOG`` set to a file, each draw is appended to it
        as a line of JSON (the browser tests set it, to split a move's time between kernel and
        browser).
        """
        self._draws += 1
        drawn = {"atlas_panel_draw": self._draws}
        started = time.perf_counter()
        try:
            view = produce()
        except ValueError as err:  # a bad combination: say so, keep the kernel alive
            said = {"text/plain": f"Cannot run this combination: {err}"}
            self._output.outputs = ({"output_type": "display_data", "data": said,
                                     "metadata": drawn},)
            return
        produced = time.perf_counter()
        png = render_png(view.figure)
        rendered = time.perf_counter()
        self._shown = (png, view.table)
        figure = {"image/png": base64.b64encode(png).decode("ascii"),
                  "text/plain": f"<Figure: {self.title or 'panel'}>"}
        table = {"text/html": view.table.to_html(), "text/plain": view.table.to_string()}
        self._output.outputs = tuple({"output_type": "display_data", "data": data,
                                      "metadata": drawn} for data in (figure, table))
        sent = time.perf_counter()
        self.last_draw = {"title": self.title, "draw": self._draws, "cached": view.cached,
                          **view.seconds, "png": rendered - produced, "send": sent - rendered,
                          "total": sent - started}
        if log := os.environ.get("ATLAS_PANEL_LOG"):
            with open(log, "a", encoding="utf-8") as out:
                out.write(json.dumps(self.last_draw) + "\n")

    def static_html(self) -> str:
        """What the widget shows now, as HTML that needs no kernel and no widget manager: the
        title, the controls' values, the figure (an inline PNG) and the table."""
        if self._shown is None:  # not displayed yet: draw the current values
            view = self.update()
            self._shown = (render_png(view.figure), view.table)
        png, table = self._shown
        settings = ", ".join(f"{c.description} = {c.format(self._values[name])}"
                             for name, c in self.controls.items())
        title = f"<p><b>{html.escape(self.title)}</b></p>" if self.title else ""
        image = base64.b64encode(png).decode("ascii")
        return (f'<div class="atlas-panel-static">{title}'
                f"<p><i>{html.escape(settings)} (run the notebook to move the sliders)</i></p>"
                f'<img src="data:image/png;base64,{image}" alt="{html.escape(self.title)}"/>'
                f"{table.to_html()}</div>")

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={value!r}" for name, value in self._values.items())
        return f"<Panel {self.title!r}: {values}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The live widget for a front end with a kernel, and its static copy (``text/html``)
        for everything else; ``text/plain`` names the panel rather than repeating the widget
        tree."""
        live = getattr(self.widget(), "_repr_mimebundle_", None)  # None once closed
        bundle = {key: value for key, value in (live() if callable(live) else {}).items()
                  if key != "text/plain"}
        bundle["text/html"] = self.static_html()
        bundle["text/plain"] = repr(self)
        return bundle
