"""MapView: the session's 2-D map as a bokeh scatter (jupyter_bokeh), coloured by label, with lasso/box
selection (or a click on one point) synced to Python and shown in an ItemGrid below for bulk labeling.

Large maps stay usable: above `max_points` only a random subset is drawn, but a selection covers every
point, because the lasso/box geometry is tested against all N coordinates in Python.
"""
from __future__ import annotations

import base64
import html
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets

from .item_grid import ItemGrid
from .counts import labeled_html
from .style import SELECTION, UNLABELED, class_colours, style_widget
from .threads import on_main_thread

_BOKEHJS_LOADED = False


def load_bokehjs() -> None:
    """Put BokehJS (inline, no network) into the page; jupyter_bokeh views need it. Idempotent.

    Call it from a cell that is executing (App does so when built); Voila runs it while rendering.
    """
    global _BOKEHJS_LOADED
    if _BOKEHJS_LOADED:
        return
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(resources=INLINE, hide_banner=True)
    _BOKEHJS_LOADED = True


def class_palette(n: int) -> list[str]:
    """`n` distinguishable hex colours, fixed by class index (`style.class_colour`): a class keeps its
    colour whatever the number of classes, across refits and across views."""
    return class_colours(n)


def thumbnail_urls(session: Any, ids: Iterable[int], size: int = 64) -> list[str]:
    """PNG data URLs of these items' thumbnails for the map's hover, memoised on the session, so a
    background job (the App's Explore preparation) can make them before the map is built (1,797 digits
    took 0.5-1.3 s of the first Explore)."""
    memo = getattr(session, "_dw_thumb_urls", None)
    if memo is None:
        memo = {}
        try:
            session._dw_thumb_urls = memo
        except AttributeError:   # sessions with __slots__: no memo, still correct
            pass
    out = []
    for i in ids:
        i = int(i)
        url = memo.get((i, size))
        if url is None:
            png = session.items.thumbnail(i, size=size)
            url = "data:image/png;base64," + base64.b64encode(png).decode() if png else ""
            memo[(i, size)] = url
        out.append(url)
    return out


def points_in_polygon(xy: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of `xy` inside the polygon (px, py) (even-odd ray casting)."""
    x, y = xy[:, 0], xy[:, 1]
    inside = np.zeros(len(xy), dtype=bool)
    n = len(px)
    j = n - 1
    for i in range(n):
        xi, yi, xj, yj = px[i], py[i], px[j], py[j]
        crosses = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xcross = (xj - xi) * (y - yi) / (yj - yi) + xi
        inside ^= crosses & (x < xcross)
        j = i
    return inside


def geometry_mask(xy: np.ndarray, geometry: dict) -> np.ndarray | None:
    """Mask of points inside a bokeh SelectionGeometry (`rect` or `poly`), or None for other kinds."""
    kind = geometry.get("type")
    if kind == "rect":
        x0, x1 = sorted((geometry["x0"], geometry["x1"]))
        y0, y1 = sorted((geometry["y0"], geometry["y1"]))
        return (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
    if kind == "poly":
        return points_in_polygon(xy, np.asarray(geometry["x"], float), np.asarray(geometry["y"], float))
    return None


class MapView(W.VBox):
    """Scatter of `session.map`; hover shows the item, lasso/box selects, the grid below labels in bulk.

    `selected` (traitlet, list of ids over all N points) follows the selection; `on_select(cb)` calls
    `cb(ids)` on each change; `select(ids)` selects from Python; `highlight(ids)` rings items shown
    elsewhere (e.g. the item being labeled) with black rings, a colour no class has; `clear_selection()`
    empties the selection and its message. Colours follow Session "labels" events and are fixed by class
    index (`style.class_colour`).
    """

    # item ids (Python ints, as the setters make them); no per-element trait: validating each element
    # of a 37k-item lasso took 0.18 s per assignment at 900k points
    selected = traitlets.List(default_value=[])

    def __init__(self, session: Any, max_points: int = 50_000, width: int = 720, height: int = 520,
                 grid: bool = True, thumbnails: bool = True, annotator: str | None = None,
                 random_state: int = 0) -> None:
        from bokeh.models import (
            BoxSelectTool,
            ColumnDataSource,
            HoverTool,
            LassoSelectTool,
            PanTool,
            ResetTool,
            TapTool,
            WheelZoomTool,
        )
        from bokeh.plotting import figure
        from jupyter_bokeh import BokehModel

        load_bokehjs()
        if not isinstance(max_points, int) or max_points < 1:
            raise ValueError(f"max_points must be a positive int, got {max_points!r}")
        self.session = session
        self.classes = [str(c) for c in session.classes]
        self.palette = class_palette(len(self.classes))
        self._lookup = {c: k for k, c in enumerate(self.classes)}
        self.xy = np.asarray(session.map, dtype=np.float64)
        n = len(self.xy)
        rng = np.random.default_rng(random_state)
        self.downsampled = n > max_points
        self.shown = (np.sort(rng.choice(n, max_points, replace=False)) if self.downsampled
                      else np.arange(n)).astype(np.int64)
        self._pos = np.full(n, -1, dtype=np.int64)  # item id -> row in the drawn source
        self._pos[self.shown] = np.arange(len(self.shown))
        self._callbacks: list[Callable[[list[int]], None]] = []
        self._geom_rows: list[int] | None = None
        self._quiet = False

        colors, alphas, names = self._colour_columns()
        data = dict(x=self.xy[self.shown, 0], y=self.xy[self.shown, 1], id=self.shown,
                    color=colors, alpha=alphas, label=names)
        tooltip = "<div>#@id · @label</div>"
        if thumbnails and session.items.kind == "image" and len(self.shown) <= 20_000:
            data["thumb"] = thumbnail_urls(session, self.shown)
            tooltip = ('<div><img src="@thumb" width="64" height="64" style="image-rendering: pixelated">'
                       "<div>#@id · @label</div></div>")
        elif session.items.kind in ("text", "table"):
            data["desc"] = [session.items.describe(int(i))[:160] for i in self.shown]
            tooltip = "<div style='max-width:300px'>#@id · @label<br>@desc</div>"
        self.source = ColumnDataSource(data)
        lasso = LassoSelectTool(continuous=False)  # one selection message per gesture, not per mouse move
        tools = [PanTool(), WheelZoomTool(), BoxSelectTool(continuous=False), lasso, TapTool(), ResetTool()]
        fig = figure(width=width, height=height, tools=tools, active_drag=lasso, active_scroll=tools[1],
                     output_backend="webgl" if len(self.shown) > 20_000 else "canvas",
                     title=f"map of {n:,} items" + (f" (showing {len(self.shown):,})" if self.downsampled else ""))
        fig.axis.visible = False
        fig.grid.visible = False
        fig.toolbar.logo = None
        self.renderer = fig.scatter("x", "y", source=self.source, size=6 if n < 5000 else 4,
                                    fill_color="color", line_color=None, fill_alpha="alpha",
                                    selection_line_color=SELECTION, selection_fill_alpha="alpha",
                                    nonselection_fill_alpha=0.3)
        self.hl_source = ColumnDataSource(dict(x=[], y=[]))
        self._hl = fig.scatter("x", "y", source=self.hl_source, size=16, fill_color=None,
                               line_color=SELECTION, line_width=3)
        hover = HoverTool(renderers=[self.renderer], tooltips=tooltip)
        if "limit" in HoverTool.properties():  # bokeh >= 3.8: one item per tooltip, not a stack
            hover.limit = 1
        fig.add_tools(hover)
        self.figure = fig
        self.source.selected.on_change("indices", self._on_indices)
        if self.downsampled:
            from bokeh.events import SelectionGeometry

            fig.on_event(SelectionGeometry, self._on_geometry)
        self.plot = BokehModel(fig)
        self.legend = W.HTML()
        self.info = W.HTML()
        self.grid = ItemGrid(session, [], annotator=annotator,
                             title="<b>Selection</b> — lasso or box-select points on the map") if grid else None
        self._refresh_legend()
        children = [style_widget(), self.plot, self.legend, self.info]
        if self.grid is not None:
            children.append(self.grid)
        super().__init__(children)
        self.add_class("dcai-map-view")
        session.on("labels", on_main_thread(self._on_labels))

    # -- colours -------------------------------------------------------------------------------
    def _label_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) human class index or -1, and (N,) propagated class index or -1."""
        human = np.asarray(self.session.label_vector())
        prop = np.full(len(human), -1, dtype=np.int64)
        try:
            p = self.session.propagated()
            if len(p):
                lookup = {c: k for k, c in enumerate(self.classes)}
                prop[p["id"].to_numpy()] = p["label"].map(lookup).fillna(-1).astype(np.int64).to_numpy()
        except Exception:  # no propagated labels yet
            pass
        return human, prop

    def _colour_columns(self, ids: np.ndarray | None = None, refresh: bool = True) -> tuple[list, list, list]:
        if refresh:
            self._human, self._prop = self._label_state()
        human, prop = self._human, self._prop
        ids = self.shown if ids is None else ids
        colors, alphas, names = [], [], []
        for i in ids:
            h, p = human[i], prop[i]
            if h >= 0:
                colors.append(self.palette[h]); alphas.append(0.95); names.append(self.classes[h])
            elif p >= 0:
                colors.append(self.palette[p]); alphas.append(0.35); names.append(f"~{self.classes[p]}")
            else:
                colors.append(UNLABELED); alphas.append(0.5); names.append("unlabeled")
        return colors, alphas, names

    def _refresh_legend(self) -> None:
        human = self._human
        counts = np.bincount(human[human >= 0], minlength=len(self.classes))
        items = "".join(f'<span><span class="sw" style="background:{c}"></span>{html.escape(name)} '
                        f"({int(k)})</span>" for c, name, k in zip(self.palette, self.classes, counts))
        items += (f'<span><span class="sw" style="background:{UNLABELED}"></span>unlabeled '
                  f"({int((human < 0).sum())})</span>")
        self.legend.value = (f'<div class="dcai-legend">{items}</div>'
                             f'<div class="dcai-counts">{labeled_html(int((human >= 0).sum()), len(human))} · '
                             "solid dots: labeled by people · faint: propagated by the model · "
                             "black ring: selected or shown elsewhere</div>")

    def _on_labels(self, ids=None, labels=None, source=None, **_: Any) -> None:
        # a label event carries its classes: update in memory, no store query in the keystroke path (nor
        # after a model propagated labels to all N items: reading them back took about 3 s at 1M)
        known = (source in ("human", "review", "import", "propagated") and ids is not None
                 and labels is not None and len(labels) == len(ids) and all(lab in self._lookup for lab in labels))
        if known:
            target = self._prop if source == "propagated" else self._human
            target[np.asarray(ids, dtype=np.int64)] = [self._lookup[lab] for lab in labels]
        if ids is None or len(ids) > 2000:
            colors, alphas, names = self._colour_columns(refresh=not known)
            self.source.data.update(color=colors, alpha=alphas, label=names)
        else:
            ids = np.asarray([int(i) for i in ids if self._pos[int(i)] >= 0], dtype=np.int64)
            colors, alphas, names = self._colour_columns(ids, refresh=not known)
            if len(ids):
                rows = [int(r) for r in self._pos[ids]]
                self.source.patch({"color": list(zip(rows, colors)), "alpha": list(zip(rows, alphas)),
                                   "label": list(zip(rows, names))})
        self._refresh_legend()

    # -- selection -----------------------------------------------------------------------------
    def on_select(self, callback: Callable[[list[int]], None]) -> None:
        """Call `callback(ids)` whenever the selection changes."""
        if not callable(callback):
            raise TypeError("on_select needs a callable taking a list of item ids")
        self._callbacks.append(callback)

    def _set_selection(self, ids: Iterable[int]) -> None:
        ids = sorted({int(i) for i in ids})
        self.selected = ids
        self.info.value = (f'<span class="dcai-map-selected" data-count="{len(ids)}">{len(ids)} selected'
                           + (" (over all points)" if self.downsampled else "") + "</span>")
        if self.grid is not None:
            self.grid.set_ids(ids)
        for cb in list(self._callbacks):
            cb(ids)

    def _on_indices(self, _attr: str, _old: Any, new: list[int]) -> None:
        if self._quiet:
            return
        rows = sorted(int(r) for r in new)
        if self._geom_rows is not None and rows == self._geom_rows:
            return  # the geometry handler already selected over all points
        self._geom_rows = None
        self._set_selection(self.shown[np.asarray(rows, dtype=np.int64)] if rows else [])

    def _on_geometry(self, event: Any) -> None:
        mask = geometry_mask(self.xy, dict(event.geometry))
        if mask is None:
            return
        ids = np.flatnonzero(mask)
        rows = self._pos[ids]
        self._geom_rows = sorted(int(r) for r in rows[rows >= 0])
        self._set_selection(ids)

    def clear_selection(self) -> None:
        """Select nothing (e.g. when the panel switches mode): the "n selected" message goes too."""
        self._quiet = True
        try:
            self.source.selected.indices = []
        finally:
            self._quiet = False
        self._geom_rows = None
        self.selected = []
        self.info.value = ""
        if self.grid is not None:
            self.grid.set_ids([])

    def select(self, ids: Iterable[int]) -> None:
        """Select items from Python (e.g. a search result); drawn points are marked on the map too."""
        ids = np.asarray(list(ids), dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.xy)):
            raise ValueError(f"item ids must be within 0..{len(self.xy) - 1}")
        rows = self._pos[ids]
        self._quiet = True
        try:
            self.source.selected.indices = [int(r) for r in rows[rows >= 0]]
        finally:
            self._quiet = False
        self._set_selection(ids)

    def select_region(self, geometry: dict) -> list[int]:
        """Select the items inside a `rect` (x0, x1, y0, y1) or `poly` (x, y lists) in map coordinates."""
        mask = geometry_mask(self.xy, geometry)
        if mask is None:
            raise ValueError("geometry must be {'type': 'rect', x0, x1, y0, y1} or {'type': 'poly', x, y}")
        ids = np.flatnonzero(mask)
        self.select(ids)
        return [int(i) for i in ids]

    def highlight(self, ids: Iterable[int]) -> None:
        """Ring these items on the map (an item shown elsewhere, found on the map); [] clears."""
        ids = np.asarray(list(ids), dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.xy)):
            raise ValueError(f"item ids must be within 0..{len(self.xy) - 1}")
        few = len(ids) <= 20  # big rings find one item; many big rings would hide the map
        if (self._hl.glyph.size == 16) != few:
            self._hl.glyph.size, self._hl.glyph.line_width = (16, 3) if few else (9, 1.5)
        self.hl_source.data = dict(x=self.xy[ids, 0].tolist(), y=self.xy[ids, 1].tolist())
