"""End to end: the Train tab of the served app in headless Chromium trains on the demo's labels with a
live learning curve (the progress bar and the curve's epochs advance while it runs), the model is stored
in the session, the Inspect tab lists it and inspects it (its holdout items with calibrated confidences,
proponents, suspects), and Stop ends a long run early, keeping the model."""
from __future__ import annotations

import numpy as np
import pytest

import dcai_widgets as dw

from .harness import Server, launch, open_app

pytestmark = pytest.mark.timeout(400)
STATUS = ".dcai-train-panel .dcai-train-status"


def test_train_live_curve_and_stop(tmp_path):
    from playwright.sync_api import sync_playwright

    store = tmp_path / "labels.db"
    s = dw.Session.demo(store=store)
    s.label(np.arange(200), np.asarray(s.classes)[s.y_true[:200]], annotator="e2e")
    s.store.close()
    server = Server(store, tmp_path / "serve.log")
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = open_app(browser, server.url)
            page.locator(".lm-TabBar-tab", has_text="Train").click()
            panel = page.locator(".dcai-train-panel")
            panel.wait_for(timeout=120_000)
            panel.get_by_role("button", name="Train").click()
            page.locator(f"{STATUS}[data-state='done']").wait_for(timeout=180_000)
            text = page.locator(STATUS).inner_text()
            assert "on 200 labels" in text and "stored as session.models['trainer']" in text
            assert panel.locator(".dcai-train-curve canvas").count() >= 1       # the bokeh curve is drawn

            # the Inspect tab offers the stored model and inspects it instead of training its own
            page.locator(".lm-TabBar-tab", has_text="Inspect").click()
            inspect = page.locator(".dcai-inspect")
            inspect.wait_for(timeout=120_000)
            pick = inspect.locator("select").first
            page.wait_for_function(
                "() => [...document.querySelectorAll('.dcai-inspect select option')]"
                ".some(o => o.textContent.includes(\"session.models['trainer']\"))", timeout=60_000)
            pick.select_option(label="Train tab: session.models['trainer']")
            ready = inspect.locator(".dcai-inspect-ready[data-model='trainer']")
            ready.wait_for(timeout=240_000)
            assert "session.models['trainer']: 160 training items, 40 validation items" in ready.inner_text()
            assert "calibrated on out-of-fold predictions of 160 labeled training items" in ready.inner_text()
            options = [o.strip() for o in inspect.locator("select[size] option").all_inner_texts()]
            assert len(options) == 40 and all(o.endswith("%)") for o in options), options[:3]
            assert "model says" in inspect.locator(".dcai-inspect-query").inner_text()
            page.locator(".lm-TabBar-tab", has_text="Train").click()

            # a long run without early stopping: the progress bar advances live, then Stop ends it
            panel.get_by_role("checkbox", name="stop early (holdout loss)").uncheck()
            box = panel.locator("input[type='number']").first
            box.fill("5000")
            box.press("Enter")
            panel.get_by_role("button", name="Train").click()
            page.locator(f"{STATUS}[data-state='running']").wait_for(timeout=30_000)
            page.wait_for_function(
                "() => { const b = document.querySelector('.dcai-train-panel .progress-bar');"
                " return b && parseFloat(b.style.width) > 0; }", timeout=120_000)
            panel.get_by_role("button", name="Stop").click()
            page.locator(f"{STATUS}[data-state='done']", has_text="stopped after").wait_for(timeout=120_000)
            browser.close()
    finally:
        server.kill()
