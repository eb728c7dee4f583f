"""MapView: the session's 2-D map as a bokeh scatter (jupyter_bokeh), coloured by label, with lasso/box
selection (or a click on one point) synced to Python and shown in an ItemGrid below for bulk labeling.

Large maps stay usable (issue 18, 1M-10M items): above `max_points` the browser gets a density image of
all N items (`map_density`, datashader-style categorical shading) under a level-of-detail sample of
`lod_points` drawn points; after a pan or zoom the image is redrawn for the view and, once the view holds
at most `max_points` items, every one of them is drawn. A selection always covers every item, drawn or
not: the lasso/box geometry is tested against all N coordinates in Python. `density=False` keeps the
earlier behaviour (a fixed random `max_points` subset, no image), the baseline in
`benchmarks/scale_parts/map.py`.
"""
from __future__ import annotations

import base64
import html
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets

from .counts import labeled_html
from .item_grid import ItemGrid
from .map_density import density_rgba, hex_rgb, lod_pick
from .map_density import in_view as in_view_mask
from .style import SELECTION, UNLABELED, class_colours, style_widget
from .threads import on_main_thread

_BOKEHJS_LOADED = False
# a transparent 1x1 PNG: the hover picture of a point drawn while zoomed out (pictures come with zoom)
_NO_THUMB = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


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
    """Boolean mask of the rows of `xy` inside the polygon (px, py) (even-odd ray casting).

    Only points inside the polygon's bounding box are tested, sorted by y once, and each edge visits only
    the points in its y-span (binary search): about (M log M + crossings x M) work for M candidates
    instead of vertices x N, so a hand-drawn lasso of a few hundred vertices over 1M points stays fast.
    """
    xy = np.asarray(xy)
    px, py = np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)
    inside = np.zeros(len(xy), dtype=bool)
    if len(px) < 3 or len(xy) == 0:
        return inside
    box = np.flatnonzero((xy[:, 0] >= px.min()) & (xy[:, 0] <= px.max())
                         & (xy[:, 1] >= py.min()) & (xy[:, 1] <= py.max()))
    if len(box) == 0:
        return inside
    x, y = xy[box, 0].astype(np.float64), xy[box, 1].astype(np.float64)
    order = np.argsort(y, kind="stable")
    ys = y[order]
    hit = np.zeros(len(box), dtype=bool)
    j = len(px) - 1
    for i in range(len(px)):
        xi, yi, xj, yj = px[i], py[i], px[j], py[j]
        j = i
        if yi == yj:
            continue  # a horizontal edge crosses no ray
        # (yi > y) != (yj > y)  <=>  min(yi, yj) <= y < max(yi, yj)
        lo, hi = np.searchsorted(ys, min(yi, yj), "left"), np.searchsorted(ys, max(yi, yj), "left")
        if lo == hi:
            continue
        rows = order[lo:hi]
        xcross = (xj - xi) * (y[rows] - yi) / (yj - yi) + xi
        hit[rows] ^= x[rows] < xcross
    inside[box] = hit
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
    empties the selection and its message; `show_range(x0, x1, y0, y1)` does what a pan/zoom in the
    browser does (density mode). Colours follow Session "labels" events and are fixed by class index
    (`style.class_colour`).
    """

    # item ids (Python ints, as the setters make them); no per-element trait: validating each element
    # of a 37k-item lasso took 0.18 s per assignment at 900k points
    selected = traitlets.List(default_value=[])

    def __init__(self, session: Any, max_points: int = 50_000, width: int = 720, height: int = 520,
                 grid: bool = True, thumbnails: bool = True, annotator: str | None = None,
                 random_state: int = 0, lod_points: int = 10_000, density: bool | None = None) -> None:
        from bokeh.models import (
            BoxSelectTool,
            ColumnDataSource,
            HoverTool,
            LassoSelectTool,
            PanTool,
            Range1d,
            ResetTool,
            TapTool,
            WheelZoomTool,
        )
        from bokeh.plotting import figure
        from jupyter_bokeh import BokehModel

        load_bokehjs()
        for name, v in (("max_points", max_points), ("lod_points", lod_points)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.session = session
        self.classes = [str(c) for c in session.classes]
        self.palette = class_palette(len(self.classes))
        self._lookup = {c: k for k, c in enumerate(self.classes)}
        self.xy = np.asarray(session.map, dtype=np.float64)
        n = len(self.xy)
        self.max_points = max_points
        rng = np.random.default_rng(random_state)
        self.downsampled = n > max_points
        self.density = self.downsampled if density is None else bool(density) and self.downsampled
        self.lod_points = min(lod_points, max_points)
        self._pos = np.full(n, -1, dtype=np.int64)  # item id -> row in the drawn source
        if self.density:   # a fixed random priority: the LOD sample at one zoom is kept at every finer one
            order = rng.permutation(n)
            self._priority = np.empty(n, dtype=np.int64)
            self._priority[order] = np.arange(n)
            shown = np.sort(order[:self.lod_points])    # = lod_pick(self._priority, None, lod_points)
        else:
            shown = (np.sort(rng.choice(n, max_points, replace=False)) if self.downsampled else np.arange(n))
        self._set_shown(shown)
        self._callbacks: list[Callable[[list[int]], None]] = []
        self._geom_rows: list[int] | None = None
        self._quiet = False
        self._density_stale = False
        self._human, self._prop = self._label_state()
        self._thumbs = thumbnails and session.items.kind == "image" and (self.density or len(self.shown) <= 20_000)
        self._texts = session.items.kind in ("text", "table")

        # fixed ranges (padded data bounds): replacing the drawn points after a zoom must not re-fit them
        lo, hi = (self.xy.min(0), self.xy.max(0)) if n else (np.zeros(2), np.ones(2))
        pad = np.maximum((hi - lo) * 0.03, 1e-6)
        self._home = (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1]))
        self.view_range = self._home
        self.source = ColumnDataSource(self._columns(self.shown))
        tooltip = "<div>#@id · @label</div>"
        if self._thumbs:
            tooltip = ('<div><img src="@thumb" width="64" height="64" style="image-rendering: pixelated">'
                       "<div>#@id · @label</div></div>")
        elif self._texts:
            tooltip = "<div style='max-width:300px'>#@id · @label<br>@desc</div>"
        lasso = LassoSelectTool(continuous=False)  # one selection message per gesture, not per mouse move
        tools = [PanTool(), WheelZoomTool(), BoxSelectTool(continuous=False), lasso, TapTool(), ResetTool()]
        x0, x1, y0, y1 = self._home
        fig = figure(width=width, height=height, tools=tools, active_drag=lasso, active_scroll=tools[1],
                     x_range=Range1d(x0, x1), y_range=Range1d(y0, y1),
                     output_backend="webgl" if len(self.shown) > 20_000 else "canvas", title=self._title())
        fig.axis.visible = False
        fig.grid.visible = False
        fig.toolbar.logo = None
        self._image_shape = (max(1, height // 2), max(1, width // 2))
        self.density_source = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        self._image = fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=self.density_source,
                                     visible=self.density)
        self.renderer = fig.scatter("x", "y", source=self.source, size=6 if n < 5000 else 4,
                                    fill_color="color", line_color=None, fill_alpha="alpha",
                                    selection_line_color=SELECTION, selection_fill_alpha="alpha",
                                    # faint means one thing (only a model's guess): with a fixed 0.3 the
                                    # points outside a selection faded too, so a lasso of 2 made 43
                                    # people-labeled texts look "propagated by the model (0)"
                                    nonselection_fill_alpha="alpha")
        self.hl_source = ColumnDataSource({"x": [], "y": []})
        self._hl = fig.scatter("x", "y", source=self.hl_source, size=16, fill_color=None,
                               line_color=SELECTION, line_width=3)
        hover = HoverTool(renderers=[self.renderer], tooltips=tooltip)
        if "limit" in HoverTool.properties():  # bokeh >= 3.8: one item per tooltip, not a stack
            hover.limit = 1
        fig.add_tools(hover)
        self.figure = fig
        if self.density:
            self._draw_density()
        self.source.selected.on_change("indices", self._on_indices)
        if self.downsampled:
            from bokeh.events import RangesUpdate, SelectionGeometry

            fig.on_event(SelectionGeometry, self._on_geometry)
            if self.density:
                fig.on_event(RangesUpdate, self._on_ranges)
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

    # -- what is drawn -------------------------------------------------------------------------
    def _set_shown(self, ids: np.ndarray) -> None:
        if hasattr(self, "shown"):
            self._pos[self.shown] = -1
        self.shown = np.asarray(ids, dtype=np.int64)
        self._pos[self.shown] = np.arange(len(self.shown))

    def _title(self) -> str:
        n = len(self.xy)
        if not self.downsampled:
            return f"map of {n:,} items"
        if not self.density:
            return f"map of {n:,} items (showing {len(self.shown):,})"
        x0, x1, y0, y1 = self.view_range
        in_view = int(in_view_mask(self.xy, x0, x1, y0, y1).sum()) if self.view_range != self._home else n
        if len(self.shown) >= in_view:
            return f"map of {n:,} items (all {in_view:,} in view drawn)"
        return (f"map of {n:,} items (shading: all {in_view:,} in view; "
                f"points: {len(self.shown):,}, zoom in for all)")

    def _columns(self, ids: np.ndarray) -> dict:
        colors, alphas, names = self._colour_columns(ids, refresh=not hasattr(self, "_human"))
        data = {"x": self.xy[ids, 0], "y": self.xy[ids, 1], "id": ids, "color": colors, "alpha": alphas, "label": names}
        if getattr(self, "_thumbs", False):
            # a zoomed-out LOD view gets no pictures (thousands of PNGs per pan); a zoom to <= 2,000 does
            few = not self.density or len(ids) <= 2000
            data["thumb"] = thumbnail_urls(self.session, ids) if few else [_NO_THUMB] * len(ids)
        elif getattr(self, "_texts", False):
            data["desc"] = [self.session.items.describe(int(i))[:160] for i in ids]
        return data

    def _categories(self, ids: np.ndarray | None = None) -> np.ndarray:
        """Index into palette + faint palette + [unlabeled] of these items (all N when None): what
        colours each (only the given rows are read: a label's recolour must not scan 1M items)."""
        c = len(self.classes)
        human, prop = (self._human, self._prop) if ids is None else (self._human[ids], self._prop[ids])
        return np.where(human >= 0, human, np.where(prop >= 0, c + prop, 2 * c)).astype(np.int64)

    def _draw_density(self) -> None:
        x0, x1, y0, y1 = self.view_range
        cols = hex_rgb(list(self.palette) + [UNLABELED])
        faint = 0.5 * cols[:-1] + 0.5 * cols[-1]   # propagated: halfway to grey, as the points are faint
        colours = np.vstack([cols[:-1], faint, cols[-1:]])
        img = density_rgba(self.xy, self._categories(), colours, (x0, x1), (y0, y1), self._image_shape)
        self.density_source.data = {"image": [img], "x": [x0], "y": [y0], "dw": [x1 - x0], "dh": [y1 - y0]}
        self._density_stale = False

    def show_range(self, x0: float, x1: float, y0: float, y1: float) -> None:
        """Redraw for this view (what a pan or zoom does): the density image of the items in it and
        either all of them as points (at most `max_points`) or their level-of-detail sample."""
        if not self.density:
            return
        x0, x1 = sorted((float(x0), float(x1)))
        y0, y1 = sorted((float(y0), float(y1)))
        if not (x1 > x0 and y1 > y0):
            return
        self.view_range = (x0, x1, y0, y1)
        mask = in_view_mask(self.xy, x0, x1, y0, y1)
        full = int(mask.sum()) <= self.max_points
        ids = lod_pick(self._priority, mask, self.max_points if full else self.lod_points)
        self._redraw(ids)
        self._draw_density()
        self._image.visible = not full
        self.figure.title.text = self._title()

    def _on_ranges(self, event: Any) -> None:
        self.show_range(event.x0, event.x1, event.y0, event.y1)

    def _redraw(self, ids: np.ndarray) -> None:
        """Draw exactly these items; the selection (over all items) stays marked on the drawn ones."""
        self._set_shown(ids)
        self._quiet = True
        try:
            self.source.selected.indices = []
            self.source.data = self._columns(self.shown)
            if self.selected:
                rows = self._pos[np.asarray(self.selected, dtype=np.int64)]
                self.source.selected.indices = [int(r) for r in rows[rows >= 0]]
        finally:
            self._quiet = False

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
        ids = self.shown if ids is None else np.asarray(ids, dtype=np.int64)
        c = len(self.classes)
        code = self._categories(ids)
        colours = np.asarray(list(self.palette) * 2 + [UNLABELED], dtype=object)
        alphas = np.asarray([0.95] * c + [0.35] * c + [0.5])
        names = np.asarray(self.classes + [f"~{k}" for k in self.classes] + ["unlabeled"], dtype=object)
        return colours[code].tolist(), alphas[code].tolist(), names[code].tolist()

    def _refresh_legend(self) -> None:
        human = self._human
        counts = np.bincount(human[human >= 0], minlength=len(self.classes))
        items = "".join(f'<span><span class="sw" style="background:{c}"></span>{html.escape(name)} '
                        f"({int(k)})</span>" for c, name, k in zip(self.palette, self.classes, counts))
        # grey = no label at all; an item with only a model's guess is drawn faint in its class colour
        # (was "unlabeled (1737)" beside a map with no grey point: every one of them had a guess)
        guessed = (human < 0) & (self._prop >= 0) if len(self._prop) == len(human) else np.zeros(len(human), bool)
        items += (f'<span><span class="sw" style="background:{UNLABELED}"></span>no label '
                  f"({int(((human < 0) & ~guessed).sum())})</span>")
        shading = (" · shading: every item, coloured by its items' mix; zoom in to draw each point"
                   if self.density else "")
        self.legend.value = (f'<div class="dcai-legend">{items}</div>'
                             f'<div class="dcai-counts">{labeled_html(int((human >= 0).sum()), len(human))} · '
                             "solid dots: labeled by people (counts above) · faint: propagated by the model "
                             f'(<span class="dcai-guessed" data-count="{int(guessed.sum())}">'
                             f"{int(guessed.sum()):,}</span>) · "
                             f"black ring: selected or shown elsewhere{shading}</div>")

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
            if self.density:   # many items changed colour: shade again (~0.05 s at 1M)
                self._draw_density()
        else:
            ids = np.asarray([int(i) for i in ids if self._pos[int(i)] >= 0], dtype=np.int64)
            colors, alphas, names = self._colour_columns(ids, refresh=not known)
            if len(ids):
                rows = [int(r) for r in self._pos[ids]]
                self.source.patch({"color": list(zip(rows, colors)), "alpha": list(zip(rows, alphas)),
                                   "label": list(zip(rows, names))})
            # a few items: their drawn points changed now; the shading follows at the next pan or zoom
            self._density_stale = self.density
        self._refresh_legend()

    # -- selection -----------------------------------------------------------------------------
    def on_select(self, callback: Callable[[list[int]], None]) -> None:
        """Call `callback(ids)` whenever the selection changes."""
        if not callable(callback):
            raise TypeError("on_select needs a callable taking a list of item ids")
        self._callbacks.append(callback)

    def _set_selection(self, ids: Iterable[int]) -> None:
        ids = (np.fromiter((int(i) for i in ids), np.int64) if not isinstance(ids, np.ndarray)
               else ids.astype(np.int64, copy=False))     # a 1M-point lasso can hold 100,000s of ids
        if len(ids) > 1 and not (np.diff(ids) > 0).all():  # a lasso's ids come sorted and unique already
            ids = np.unique(ids)
        ids = ids.tolist()
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
        self.hl_source.data = {"x": self.xy[ids, 0].tolist(), "y": self.xy[ids, 1].tolist()}
