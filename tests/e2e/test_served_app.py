"""End to end: `dcai-widgets serve` in headless Chromium; labels made with the keyboard and with a lasso
selection + bulk label (which starts with no class chosen) are in the SQLite file with the page's annotator,
Backspace in Explore takes the bulk batch back, labels are shown again after a reload and survive a SIGKILL;
hovering the map shows the item."""
from __future__ import annotations

import time

import pytest

from dcai_widgets.store import LabelStore

from .harness import Server, launch, open_app, press_and_wait, shown

pytestmark = pytest.mark.timeout(300)


def current(store_path):
    """{item: (label, annotator)} of the live human labels in the store file, read fresh from disk."""
    st = LabelStore(store_path)
    try:
        df = st.current(("human",))
        return {int(i): (lab, ann) for i, lab, ann in zip(df["id"], df["label"], df["annotator"])}
    finally:
        st.close()


def lasso(page, box, frac=0.3):
    """Draw a closed lasso around the middle of the plot `box` (a bounding box dict)."""
    cx, cy = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5
    rx, ry = box["width"] * frac, box["height"] * frac
    pts = [(cx - rx, cy - ry), (cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry)]
    page.mouse.move(*pts[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        for t in (0.25, 0.5, 0.75, 1.0):
            page.mouse.move(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
    page.mouse.up()


def hover_shows_thumbnail(page, box):
    """Move over the plot until a tooltip with the item's thumbnail appears; returns that (x, y) or None."""
    for fy in (0.3, 0.4, 0.5, 0.6, 0.7):
        for fx in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7):
            x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
            page.mouse.move(x, y)
            time.sleep(0.15)
            if page.locator(".bk-Tooltip img, .bk-tooltip img").count():
                return x, y
    return None


def test_keyboard_lasso_reload_and_sigkill(tmp_path):
    from playwright.sync_api import sync_playwright

    store = tmp_path / "labels.db"
    server = Server(store, tmp_path / "serve.log", annotator="e2e")
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = open_app(browser, server.url + "?annotator=kim")
            assert "annotator kim" in page.inner_text(".dcai-label-panel")

            # keyboard: each label is acknowledged when the next item appears; it must be on disk by then
            made = {}
            for key in "3141592":
                item, _ = shown(page)
                nxt, _ = press_and_wait(page, key)
                assert nxt != item
                made[item] = key
                assert current(store).get(item) == (key, "kim"), "acknowledged label not in the store"
            # undo (Backspace) retracts the latest label and shows that item again
            last = list(made)[-1]
            back, _ = press_and_wait(page, "Backspace")
            assert back == last and last not in current(store)
            press_and_wait(page, "8")
            made[last] = "8"
            assert {i: v[0] for i, v in current(store).items()} == made

            # lasso on the map, then bulk label the selection in the grid below
            page.get_by_role("tab", name="Explore").click()
            plot = page.locator(".dcai-map-view .bk-Figure, .dcai-map-view canvas").first
            plot.wait_for(timeout=120_000)
            time.sleep(0.5)
            spot = hover_shows_thumbnail(page, plot.bounding_box())
            assert spot, "hovering the map shows no item"
            page.mouse.click(*spot)  # a click on a point selects that item
            page.wait_for_function("() => { const e = document.querySelector('.dcai-map-selected');"
                                   " return e && +e.dataset.count >= 1; }", timeout=30_000)
            page.mouse.move(5, 5)
            page.evaluate("""() => { window.__counts = [];
                new MutationObserver(() => { const e = document.querySelector('.dcai-map-selected');
                  if (e) window.__counts.push(e.dataset.count); })
                .observe(document.body, {subtree: true, childList: true, attributes: true}); }""")
            lasso(page, plot.bounding_box())
            sel = page.locator(".dcai-map-selected")
            page.wait_for_function("() => +document.querySelector('.dcai-map-selected').dataset.count > 3",
                                   timeout=30_000)
            time.sleep(1.5)  # let every selection message of the gesture arrive
            n_sel = int(sel.get_attribute("data-count"))
            assert n_sel > 3, "the lasso selected (almost) nothing"
            # the grid that shows the map selection (MapView's own, or the ExplorePanel's)
            button = f"label {n_sel} selected"
            try:
                page.get_by_role("button", name=button).first.wait_for(timeout=30_000)
            except Exception as e:
                texts = page.locator(".dcai-item-grid button").all_inner_texts()
                counts = page.evaluate("() => [...new Set(window.__counts)]")
                raise AssertionError(f"no {button!r} button; map says {sel.inner_text()!r} (counts seen "
                                     f"{counts}); grid buttons {texts[:8]}") from e
            grid = page.locator(".dcai-item-grid").filter(has=page.get_by_role("button", name=button))
            label_button = grid.get_by_role("button", name=f"label {n_sel} selected")
            assert label_button.is_disabled(), "'label as' must start with no class chosen"
            grid.locator("select").select_option("7")
            label_button.click()
            page.locator(".dcai-bulk-status").wait_for(timeout=30_000)
            now = current(store)
            bulk = [i for i, (lab, _a) in now.items() if lab == "7" and i not in made]
            assert len(bulk) + sum(1 for i in made if i in now and now[i][0] == "7") >= n_sel
            assert int(page.locator(".dcai-bulk-status").get_attribute("data-count")) == n_sel
            assert bulk and {now[i][1] for i in bulk} == {"kim"}, "bulk labels must carry the annotator"
            # Backspace in Explore takes the whole bulk batch back; the keyboard labels from before stay
            page.mouse.click(5, 5)
            page.keyboard.press("Backspace")
            page.locator(".dcai-undo-status").wait_for(timeout=30_000)
            now = current(store)
            assert not set(bulk) & set(now) and {i: v[0] for i, v in now.items()} == made
            total = len(now)

            # reload: a new kernel reads the labels back from the store
            page.reload()
            page.locator(".dcai-label-panel .dcai-progress").first.wait_for(timeout=120_000)
            shown_total = int(page.locator(".dcai-label-panel .dcai-progress").first.get_attribute("data-labeled"))
            assert shown_total == total

            # SIGKILL right after an acknowledged label: nothing lost
            item, _ = shown(page)
            press_and_wait(page, "5")
            server.kill()
            browser.close()
        after = current(store)
        assert after.get(item) == ("5", "kim")
        assert len(after) == total + 1
    finally:
        server.kill()


def test_the_page_loads_nothing_from_outside_the_server(tmp_path):
    """Every request of a page load (the Label tab, then Explore's map and LANCET's view, which load
    later) goes to the server itself: no CDN (Voila's lab template links Font Awesome from jsdelivr),
    so the app works offline and tells no third party who opens it. Requests elsewhere are refused, as
    they would be offline, and the map still draws (BokehJS comes from the server)."""
    from urllib.parse import urlsplit

    from playwright.sync_api import sync_playwright

    server = Server(tmp_path / "labels.db", tmp_path / "serve.log", annotator="offline")
    origin = urlsplit(server.url)[:2]
    seen: list[str] = []
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: seen.append(r.url))
            page.route(lambda url: urlsplit(url)[:2] != origin, lambda route: route.abort())
            page.goto(server.url, timeout=120_000)
            page.locator(".dcai-label-panel .dcai-item-id").first.wait_for(timeout=120_000)
            html = page.content()
            page.get_by_role("tab", name="Explore").click()
            page.locator(".dcai-explore canvas").first.wait_for(timeout=120_000)
            page.locator(".dcai-lancet-summary").first.wait_for(state="attached", timeout=120_000)   # built later
            browser.close()
    finally:
        server.kill()

    def outside(url: str) -> bool:
        if url.startswith("data:"):
            return False
        if url.startswith("blob:"):          # an object URL of this page (anywidget's modules)
            url = url[len("blob:"):]
        return urlsplit(url)[:2] != origin

    assert len(seen) > 10 and not [u for u in seen if outside(u)], [u for u in seen if outside(u)]
    assert any("/dcai/static/bokeh/bokeh.min.js" in u for u in seen)      # BokehJS from the server
    assert "cdn.jsdelivr.net" not in html and "cdnjs.cloudflare.com" not in html
    import re

    links = re.findall(r"""<(?:link|script)[^>]*?(?:href|src)=["']([^"']+)""", html)
    assert links and not [u for u in links if u.startswith("//") or (urlsplit(u).scheme and outside(u))], links


def test_a_reloaded_page_shows_the_lancet_view_from_the_store(tmp_path):
    """A new page (a new kernel) shows LANCET's propagated labels and the spot checks the store holds, in
    Chromium, before (or whether or not) its own LANCET has fitted: it said "no propagated labels yet"."""
    import numpy as np
    from playwright.sync_api import sync_playwright

    import dcai_widgets as dw
    from dcai_widgets.lancet import spot

    store = tmp_path / "labels.db"
    s = dw.Session.demo(store=store)
    y = np.asarray(s.y_true)
    mine = [int(i) for i in np.random.default_rng(0).choice(len(y), 60, replace=False)]
    s.label(mine, [s.classes[y[i]] for i in mine], annotator="kim")
    rest = np.setdiff1d(np.arange(len(y)), mine)
    s.set_propagated(rest, [s.classes[y[i]] for i in rest], np.full(len(rest), 0.9), model_version="lancet-60-1")
    checked = int(rest[0])
    spot.record(s, checked, s.classes[y[checked]], s.classes[y[checked]], 0.9, "kim")
    s.store.close()
    server = Server(store, tmp_path / "serve.log", annotator="kim")
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = open_app(browser, server.url)
            # every unlabeled item has a propagated label (the spot-checked one is labeled now)
            page.locator(f'.dcai-lancet-summary[data-propagated="{len(rest) - 1}"]').wait_for(timeout=240_000)
            page.locator('.dcai-estimate[data-checks="1"]').wait_for(timeout=120_000)
            assert "no propagated labels yet" not in page.inner_text(".dcai-lancet-view")
            browser.close()
    finally:
        server.kill()


def test_a_new_users_labeled_csv_is_offered_for_import_and_the_labels_download_from_the_page(tmp_path):
    """A new user's walk on a CSV with a label column of 1-3: the page said "0 of 60 labeled" without a
    word about the file's labels, and offered no way to export from the browser. Now the file's labels
    are said and imported on a click (source import, the page's annotator), and the export bar gives the
    labels as a downloadable CSV."""
    import base64
    import io

    import numpy as np
    import pandas as pd
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(0)
    csv = tmp_path / "rows.csv"
    pd.DataFrame({"label": rng.integers(1, 4, 30), "width": rng.random(30), "height": rng.random(30)}).to_csv(
        csv, index=False)
    store = tmp_path / "labels.db"
    server = Server(store, tmp_path / "serve.log", data=str(csv), annotator="new")
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = open_app(browser, server.url)
            note = page.locator(".dcai-data-notes .dcai-known")
            note.wait_for(timeout=60_000)
            assert "comes with labels for 30 of 30 items" in note.inner_text()
            item, _ = shown(page)
            press_and_wait(page, "1")                               # a label made here first
            page.get_by_role("button", name="import 29 labels").click()
            page.locator('.dcai-known[data-pending="0"]').wait_for(timeout=60_000)
            bar = page.locator(".dcai-export-bar")
            bar.get_by_role("button", name="export labels").click()
            link = page.locator(".dcai-export-bar a.dcai-download")
            link.wait_for(timeout=60_000)
            href = link.get_attribute("href")
            browser.close()
        st = LabelStore(store)
        try:
            cur = st.current(("human", "import")).set_index("id")
        finally:
            st.close()
        assert len(cur) == 30 and (cur["source"] == "import").sum() == 29 and set(cur["annotator"]) == {"new"}
        assert cur.loc[item, "source"] == "human" and cur.loc[item, "label"] == "1"
        df = pd.read_csv(io.BytesIO(base64.b64decode(href.split(",", 1)[1])), dtype={"label": str})
        assert len(df) == 30 and set(df["source"]) == {"human", "import"}
    finally:
        server.kill()
