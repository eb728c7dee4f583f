"""End to end, team mode: three annotators with secret links (`dcai-widgets serve --annotators
ada,bo,cy:lead`), each in their own headless Chromium context, label the digits through one server
with half the items set to overlap (DCAI_TEAM_OVERLAP=0.5). No item is shown to two of them outside
the overlap, every acknowledged label is in the store under the right name, a page without a token is
refused (403), the lead settles a conflict by keyboard in the Review tab, and the Team tab shows
Cohen's kappa for the pair that disagreed."""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dcai_widgets.data import loaders
from dcai_widgets.store import LabelStore
from dcai_widgets.team import unit_hash

from .harness import PANEL_ID, TeamServer, launch, press_and_wait, shown

pytestmark = pytest.mark.timeout(400)
OVERLAP = 0.5
REVIEW_ID = ".dcai-review-panel .dcai-item-id"
SHOTS = os.environ.get("DCAI_E2E_SHOTS")   # a folder to save screenshots of Review and Team into


def people_labels(store_path):
    st = LabelStore(store_path)
    try:
        ev = st.events(("human", "review"))
        return {(int(i), a, lab, src) for i, a, lab, src in zip(ev["id"], ev["annotator"], ev["label"], ev["source"])}
    finally:
        st.close()


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_three_annotators_claims_review_and_kappa(tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DCAI_TEAM_OVERLAP", str(OVERLAP))   # the server passes it to every kernel
    _, y, _ = loaders.load_digits()
    store = tmp_path / "labels.db"
    server = TeamServer(store, tmp_path / "serve.log", annotators="ada,bo,cy:lead")
    try:
        assert set(server.links) == {"ada", "bo", "cy"}
        assert status_of(server.url) == 403                  # no token: refused
        assert status_of(server.url + "?token=not-a-token") == 403
        with sync_playwright() as p:
            browser = launch(p)
            pages = {}
            for name in ("ada", "bo", "cy"):
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})   # one profile per person
                page = ctx.new_page()
                page.goto(server.links[name], timeout=180_000)
                page.locator(PANEL_ID).first.wait_for(timeout=180_000)
                pages[name] = page
            shown_to: dict[int, set] = {}
            acked = set()

            def label_some(name: str, n: int, wrong: bool) -> None:
                page = pages[name]
                for _ in range(n):
                    item, _seq = shown(page)
                    if item < 0:
                        return
                    shown_to.setdefault(item, set()).add(name)
                    key = str((y[item] + 1) % 10 if wrong else y[item])   # bo is always wrong
                    press_and_wait(page, key)
                    acked.add((item, name, key, "human"))

            for _round in range(3):
                label_some("ada", 5, wrong=False)
                label_some("bo", 5, wrong=True)
                label_some("cy", 2, wrong=False)
            for item, names in shown_to.items():
                assert len(names) == 1 or unit_hash(item) < OVERLAP, f"item {item} shown to {names} outside the overlap"
            stored = people_labels(store)
            assert acked <= stored, f"acknowledged but not stored: {acked - stored}"
            both = [i for i, names in shown_to.items() if {"ada", "bo"} <= names]
            assert len(both) >= 2, f"overlap items labeled by both ada and bo: {both}"

            # the lead settles a conflict in the Review tab
            lead = pages["cy"]
            assert lead.get_by_role("tab", name="Review").count() == 1
            assert pages["ada"].get_by_role("tab", name="Review").count() == 0   # only a lead reviews
            lead.get_by_role("tab", name="Review").click()
            lead.wait_for_function(f"() => {{ const e = document.querySelector('{REVIEW_ID}');"
                                   " return e && +e.dataset.item >= 0; }", timeout=60_000)
            item = int(lead.locator(REVIEW_ID).first.get_attribute("data-item"))
            seq = int(lead.locator(REVIEW_ID).first.get_attribute("data-seq"))
            assert item in both or {"ada", "bo", "cy"} & shown_to.get(item, set())
            if SHOTS:
                lead.screenshot(path=str(Path(SHOTS) / "team_review.png"))
            lead.locator(".dcai-review-panel").first.click()  # the review panel takes the keyboard
            lead.keyboard.press(str(y[item]))
            lead.wait_for_function(f"([sel, seq]) => +document.querySelector(sel).dataset.seq > seq",
                                   arg=[REVIEW_ID, seq], timeout=30_000)
            assert (item, "cy", str(y[item]), "review") in people_labels(store)

            # the Team tab shows kappa for ada / bo
            pages["ada"].get_by_role("tab", name="Team").click()
            cell = pages["ada"].locator('.dcai-team-kappa td[data-a="ada"][data-b="bo"]')
            cell.wait_for(timeout=60_000)
            kappa = cell.get_attribute("data-kappa")
            assert kappa not in (None, "–") and -1.0 <= float(kappa) <= 1.0
            assert pages["ada"].locator(".dcai-team-alpha").count() == 1
            fleiss = pages["ada"].locator(".dcai-team-fleiss")        # per group of items with k annotators
            assert fleiss.count() >= 1 and int(fleiss.first.get_attribute("data-raters")) >= 2
            if SHOTS:
                pages["ada"].wait_for_timeout(1500)   # let the bokeh charts draw
                pages["ada"].screenshot(path=str(Path(SHOTS) / "team_tab.png"))
            browser.close()
    finally:
        server.kill()
    assert os.path.exists(store)
