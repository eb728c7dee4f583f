"""The Clean panel: keyboard labels with the annotator, ELITE in the background, exclusion and undo."""
from __future__ import annotations

import html

import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.widgets.clean import CleanPanel


def two_blobs(tmp_path, n_normal=150, anomaly="anomaly"):
    """A session of n_normal normals and 30 shifted anomalies, the truth in ``y_true``."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (n_normal, 5)), rng.normal(3, 1, (30, 5))]).astype(np.float32)
    s = dw.Session.from_embeddings(X, ["normal", anomaly], store=tmp_path / "c.db")
    s.y_true = np.r_[np.zeros(n_normal, int), np.ones(30, int)]
    return s


@pytest.fixture
def session(tmp_path):
    return two_blobs(tmp_path)


def test_keyboard_labels_run_elite_exclude_and_undo(session):
    p = CleanPanel(session, annotator="ada", background=False, epochs=4)
    assert p.elite is not None and not p.elite.alice          # the first ranking needs no label
    assert len(p.grid.ids) == p.k
    marked = {}
    for _ in range(8):                                         # oracle presses n / a on the focused suspect
        i = p.current
        key = "a" if session.y_true[i] == 1 else "n"
        p.keyboard.press(key)
        marked[i] = "anomaly" if key == "a" else "normal"
    lab = session.labeled()
    assert dict(zip(lab["id"], lab["label"])) == marked
    assert set(lab["annotator"]) == {"ada"}
    if "normal" not in marked.values():                        # ELITE needs both classes
        session.label([0], ["normal"], annotator="ada")
    if "anomaly" not in marked.values():
        session.label([179], ["anomaly"], annotator="ada")
    p.run()
    assert p.elite.alice and p.progress.value == p.progress.max
    assert 'data-state="done"' in p.status.value
    assert "not estimated" in p.pollution.value   # labels chosen by score: no pollution figure
    assert len(p.hist.bins.data["top"]) == 40 and sum(p.hist.bins.data["top"]) == len(p.elite.train_ids_)
    assert len(p.hist.marks.data["x"]) == len(session.labeled())
    confirmed = p.confirmed_anomalies()
    assert confirmed and p.exclude_button.description.startswith(f"exclude {len(confirmed)}")
    assert p.exclude_confirmed() == confirmed
    assert session.excluded().tolist() == confirmed
    assert f'data-count="{len(confirmed)}"' in p.excluded_note.value
    assert p.current not in confirmed
    p.run()                                                    # refits with the excluded anomalies as validation
    assert not np.isin(confirmed, p.elite.train_ids_).any()
    assert p.undo_exclude() == confirmed and session.excluded().tolist() == []


def test_errors_show_in_the_panel_and_names_are_escaped(tmp_path):
    rng = np.random.default_rng(1)
    s = dw.Session.from_embeddings(rng.normal(size=(60, 4)).astype(np.float32), ["<b>ok</b>", "<i>bad</i>"],
                                   store=tmp_path / "e.db")
    p = CleanPanel(s, normal="<b>ok</b>", anomaly="<i>bad</i>", background=False, epochs=2)
    assert "<b>ok</b>" not in p.status.value and html.escape("'<b>ok</b>'") in p.status.value
    p.run()                                                    # no labels yet: a clear message, no traceback
    assert 'data-state="error"' in p.status.value and "validation set" in p.status.value
    assert "Traceback" not in p.status.value
    with pytest.raises(ValueError, match="needs a 'normal' and an 'anomaly' class"):
        CleanPanel(s, background=False)


def test_background_fit_keeps_the_kernel_free(session):
    p = CleanPanel(session, background=True, epochs=3)
    assert p.wait(120)
    assert p.elite is not None and p.run_button.disabled is False


def test_label_panel_never_asks_excluded_items(session):
    from dcai_widgets.widgets.label_panel import LabelPanel

    session.exclude(list(range(0, 180, 2)), annotator="ada", reason="anomaly")   # unlabeled items
    order = list(range(180))

    class Fixed:   # a queue that would ask every item in order
        def fit(self):
            return self

        def candidates(self, n=None):
            return order

    lp = LabelPanel(session, queue=Fixed(), annotator="ada", background=False)
    seen = []
    while lp.current is not None and len(seen) < 200:
        seen.append(lp.current)
        lp.skip()
        if lp.current in seen:
            break
    assert seen and all(i % 2 == 1 for i in seen)


def test_suspect_cards_name_their_score_and_the_legend_explains_it(session):
    """The regenerated Clean screenshot showed a bare "8.75" on every suspect card."""
    p = CleanPanel(session, annotator="ada", background=False, epochs=2)
    card = p.grid._cells[0][1]
    assert 'class="dcai-score"' in card.badges.value and ">score " in card.badges.value
    # before any label the ranking is HBOS's, and the legend says so; after ELITE runs, ELITE's
    assert "HBOS outlier score" in p.grid.legend.value and "ELITE&#x27;s" not in p.grid.legend.value
    assert p.elite.backbone == "hbos" and not p.elite.alice
    assert "first ranking (HBOS, no labels)" in p.status.value
    ids = p.order[:6]
    for i in ids[:3]:
        session.label(i, "anomaly", annotator="ada")
    for i in ids[3:]:
        session.label(i, "normal", annotator="ada")
    p.run()
    assert p.elite.alice and p.elite.backbone == "svdd"
    assert "ELITE&#x27;s anomaly score" in p.grid.legend.value
