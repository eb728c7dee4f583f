"""End to end: the Clean tab of the served app in headless Chromium. Suspects are marked with the
n / a keys, ELITE runs in the background, the confirmed anomalies are excluded; after a reload the
exclusions are still in the store and the Label tab never shows an excluded item."""
from __future__ import annotations

import numpy as np
import pytest

from dcai_widgets.store import LabelStore

from .harness import Server, launch, open_app, press_and_wait, shown

pytestmark = pytest.mark.timeout(400)
FOCUS = ".dcai-clean-panel .dcai-clean-focus"


def open_clean(page):
    page.locator(".lm-TabBar-tab", has_text="Clean").click()
    page.locator(FOCUS).first.wait_for(timeout=120_000)


def focused(page) -> int:
    return int(page.locator(FOCUS).first.get_attribute("data-item"))


def test_mark_run_exclude_reload(tmp_path):
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (48, 4)), rng.normal(4, 1, (12, 4))]).astype(np.float32)
    y = np.array(["normal"] * 48 + ["anomaly"] * 12)
    data = tmp_path / "pool.npz"
    np.savez(data, X=X, y=y)
    store = tmp_path / "labels.db"
    server = Server(store, tmp_path / "serve.log", data=str(data), annotator="e2e")
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = open_app(browser, server.url + "?annotator=kim")
            open_clean(page)
            marked: dict[int, str] = {}
            for _ in range(30):      # mark suspects until both classes are labeled (at least 6 marks)
                i = focused(page)
                key = "a" if y[i] == "anomaly" else "n"
                page.keyboard.press(key)
                page.wait_for_function("([sel, i]) => +document.querySelector(sel).dataset.item !== i",
                                       arg=[FOCUS, i], timeout=30_000)
                marked[i] = str(y[i])
                if len(marked) >= 6 and len(set(marked.values())) == 2:
                    break
            assert len(set(marked.values())) == 2
            st = LabelStore(store)
            lab = st.current(("human",))
            st.close()
            assert dict(zip(lab["id"].astype(int), lab["label"])) == marked
            assert set(lab["annotator"]) == {"kim"}             # the page's annotator
            page.get_by_role("button", name="run ELITE").click()
            page.locator(".dcai-clean-status[data-state='done']", has_text="ELITE fitted").wait_for(timeout=180_000)
            page.locator(".dcai-pollution").wait_for(timeout=30_000)   # the pollution estimate is shown
            anomalies = sorted(i for i, v in marked.items() if v == "anomaly")
            page.locator(".dcai-clean-panel button", has_text="exclude").first.click()
            page.locator(f".dcai-excluded[data-count='{len(anomalies)}']").wait_for(timeout=30_000)

            page.reload()
            page.locator(".dcai-label-panel .dcai-item-id").first.wait_for(timeout=120_000)
            st = LabelStore(store)
            assert st.excluded() == anomalies                   # persisted
            st.close()
            seen = set()
            for _ in range(len(X)):                             # walk the Label tab through every item it asks
                i, _seq = shown(page)
                if i < 0:
                    break
                seen.add(i)
                press_and_wait(page, " ")
            assert seen and not seen & set(anomalies)
            open_clean(page)
            page.locator(f".dcai-excluded[data-count='{len(anomalies)}']").wait_for(timeout=30_000)
            browser.close()
    finally:
        server.kill()
