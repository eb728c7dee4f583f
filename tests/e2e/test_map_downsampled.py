"""A map drawn downsampled still selects every point inside the lasso (browser -> SelectionGeometry -> Python),
and a zoom in the browser draws every point in view (browser -> RangesUpdate -> Python -> redraw)."""
from __future__ import annotations

import time
from contextlib import contextmanager

import nbformat
import pytest

from .harness import launch, serve_notebook
from .test_served_app import lasso

pytestmark = pytest.mark.timeout(240)

CELL = '''import ipywidgets as W
import dcai_widgets as dw
from dcai_widgets.widgets.map_view import MapView
s = dw.Session.demo(store={store!r})
v = MapView(s, max_points=400)
out = W.HTML()
def report(ids):
    drawn = len(v.source.selected.indices)
    out.value = f'<span id="probe" data-drawn="{{drawn}}" data-all="{{len(ids)}}">probe</span>'
v.on_select(report)
W.VBox([v, out])'''


@contextmanager
def served_map(tmp_path, cell: str):
    """(page, the map's plot locator) of a one-cell notebook served by Voila, open in headless Chromium."""
    from playwright.sync_api import sync_playwright

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(cell.format(store=str(tmp_path / "ds.db")))]
    nbformat.write(nb, tmp_path / "ds.ipynb")
    server = serve_notebook(tmp_path / "ds.ipynb", tmp_path / "voila.log")
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1200, "height": 1200})
            page.goto(server.url, timeout=120_000)
            plot = page.locator(".dcai-map-view .bk-Figure").first
            plot.wait_for(timeout=120_000)
            time.sleep(1)
            yield page, plot
            browser.close()
    finally:
        server.kill()


def test_lasso_on_a_downsampled_map_selects_all_points_inside(tmp_path):
    with served_map(tmp_path, CELL) as (page, plot):
        lasso(page, plot.bounding_box(), frac=0.3)
        page.wait_for_function("() => { const e = document.getElementById('probe');"
                               " return e && +e.dataset.all > 0 && +e.dataset.drawn > 0; }", timeout=30_000)
        time.sleep(1)  # both messages (indices and geometry) have arrived
        probe = page.locator("#probe")
        drawn, everything = int(probe.get_attribute("data-drawn")), int(probe.get_attribute("data-all"))
    # 400 of 1,797 points are drawn, so a selection over all points is several times the drawn one
    assert everything > 2 * drawn, (drawn, everything)


ZOOM_CELL = '''import ipywidgets as W
import numpy as np
import dcai_widgets as dw
from bokeh.events import RangesUpdate
from dcai_widgets.widgets.map_view import MapView
from dcai_widgets.widgets.map_density import in_view
s = dw.Session.demo(store={store!r})
v = MapView(s, max_points=400, lod_points=100, grid=False)
out = W.HTML()
def report(_event):
    x0, x1, y0, y1 = v.view_range
    inside = np.flatnonzero(in_view(v.xy, x0, x1, y0, y1))
    same = bool(np.array_equal(np.sort(v.source.data["id"]), inside))
    out.value = (f'<span id="zoom" data-drawn="{{len(v.source.data["id"])}}" data-in-view="{{len(inside)}}" '
                 f'data-all-drawn="{{int(same)}}" data-image="{{int(v._image.visible)}}">zoom</span>')
v.figure.on_event(RangesUpdate, report)
W.VBox([v, out])'''


def test_zooming_in_the_browser_draws_every_point_in_view(tmp_path):
    """Overview: 100 LOD points over a density image of 1,797; wheel-zoomed: every item in view drawn."""
    with served_map(tmp_path, ZOOM_CELL) as (page, plot):
        box = plot.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        z = page.locator("#zoom")
        for _ in range(30):     # zoom in a step at a time until the view holds at most 400 items
            page.mouse.wheel(0, -120)
            time.sleep(0.8)
            if z.count() and int(z.get_attribute("data-in-view")) <= 400:
                break
        time.sleep(1.5)   # the last range message has been handled
        drawn, inside = int(z.get_attribute("data-drawn")), int(z.get_attribute("data-in-view"))
        all_drawn, image = z.get_attribute("data-all-drawn"), z.get_attribute("data-image")
    assert 0 < inside <= 400 and drawn == inside, (drawn, inside)
    assert all_drawn == "1" and image == "0", (all_drawn, image)
