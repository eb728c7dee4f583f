"""A disabled button must look disabled in the browser (real headless Chromium), not only be disabled.

ipywidgets' own CSS gives a primary button the brand blue and a disabled one only 60% opacity, so the
grid's "label 0 selected" (disabled until a class is chosen) still looked clickable. The two ipywidgets
rules below are copied from its widgets CSS (as Voila serves it) so the test sees the same cascade.
"""
from __future__ import annotations

import os

import pytest

from dcai_widgets.widgets.style import STYLE_CSS

CHROMIUM = "/usr/bin/chromium"
IPYWIDGETS_RULES = """
.jupyter-button.mod-primary { color: #fff; background-color: #1976d2; }
.jupyter-widgets.jupyter-button:disabled { opacity: 0.6; }
"""


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's /usr/bin/chromium")
def test_disabled_primary_button_is_greyed_out():
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    html = (f"<style>{IPYWIDGETS_RULES}</style><style>{STYLE_CSS}</style>"
            '<button id="on" class="jupyter-widgets jupyter-button mod-primary">label 3 selected</button>'
            '<button id="off" class="jupyter-widgets jupyter-button mod-primary" disabled>label 0 selected</button>')
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_content(html)
            look = page.evaluate("""() => Object.fromEntries(["on", "off"].map(id => {
                const s = getComputedStyle(document.getElementById(id));
                return [id, {bg: s.backgroundColor, opacity: s.opacity, cursor: s.cursor}];
            }))""")
        finally:
            browser.close()
    assert look["on"]["bg"] == "rgb(25, 118, 210)"            # enabled: the primary blue
    assert look["off"]["bg"] == "rgb(228, 228, 228)", look    # disabled: grey, not faded blue
    assert look["off"]["opacity"] == "1" and look["off"]["cursor"] == "not-allowed"
