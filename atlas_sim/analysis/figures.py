"""Figures built once and updated in place: what a slider panel redraws when a slider moves.

A static plot (``plots.plot_timeseries`` and friends) makes a new figure each time. A slider
panel that did so paid, per move, for new axes and ticks, for matplotlib's constrained layout
(solved on every draw, and ``savefig`` draws twice when a layout engine is set), and for
drawing. An ``InPlaceFigure`` instead

* builds its figure, axes and (empty) artists once (``build``),
* puts each new result on the existing artists (``update``: ``set_data``, ``set_offsets``,
  ``set_verts``, new heights) and sets the limits from the data, as autoscaling would, and
* keeps the layout fixed: constrained layout is solved on the first draw and again only when
  a text that sizes the margins changes (see ``layout_key``), and a layout solved before is
  put back when its key comes again; in between the figure has no layout engine, so a draw
  is one pass, and
* is drawn on a ``PanelCanvas``, whose renderer takes a text's glyphs from a cache when the
  same text is drawn again at the same sub-pixel offset (matplotlib 3.11 lays out and renders
  every glyph of every text at each draw; the pixels are the same).

``draw(results)`` does all three and returns the figure: the same ``Figure`` object each time,
unless ``shape(results)`` says the results need other axes (say, another number of runs),
when it builds anew. ``atlas_sim.widgets.Panel`` takes such an object in place of a plot
function. The static plot functions draw through the same classes (``pyplot=True``,
layout left to constrained layout), so a panel and a static cell look alike.

Breaker states and the fault bars along the top are shaded with one ``PolyCollection`` per
colour rather than a rectangle per span: a run with many breaker transitions draws in a few
calls. (Shaded spans that carry a legend label, such as the call timeline's outage, stay
rectangles, reused from one update to the next.)
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg, get_hinting_flag
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.text import Annotation
from matplotlib.ticker import FuncFormatter, LogLocator

try:  # matplotlib 3.11's text internals, which _TextCachingRenderer uses; else Agg as it is
    from matplotlib.ft2font import FT2Font, RenderMode
except ImportError:  # pragma: no cover - an older or newer matplotlib
    FT2Font = RenderMode = None  # type: ignore[assignment,misc]

__all__ = [
    "LAYOUT_CACHE",
    "PANEL_DPI",
    "STATE_COLORS",
    "BreakerTraceFigure",
    "CallTimelineFigure",
    "ComparisonFigure",
    "FaultBars",
    "InPlaceFigure",
    "PanelCanvas",
    "StateShading",
    "TimeseriesFigure",
    "VerticalBands",
    "autoscale",
    "bar_label",
    "clip_to_view",
    "fault_names",
    "fault_windows",
    "layout_key",
    "legend_outside",
    "plain_log_ticks",
]

#: Dots per inch of a panel's figure, as the panel renders it to PNG.
PANEL_DPI = 90
#: How many solved layouts an ``InPlaceFigure`` keeps (by ``layout_key``; a few floats each).
LAYOUT_CACHE = 64
#: Background colours of the three breaker states: calm, cautious, alarmed.
STATE_COLORS = {"closed": "#dcefd6", "half_open": "#fbe7a6", "open": "#f5c0c0"}
FAULT_COLOR = "#616161"
_OUTCOME_STYLE: dict[str, dict[str, Any]] = {
    "success": {"marker": "o", "color": "#2e7d32"},
    "failure": {"marker": "x", "color": "#c62828"},
    "rejected": {"marker": "s", "color": "#757575"},
}
_DIGIT = re.compile(r"\d")


def legend_outside(ax: Axes, handles: list[Any], **options: Any) -> None:
    """The legend to the right of ``ax``, outside the data, so that it never covers a line,
    a band or a band's label (constrained layout makes room for it)."""
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              fontsize="small", **options)


def plain_log_ticks(axis: Any) -> None:
    """Label a log axis (``ax.xaxis`` or ``ax.yaxis``) with plain numbers ("0.02", "0.1",
    "5"): every power of ten, and 2 and 5 times each while the view spans less than two
    decades. (matplotlib's default labels every minor tick of a short log axis in the form
    "3×10⁻²", wide enough that neighbours overlap.)"""

    def decades() -> float:
        low, high = sorted(axis.get_view_interval())
        return float(np.log10(high / low)) if low > 0 else math.inf

    axis.set_major_locator(LogLocator(base=10.0))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_locator(LogLocator(base=10.0, subs=(2.0, 5.0)))
    axis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if decades() < 2 else ""))


# -- text drawn from a cache ---------------------------------------------------------------

#: How many texts' glyphs (and layouts) the panel canvases keep (``PanelCanvas``): a text's
#: glyphs take a few hundred bytes.
TEXT_CACHE = 2048


def _font_key(prop: Any) -> tuple[Any, ...]:
    """What decides a text's glyphs besides its string: the properties, the font file they
    resolve to now (``findfont`` reads the rcParams, so a new ``font.sans-serif`` list or
    style gives a new key) and the rcParams that change the hinting and kerning."""
    rc = matplotlib.rcParams
    return (tuple(prop.get_family()), prop.get_style(), prop.get_variant(), prop.get_weight(),
            prop.get_stretch(), prop.get_size_in_points(), prop.get_file(),
            prop.get_math_fontfamily(), font_manager.findfont(prop),
            rc["text.hinting"], rc["text.hinting_factor"], rc["text.kerning_factor"])


class _TextCachingRenderer(RendererAgg):
    """Agg's renderer, drawing a plain text's glyphs from a cache when the same text (string,
    font, angle) is drawn again at the same sub-pixel offset: the same glyph bitmaps, drawn
    one by one where Agg draws them, so the pixels are Agg's own. Matplotlib 3.11 lays out and
    renders every glyph of every text anew at each draw (a tick label, a legend entry); a
    slider move redraws mostly texts that did not move. A text laid out before but at another
    offset skips the layout (``FT2Font._layout``) and renders its glyphs. Mathtext, TeX and
    texts drawn without antialiasing go to Agg unchanged.

    The caches are shared by every panel canvas and not locked: draw on one thread at a time,
    as matplotlib's Agg renderer and its shared ``FT2Font`` objects require anyway."""

    #: Shared by every panel canvas (a glyph's bitmap depends on the text, the font, the
    #: angle, the offset and the dpi, not on the figure), at most ``TEXT_CACHE`` texts each.
    _glyphs: ClassVar[OrderedDict[Hashable, list[tuple[np.ndarray, int, int]]]] = OrderedDict()
    _layouts: ClassVar[OrderedDict[Hashable, list[tuple[Any, int, float, float]]]] = \
        OrderedDict()

    def draw_text(self, gc: Any, x: float, y: float, s: str, prop: Any, angle: float,
                  ismath: Any = False, mtext: Any = None) -> None:
        if ismath or not gc.get_antialiased():
            return super().draw_text(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)
        features = mtext.get_fontfeatures() if mtext is not None else None
        language = mtext.get_language() if mtext is not None else None
        # FreeType draws at whole pixels plus an offset in 1/64 px: a text moved by whole
        # pixels has the same glyph bitmaps, moved
        up = self.height - y  # FreeType's y is upwards
        left, bottom = math.floor(x), math.floor(up)
        font = _font_key(prop)
        flags = get_hinting_flag()
        layout_key = (s, font, features and tuple(features), language, flags, self.dpi)
        key = (layout_key, angle, x - left, up - bottom, self.dpi)
        glyphs = self._glyphs.get(key)
        if glyphs is None:
            glyphs = self._render(s, layout_key, prop, x - left, up - bottom, angle, flags,
                                  features, language)
            self._glyphs[key] = glyphs
            if len(self._glyphs) > TEXT_CACHE:
                self._glyphs.popitem(last=False)
        height = int(self.height)
        draw = self._renderer.draw_text_image
        for buffer, dx, top in glyphs:
            draw(buffer, left + dx, height - (bottom + top) + buffer.shape[0], 0, gc)

    def _render(self, s: str, layout_key: Hashable, prop: Any, x: float, up: float,
                angle: float, flags: Any, features: Any,
                language: Any) -> list[tuple[np.ndarray, int, int]]:
        """The glyphs of a text whose origin is ``(x, up)`` pixels (0 <= x, up < 1; up is
        FreeType's y, upwards), as Agg's ``_draw_text_glyphs_and_boxes`` renders them: each
        glyph's bitmap (a copy), its left and its top."""
        items = self._layouts.get(layout_key)
        if items is None:
            ft = self._prepare_font(prop)
            items = [(item.ft_object, item.glyph_index, item.x, item.y)
                     for item in ft._layout(s, flags=flags, features=features,
                                            language=language)]
            self._layouts[layout_key] = items
            if len(self._layouts) > TEXT_CACHE:
                self._layouts.popitem(last=False)
        size = prop.get_size_in_points()
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        matrix = (0x10000 * np.array([[cos, -sin], [sin, cos]])).round().astype(int)
        glyphs = []
        for ft, index, dx, dy in items:
            ft.set_size(size, self.dpi)
            ft._set_transform(matrix, [round(0x40 * (x + dx * cos - dy * sin)),
                                       round(0x40 * (up + dx * sin + dy * cos))])
            bitmap = ft._render_glyph(index, flags, RenderMode.NORMAL)
            glyphs.append((np.array(bitmap.buffer), bitmap.left, bitmap.top))
        return glyphs


#: Whether this matplotlib draws text glyph by glyph as ``_TextCachingRenderer`` expects
#: (3.11's Agg); if not, panels draw with Agg as it is.
_CACHEABLE_TEXT = FT2Font is not None and all(hasattr(cls, name) for cls, name in (
    (RendererAgg, "_draw_text_glyphs_and_boxes"), (RendererAgg, "_prepare_font"),
    (FT2Font, "_layout"), (FT2Font, "_render_glyph"), (FT2Font, "_set_transform")))


class PanelCanvas(FigureCanvasAgg):
    """The Agg canvas of a panel's figure, drawing its texts through a cache of their glyphs
    (``_TextCachingRenderer``; Agg's own renderer where this matplotlib draws text
    otherwise). ``widgets.render_png`` draws a panel's figure made on Agg's plain canvas on
    this one."""

    def get_renderer(self) -> Any:
        if not _CACHEABLE_TEXT:
            return super().get_renderer()
        w, h = self.get_width_height(physical=True)
        key = w, h, self.figure.dpi
        if self._lastKey != key:
            self.renderer = _TextCachingRenderer(w, h, self.figure.dpi)
            self._lastKey = key
        return self.renderer


# -- the layout, solved once -------------------------------------------------------------

def _shape_of(text: str) -> str:
    """A text as wide as ``text`` in the default font: DejaVu Sans draws every digit equally
    wide, so ``"120"`` and ``"350"`` need the same room."""
    return _DIGIT.sub("0", text)


def _tick_labels(axis: Any) -> tuple[str, ...]:
    """The texts of an axis's tick labels in view (major, then minor), as its formatters will
    write them at the next draw, without making Tick objects."""
    low, high = sorted(axis.get_view_interval())
    span = (high - low) * 1e-9
    texts: list[str] = []
    for locs, formatter in ((axis.get_majorticklocs(), axis.get_major_formatter()),
                            (axis.get_minorticklocs(), axis.get_minor_formatter())):
        inside = [loc for loc in np.asarray(locs, dtype=float)
                  if low - span <= loc <= high + span]
        texts += formatter.format_ticks(inside) if inside else []
    return tuple(_shape_of(t) for t in texts if t)


def _ticks_key(axis: Any) -> tuple[str, ...]:
    """What of an axis's tick labels can move the margins: their widths across the axis (a
    y axis's widest label sets its margin; its first and last overhang the ends by half a
    text height, the same for any text) and their overhang along it (an x axis's first and
    last labels stick out by half their width; every label is one text high). Rotated
    labels take room both ways: then all three count."""
    labels = _tick_labels(axis)
    if not labels:
        return ()
    ticks = axis.majorTicks
    rotated = bool(ticks) and ticks[0].label1.get_rotation() % 180 != 0
    widest = max(labels, key=len)
    if rotated:
        return (widest, labels[0], labels[-1])
    return (labels[0], labels[-1]) if axis.axis_name == "x" else (widest,)


def _title_key(text: Any, room: float, renderer: Any) -> Hashable:
    """A title as the layout sees it: its number of lines (its height) and, only when it is
    wider than ``room`` (pixels: its axes' or figure's width), its shape; a title that fits
    sets no side margin, whatever it says."""
    words = text.get_text()
    if not words or not text.get_visible():
        return ""
    lines = words.count("\n") + 1
    if renderer is not None and text.get_window_extent(renderer).width <= room:
        return ("fits", lines)
    return ("wider", _shape_of(words))


def _renderer(figure: Figure) -> Any:
    """The figure's Agg renderer (text sizes come from its metrics cache), or None."""
    get = getattr(figure.canvas, "get_renderer", None)
    return get() if callable(get) else None


def layout_key(figure: Figure) -> Hashable:
    """What constrained layout's answer depends on, in a form cheap to compare: each axes'
    axis labels, its titles' line counts (and their shapes where wider than the axes), the
    texts of a legend placed outside it (one inside, anchored to the axes, takes no margin),
    the tick labels that can set a margin (``_ticks_key``), and the suptitle as a title of
    the figure; digits count as one width. Two figures with equal keys need the same
    margins."""
    renderer = _renderer(figure)
    suptitle = getattr(figure, "_suptitle", None)
    parts: list[Any] = [_title_key(suptitle, figure.bbox.width, renderer)
                        if suptitle is not None else ""]
    for ax in figure.axes:
        legend = ax.get_legend()
        outside = legend is not None and legend.get_bbox_to_anchor() is not ax.bbox
        parts.append((
            tuple(_title_key(title, ax.bbox.width, renderer)
                  for title in (getattr(ax, "_left_title", None), ax.title,
                                getattr(ax, "_right_title", None)) if title is not None),
            _shape_of(ax.get_xlabel()), _shape_of(ax.get_ylabel()),
            (_ticks_key(ax.xaxis), _ticks_key(ax.yaxis)),
            tuple(_shape_of(t.get_text()) for t in legend.get_texts())
            if outside and legend is not None else None,
        ))
    return tuple(parts)


def _layout_state(figure: Figure) -> tuple[Any, ...]:
    """Where constrained layout put things: each axes' position, and the figure's
    suptitle, supxlabel and supylabel (position and vertical alignment)."""
    texts = [(text, text.get_position(), text.get_verticalalignment())
             for text in (getattr(figure, name, None)
                          for name in ("_suptitle", "_supxlabel", "_supylabel"))
             if text is not None]
    return tuple((ax, ax.get_position(original=True).frozen(),
                  ax.get_position(original=False).frozen()) for ax in figure.axes), \
        tuple(texts)


def _restore_layout(state: tuple[Any, ...]) -> None:
    axes, texts = state
    for ax, original, active in axes:
        ax._set_position(original, which="original")
        ax._set_position(active, which="active")
    for text, position, alignment in texts:
        text.set_position(position)
        text.set_verticalalignment(alignment)


class InPlaceFigure:
    """A figure built once and updated in place; see the module docstring.

    Subclasses write ``build(results) -> Figure`` (the figure, axes and artists, with the
    labels and styles that do not change) and ``update(results)`` (the data, limits, legends
    and titles that do), and ``shape(results)`` if some results need a new figure.

    ``pyplot=False`` (for panels) makes the figure outside pyplot, at ``PANEL_DPI``, so it is
    never shown by a notebook's inline backend and never piles up in pyplot's list;
    ``pyplot=True`` (for static cells) makes it with ``plt.subplots``, shown by
    ``plt.show()``. ``freeze_layout`` (default: ``not pyplot``) solves the layout once and
    then only when ``layout_key`` changes, to a key not seen since the figure was built (a
    layout solved before, for a key seen again, is put back: a slider moved back and forth
    lays out nothing); ``layouts`` counts the solves, ``LAYOUT_CACHE`` bounds the layouts
    kept.
    """

    def __init__(self, *, pyplot: bool = False, freeze_layout: bool | None = None) -> None:
        self.pyplot = pyplot
        self.freeze_layout = (not pyplot) if freeze_layout is None else freeze_layout
        self.figure: Figure | None = None
        self.layouts = 0
        self._shape: Hashable = None
        self._engine: Any = None
        self._key: Hashable = None
        self._solved: OrderedDict[Hashable, tuple[Any, ...]] = OrderedDict()

    # -- what subclasses write --

    def build(self, results: Any) -> Figure:
        raise NotImplementedError

    def update(self, results: Any) -> None:
        raise NotImplementedError

    def shape(self, results: Any) -> Hashable:
        """What, in ``results``, needs other axes when it changes (default: nothing)."""
        return None

    # -- what panels call --

    def draw(self, results: Any) -> Figure:
        """The figure showing ``results``: built on the first call (or when ``shape``
        changes), updated in place after that."""
        shape = self.shape(results)
        if self.figure is None or shape != self._shape:
            self.figure = self.build(results)
            self._shape, self._engine, self._key = shape, None, None
            self._solved = OrderedDict()
        self.update(results)
        if self.freeze_layout:
            self._settle_layout()
        return self.figure

    def subplots(self, nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float],
                 **options: Any) -> tuple[Figure, Any]:
        """``plt.subplots`` with constrained layout, or its twin outside pyplot."""
        if self.pyplot:
            return plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", **options)
        figure = Figure(figsize=figsize, dpi=PANEL_DPI, layout="constrained")
        PanelCanvas(figure)
        return figure, figure.subplots(nrows, ncols, **options)

    def axes_or_new(self, ax: Any, *, figsize: tuple[float, float]) -> tuple[Figure, Any]:
        """``ax`` and the figure it belongs to when one was given (this figure drawn into a
        larger one's axes), else a new figure of ``figsize`` with one axes."""
        if ax is None:
            return self.subplots(figsize=figsize)
        root = ax.get_figure(root=True)
        assert root is not None  # an axes always belongs to a figure
        return root, ax

    def set_suptitle(self, text: str, **options: Any) -> None:
        """The figure's title. A title already there gets the new text in its place:
        ``Figure.suptitle`` would put it back at its default height, below where constrained
        layout moved it (a title of another width changes ``layout_key``: laid out anew)."""
        assert self.figure is not None
        shown = getattr(self.figure, "_suptitle", None)  # matplotlib keeps it there
        if shown is None:
            self.figure.suptitle(text, **options)
        elif text != shown.get_text():
            shown.set_text(text)

    def _settle_layout(self) -> None:
        figure = self.figure
        assert figure is not None
        if self._engine is None:
            self._engine = figure.get_layout_engine()
            if self._engine is None:  # laid out by hand: nothing to solve
                self.freeze_layout = False
                return
            figure.set_layout_engine(None)  # no engine: savefig draws once, and lays out nothing
        key = layout_key(figure)
        if key == self._key:
            return
        state = self._solved.get(key)
        if state is not None:
            _restore_layout(state)
            self._solved.move_to_end(key)
        else:
            self._engine.execute(figure)
            self.layouts += 1
            state = _layout_state(figure)
            self._solved[key] = state
        self._key = layout_key(figure)  # after: the number of ticks follows the axes' size
        self._solved[self._key] = state
        while len(self._solved) > LAYOUT_CACHE:
            self._solved.popitem(last=False)


# -- shading that moves -------------------------------------------------------------------

def _band(start: float, end: float, low: float, high: float) -> list[tuple[float, float]]:
    return [(start, low), (end, low), (end, high), (start, high)]


class VerticalBands:
    """Vertical bands across ``ax`` (x in data, y from ``ymin`` to ``ymax`` of the axes
    height) as one ``PolyCollection``; ``set([(start, end), ...])`` moves them. They take no
    part in autoscaling."""

    def __init__(self, ax: Axes, *, ymin: float = 0.0, ymax: float = 1.0,
                 **style: Any) -> None:
        self.ymin, self.ymax = ymin, ymax
        self.collection = PolyCollection([], transform=ax.get_xaxis_transform(),
                                         edgecolors="none", linewidths=0, **style)
        ax.add_collection(self.collection, autolim=False)

    def set(self, spans: Sequence[tuple[float, float]]) -> None:
        self.collection.set_verts([_band(a, b, self.ymin, self.ymax) for a, b in spans])


class StateShading:
    """The background of ``ax`` shaded by one circuit breaker's state over time: a band per
    span in the state's colour (``STATE_COLORS``), and a line for a half-open moment that
    lasted no time (a probe answered at once)."""

    def __init__(self, ax: Axes) -> None:
        self.bands = {state: VerticalBands(ax, facecolors=color, zorder=0)
                      for state, color in STATE_COLORS.items()}
        self.moments = LineCollection([], colors="#e0a800", linewidths=2.5, zorder=1,
                                      transform=ax.get_xaxis_transform())
        ax.add_collection(self.moments, autolim=False)

    def update(self, events: pd.DataFrame, *, until: float, start: float = 0.0,
               name: str | None = None) -> list[Patch]:
        """Shade ``[start, until]`` from ``events`` (a ``RunResult.events`` table; ``name``
        picks one breaker, default the first). Returns legend handles for the states shown."""
        breaker = events[events["kind"] == "breaker"]
        if name is None and len(breaker):
            name = str(breaker["name"].iloc[0])
        breaker = breaker[breaker["name"] == name]
        times = [start, *breaker["time"].tolist(), until]
        states = ["closed", *breaker["detail"].tolist()]
        spans: dict[str, list[tuple[float, float]]] = {state: [] for state in STATE_COLORS}
        moments = []
        for left, right, state in zip(times[:-1], times[1:], states, strict=True):
            if right > left:
                spans[state].append((left, right))
            elif state == "half_open":
                moments.append([(left, 0.0), (left, 1.0)])
        for state, band in self.bands.items():
            band.set(spans[state])
        self.moments.set_segments(moments)
        shown = {s for s, found in spans.items() if found} | ({"half_open"} if moments else set())
        return [Patch(color=STATE_COLORS[s], label=s.replace("_", "-")) for s in STATE_COLORS
                if s in shown]

    def clear(self) -> None:
        for band in self.bands.values():
            band.set([])
        self.moments.set_segments([])


class FaultBars:
    """Fault windows hatched along the top of ``ax``, each named at its start just below its
    bar if ``label`` (in the panels' smallest text size, "small": the name in white inside the
    bar was too small to read and, any larger, no longer fitted the bar)."""

    def __init__(self, ax: Axes, *, label: bool = True) -> None:
        self.ax, self.label = ax, label
        self.bars = VerticalBands(ax, ymin=0.93, ymax=1.0, facecolors=FAULT_COLOR, alpha=0.6,
                                  zorder=2)
        self.names: list[Annotation] = []

    def update(self, windows: Sequence[tuple[float, float, str]]) -> None:
        """``windows``: ``(start, end, name)`` of each fault."""
        self.bars.set([(start, end) for start, end, _ in windows])
        if not self.label:
            return
        while len(self.names) > len(windows):
            self.names.pop().remove()
        for k, (start, _, name) in enumerate(windows):
            if k < len(self.names):
                self.names[k].xy = (start, self.bars.ymin)
                self.names[k].set_text(name)
            else:
                self.names.append(self.ax.annotate(
                    name, (start, self.bars.ymin), xycoords=("data", "axes fraction"),
                    xytext=(2, -1), textcoords="offset points", va="top", fontsize="small",
                    color="#424242", zorder=3,
                    bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1}))


class _Rectangles:
    """Labelled full-height spans as rectangles (they appear in ``ax.patches`` and in the
    legend), reused from one update to the next."""

    def __init__(self, ax: Axes, **style: Any) -> None:
        self.ax, self.style = ax, style
        self.shown: list[Rectangle] = []

    def set(self, spans: Sequence[tuple[float, float, str]]) -> None:
        while len(self.shown) > len(spans):
            self.shown.pop().remove()
        for k, (start, end, label) in enumerate(spans):
            if k == len(self.shown):
                self.shown.append(self.ax.axvspan(start, end, **self.style))
            self.shown[k].set_x(start)
            self.shown[k].set_width(end - start)
            self.shown[k].set_label(label)


# -- fault windows from events ------------------------------------------------------------

def fault_names(events: pd.DataFrame) -> list[str]:
    faults = events[events["kind"] == "fault"]
    return [str(name) for name in dict.fromkeys(faults["name"])]


def fault_windows(events: pd.DataFrame, until: float) -> list[tuple[float, float, str]]:
    """``(start, end, name)`` of each fault window in ``events``; one still on ends at
    ``until``."""
    windows = []
    faults = events[events["kind"] == "fault"]
    for name, group in faults.groupby("name", sort=False):
        begun: float | None = None
        for time, detail in zip(group["time"], group["detail"], strict=True):
            if detail == "start" and begun is None:
                begun = float(time)
            elif detail == "end" and begun is not None:
                windows.append((begun, float(time), str(name)))
                begun = None
        if begun is not None:
            windows.append((begun, until, str(name)))
    return windows


def _seconds(x: float) -> str:
    return f"{1000 * x:.0f} ms" if x < 1 else f"{x:.2f} s"


def bar_label(value: float) -> str:
    """A bar's value as a reader writes it: ``2,426``, ``63.8``, ``5``, ``0.0123``; never
    ``2.43e+03``."""
    if not np.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def autoscale(ax: Axes, *, points: Any = None, scalex: bool = True,
              scaley: bool = True) -> None:
    """Limits of ``ax`` from the data now on it, as autoscaling sets them for a new figure:
    its lines and patches (``relim``), plus ``points`` (an ``(n, 2)`` array: a scatter's
    offsets, which ``relim`` leaves out)."""
    ax.relim()
    if points is not None and len(points):
        ax.update_datalim(points)
    ax.autoscale_view(scalex=scalex, scaley=scaley)


def _scaled(y: Any, log: bool) -> np.ndarray:
    """``y`` as an axis draws it: as is, or log10 with a value <= 0 at -1000 (what a log
    axis's default ``nonpositive="clip"`` puts there: far below the view)."""
    y = np.asarray(y, dtype=float)
    if not log:
        return y
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y > 0, np.log10(np.where(y > 0, y, 1.0)), -1000.0)


def clip_to_view(x: Any, y: Any, low: float, high: float, *, log: bool = False,
                 steps: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The line through ``(x, y)`` cut to the band ``low <= y <= high`` (an axes' fixed y
    limits): the points outside are left out, and where the line crosses ``low`` or ``high``
    the crossing is put in its place, a NaN after it where the line leaves the band (a gap).

    Drawn, the cut line covers the same pixels as the whole line clipped by the axes, but
    its data stay in view. ``log``: the crossing is found in log10 y, as a log axis draws a
    segment (straight in log y); ``steps``: the line is drawn ``drawstyle="steps-post"``, so
    it crosses a bound on the riser at the later point's x. Returns new arrays (or the given
    ones, as float arrays, when all of the line is in the band). NaN in ``y`` counts as
    outside."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    v = _scaled(y, log)
    bounds = {-1: (float(_scaled(low, log)), float(low)),
              1: (float(_scaled(high, log)), float(high))}
    side = np.where(v < bounds[-1][0], -1, np.where(v > bounds[1][0], 1, 0))
    side[np.isnan(v)] = 2
    if not side.any():
        return x, y
    xs: list[Any] = []
    ys: list[Any] = []
    start = 0
    for k in [*(np.flatnonzero(side[1:] != side[:-1]) + 1), len(x)]:
        if side[start] == 0:
            xs.append(x[start:k])
            ys.append(y[start:k])
        if k == len(x):
            break
        a, b = k - 1, k
        if 2 in (side[a], side[b]):
            xs.append([np.nan])
            ys.append([np.nan])
            start = k
            continue
        for s in (side[a], side[b]):  # the bounds crossed, in the order met (0: none)
            if s == 0:
                continue
            level, value = bounds[int(s)]
            at = x[b] if steps else x[a] + (level - v[a]) / (v[b] - v[a]) * (x[b] - x[a])
            xs.append([at])
            ys.append([value])
        if side[b] != 0:
            xs.append([np.nan])
            ys.append([np.nan])
        start = k
    return np.concatenate(xs), np.concatenate(ys)


def _autoscale_y(*axes: Axes) -> None:
    """Y limits from the data now on ``axes`` (lines and patches), as autoscaling would set
    them for a new figure."""
    for ax in axes:
        ax.relim()
    for ax in axes:
        ax.autoscale_view(scalex=False)


class _Legend:
    """An axes' legend outside the data, remade only when its labels change."""

    def __init__(self, ax: Axes) -> None:
        self.ax = ax
        self.labels: tuple[str, ...] | None = None

    def set(self, handles: list[Any]) -> None:
        labels = tuple(str(h.get_label()) for h in handles)
        if labels == self.labels:
            return
        self.labels = labels
        legend = self.ax.get_legend()
        if handles:
            legend_outside(self.ax, handles)
        elif legend is not None:
            legend.remove()


# -- the figures --------------------------------------------------------------------------

class TimeseriesFigure(InPlaceFigure):
    """A run over time, as an operator's dashboard would show it, in three panels.

    Top: offered load, attempts and goodput per second. Middle: error rate. Bottom: p99
    latency. Underneath every panel, the state of a circuit breaker (``breaker`` names one,
    default: the first in the run), and fault windows hatched along the top. ``window`` is
    the width of the time windows in seconds; ``title`` defaults to the run's source.
    """

    def __init__(self, window: float = 1.0, *, breaker: str | None = None,
                 title: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.window, self.breaker, self.title = window, breaker, title

    def draw(self, results: Any) -> Figure:
        """``results``: a ``RunResult``, or a dict holding one, whose name then replaces
        ``{name}`` in the title (a panel's ``{"breaker": run}``)."""
        return super().draw(results)

    def build(self, run: Any) -> Figure:
        figure, axes = self.subplots(3, 1, figsize=(9, 6.5), sharex=True,
                                     gridspec_kw={"height_ratios": [1.4, 1, 1]})
        self.axes = list(axes)
        self.shading = [StateShading(ax) for ax in axes]
        self.faults = [FaultBars(ax, label=ax is axes[0]) for ax in axes]
        rates, errors, tail = axes
        (self.offered,) = rates.plot([], [], label="offered", color="#1565c0")
        (self.attempts,) = rates.plot([], [], label="attempts", color="#ef6c00", ls="--")
        (self.goodput,) = rates.plot([], [], label="goodput", color="#2e7d32")
        rates.set_ylabel("per second")
        (self.errors,) = errors.plot([], [], color="#c62828")
        errors.set_ylabel("error rate")
        errors.set_ylim(-0.02, 1.02)
        (self.tail,) = tail.plot([], [], color="#6a1b9a")
        tail.set_ylabel("p99 latency (s)")
        tail.set_xlabel("time (s)")
        for ax in axes:
            ax.grid(alpha=0.3)
        self.legend = _Legend(rates)
        return figure

    def update(self, results: Any) -> None:
        name, run = _one_run(results)
        window = self.window
        ts = run.timeseries(window)
        until = float(ts["t"].iloc[-1] + window)
        events = run.events
        breaker = bool((events["kind"] == "breaker").any())
        windows = fault_windows(events, until)
        handles: list[Patch] = []
        for shading, faults in zip(self.shading, self.faults, strict=True):
            if breaker:
                handles = shading.update(events, until=until, name=self.breaker)
            else:
                shading.clear()
            faults.update(windows)
        x = (ts["t"] + window / 2).to_numpy()
        for line, column in ((self.offered, "offered"), (self.attempts, "attempts"),
                             (self.goodput, "goodput"), (self.errors, "error_rate"),
                             (self.tail, "p99")):
            line.set_data(x, ts[column].to_numpy())
        rates, _, tail = self.axes
        _autoscale_y(rates, tail)
        tail.set_xlim(0, until)
        self.legend.set([self.offered, self.attempts, self.goodput, *handles,
                         *(Patch(color=FAULT_COLOR, alpha=0.6, label=name)
                           for name in fault_names(events))])
        title = self.title or f"{run.source} run, {window:g} s windows"
        self.set_suptitle(title.replace("{name}", name), fontsize="medium")


def _one_run(results: Any) -> tuple[str, Any]:
    """``(name, run)`` from a ``RunResult`` (named by its source) or a one-run dict."""
    if isinstance(results, dict):
        if len(results) != 1:
            raise ValueError(f"results must hold one run, got {len(results)}")
        ((name, run),) = results.items()
        return str(name), run
    return str(results.source), results


class BreakerTraceFigure(InPlaceFigure):
    """Each scripted call as a marker (succeeded, failed, rejected) over the breaker's states,
    the dependency's bad stretches as a bar along the top. Results: a ``BreakerTrace``
    (``atlas_sim.scripted.drive_breaker``). ``ax``: draw there instead of a new figure."""

    def __init__(self, *, ax: Axes | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.given_ax = ax

    def build(self, trace: Any) -> Figure:
        figure, ax = self.axes_or_new(self.given_ax, figsize=(9, 3.2))
        self.ax = ax
        self.shading = StateShading(ax)
        self.failing = VerticalBands(ax, ymin=0.94, ymax=1.0, facecolors=FAULT_COLOR,
                                     alpha=0.6, zorder=2)
        rows = list(_OUTCOME_STYLE)
        self.outcomes = {outcome: ax.scatter(np.empty(0), np.empty(0), label=outcome,
                                             zorder=3, **_OUTCOME_STYLE[outcome])
                         for outcome in rows}
        ax.set_yticks(range(len(rows)), rows)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlabel("time (s)")
        ax.set_title("Circuit breaker: each call, and the state it met")
        self.legend = _Legend(ax)
        return figure

    def update(self, trace: Any) -> None:
        handles = self.shading.update(trace.events, until=trace.until)
        calls = trace.calls
        down = ~calls["dependency_ok"].to_numpy(dtype=bool)
        times = calls["time"].to_numpy(dtype=float)
        step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
        self.failing.set([(t - step / 2, t + step / 2) for t in times[down]])
        if down.any():
            handles.append(Patch(color=FAULT_COLOR, alpha=0.6, label="dependency failing"))
        outcome = calls["outcome"].to_numpy()
        for row, (name, dots) in enumerate(self.outcomes.items()):
            at = times[outcome == name]
            dots.set_offsets(np.column_stack([at, np.full(len(at), float(row))]))
        self.ax.set_xlim(0, trace.until)
        self.legend.set(handles)


def _named(runs: Any) -> dict[str, Any]:
    from .tables import name_runs

    return name_runs(runs)


class CallTimelineFigure(InPlaceFigure):
    """When attempts were sent, as a rate (``what`` per second, in ``bin_width`` bins), one
    panel per run, all on the same scale, fault windows shaded and named in the legend.
    ``until`` ends the time axis (default: the last attempt)."""

    def __init__(self, *, bin_width: float = 0.01, until: float | None = None,
                 what: str = "calls", **options: Any) -> None:
        super().__init__(**options)
        self.bin_width, self.until, self.what = bin_width, until, what

    def shape(self, runs: Any) -> Hashable:
        return len(_named(runs))

    def build(self, runs: Any) -> Figure:
        n = len(_named(runs))
        figure, axes = self.subplots(n, 1, figsize=(9, 1.6 * n + 0.7), sharex=True,
                                     sharey=True, squeeze=False)
        self.axes = list(axes[:, 0])
        self.bars, self.spans, self.legends = [], [], []
        for ax in self.axes:
            self.bars.append(ax.stairs([0.0], [0.0, 1.0], fill=True, color="#5c6bc0",
                                       label=self.what))
            self.spans.append(_Rectangles(ax, color="#9e9e9e", alpha=0.35, lw=0, zorder=0))
            self.legends.append(_Legend(ax))
            ax.set_ylabel(f"{self.what}/s")
            ax.grid(axis="y", alpha=0.3)
        self.axes[-1].set_xlabel("time (s)")
        figure.suptitle(f"{self.what.capitalize()} sent per second "
                        f"({_seconds(self.bin_width)} bins)", fontsize="medium")
        return figure

    def update(self, runs: Any) -> None:
        named = _named(runs)
        end = self.until if self.until is not None else max(
            float(r.attempts["t_start"].max()) for r in named.values())
        edges = np.arange(0.0, end + self.bin_width, self.bin_width)
        for ax, bars, spans, legend, (name, run) in zip(
                self.axes, self.bars, self.spans, self.legends, named.items(), strict=True):
            counts, _ = np.histogram(run.attempts["t_start"], bins=edges)
            bars.set_data(counts / self.bin_width, edges)
            spans.set(fault_windows(run.events, end))
            ax.set_title(name, fontsize="small", loc="left")
            faults = bool(len(run.events) and (run.events["kind"] == "fault").any())
            legend.set(ax.get_legend_handles_labels()[0] if faults else [])
        _autoscale_y(*self.axes)
        self.axes[-1].set_xlim(0, end)


class ComparisonFigure(InPlaceFigure):
    """Bars for each row of a table (strategies, fixes, runs), one panel per column, each bar
    labelled with its value (``bar_label``). ``axes``: draw there instead of a new figure."""

    def __init__(self, columns: Any = None, *, title: str = "", axes: Any = None,
                 **options: Any) -> None:
        super().__init__(**options)
        self.columns = None if columns is None else list(columns)
        self.title, self.given_axes = title, axes

    def _columns(self, table: pd.DataFrame) -> list[Any]:
        return list(table.columns) if self.columns is None else self.columns

    def shape(self, table: pd.DataFrame) -> Hashable:
        return tuple(str(i) for i in table.index), tuple(map(str, self._columns(table)))

    def build(self, table: pd.DataFrame) -> Figure:
        columns = self._columns(table)
        if self.given_axes is None:
            figure, axes = self.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4),
                                         squeeze=False)
            axes = axes[0]
        else:
            axes = self.given_axes
            figure = axes[0].get_figure(root=True)
            assert figure is not None
        names = [str(i) for i in table.index]
        self.panels = []
        for ax, column in zip(axes, columns, strict=True):
            bars = ax.bar(names, np.zeros(len(names)), color="#5c6bc0")
            notes = [ax.annotate("", (i, 0.0), ha="center", va="bottom", fontsize="small")
                     for i in range(len(names))]
            ax.set_title(str(column).replace("_", " "), fontsize="medium")
            ax.tick_params(axis="x", rotation=30)
            ax.margins(y=0.12)  # room above the tallest bar for its label
            ax.grid(axis="y", alpha=0.3)
            self.panels.append((ax, column, bars, notes))
        if self.title:
            figure.suptitle(self.title, fontsize="medium")
        return figure

    def update(self, table: pd.DataFrame) -> None:
        for ax, column, bars, notes in self.panels:
            values = table[column].to_numpy(dtype=float)
            for i, (bar, note, value) in enumerate(zip(bars, notes, values, strict=True)):
                bar.set_height(value)
                note.xy = note.xyann = (i, value)  # the text sits on the point itself
                note.set_text(bar_label(value))
            ax.relim()
            ax.autoscale_view()
