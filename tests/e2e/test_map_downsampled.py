"""A map drawn downsampled still selects every point inside the lasso (browser -> SelectionGeometry -> Python)."""
from __future__ import annotations

import time

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


def test_lasso_on_a_downsampled_map_selects_all_points_inside(tmp_path):
    from playwright.sync_api import sync_playwright

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(CELL.format(store=str(tmp_path / "ds.db")))]
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
            lasso(page, plot.bounding_box(), frac=0.3)
            page.wait_for_function("() => { const e = document.getElementById('probe');"
                                   " return e && +e.dataset.all > 0 && +e.dataset.drawn > 0; }", timeout=30_000)
            time.sleep(1)  # both messages (indices and geometry) have arrived
            probe = page.locator("#probe")
            drawn, everything = int(probe.get_attribute("data-drawn")), int(probe.get_attribute("data-all"))
            browser.close()
        # 400 of 1,797 points are drawn, so a selection over all points is several times the drawn one
        assert everything > 2 * drawn, (drawn, everything)
    finally:
        server.kill()
