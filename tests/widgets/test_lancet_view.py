"""LancetView driven from Python: counts, stop gauge, curve, spot checks with confirm/reject."""
import re
import warnings

import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.lancet import Lancet, spot

pytest.importorskip("jupyter_bokeh")
from dcai_widgets.widgets.lancet_view import LancetView


def _blobs(tmp_path, n_per=30, k=3):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 10, (k, 4))
    X = np.vstack([c + rng.normal(0, 1, (n_per, 4)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(k), n_per)
    return dw.Session.from_embeddings(X, [f"c{i}" for i in range(k)], y_true=y, store=tmp_path / "l.db")


def test_wilson_and_estimate():
    lo, hi = spot.wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert spot.wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        spot.wilson(3, 2)
    import pandas as pd

    prop = pd.DataFrame({"id": range(10), "label": ["a"] * 10, "confidence": [0.95] * 8 + [0.5] * 2})
    checks = pd.DataFrame({"id": [0, 1, 8], "label": ["a"] * 3, "confidence": [0.95, 0.95, 0.5],
                           "correct": [True, True, False]})
    est = spot.estimate(prop, checks)
    # high bin: 80% of items, 2/2 correct; low bin: 20%, 0/1; middle bin has no items
    assert est["accuracy"] == pytest.approx(0.8 * 1.0 + 0.2 * 0.0)
    assert est["low"] < est["accuracy"] < est["high"] and est["checked"] == 3


def test_view_spot_checks_write_review_labels(tmp_path):
    s = _blobs(tmp_path)
    lan = Lancet(s, batch=3, steps=100, dmn_steps=60, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lan.fit()
        view = LancetView(s, lan, per_bin=2)
        assert "0 of 90" in view.summary.value  # cold start: nothing propagated yet
        assert view.draw() == []
        c = lan.candidates()
        s.label(c, s.y_true[c])
        lan.fit()  # emits "model": the view refreshes itself
    assert f"{90 - 3} of 90" in view.summary.value
    assert view.fit_bar.value == 1.0  # the retrain reported its progress to the view
    assert "DMN loss" in view.gauge_text.value and 0 < view.loss_bar.value <= 1
    assert len(view.curve_source.data["x"]) == 1
    ids = view.draw()
    assert 1 <= len(ids) <= 2 * (len(spot.BINS) - 1) and view.current["id"] == ids[0]
    first = view.current
    view.confirm_button.click()
    rev = s.labeled(sources=("review",))
    assert list(rev["id"]) == [first["id"]] and rev["label"].iloc[0] == first["label"]
    if len(ids) > 1:
        second = view.current
        view.reject_button.click()
        assert view.right_class.layout.display == ""
        wrong = next(c for c in s.classes if c != second["label"])
        view.right_class.value = wrong
        view.save_button.click()
        rev = s.labeled(sources=("review",)).set_index("id")
        assert rev.loc[second["id"], "label"] == wrong
        assert list(view.checks["correct"]) == [True, False]
    assert "estimated accuracy" in view.estimate_html.value
    assert np.isfinite(view.curve_source.data["acc"][-1])


def test_view_rejects_non_lancet(tmp_path):
    s = _blobs(tmp_path)
    with pytest.raises(TypeError, match="Lancet"):
        LancetView(s, object())
    with pytest.raises(ValueError, match="per_bin"):
        LancetView(s, Lancet(s, progress=False), per_bin=0)


def _fitted_with_checks(tmp_path):
    s = _blobs(tmp_path, n_per=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lan = Lancet(s, batch=6, steps=80, dmn_steps=40, progress=False)
        lan.fit()
        c = lan.candidates()
        s.label(c, s.y_true[c], annotator="ada")
        lan.fit()
        view = LancetView(s, lan, per_bin=2, annotator="ada", background=False)
    return s, lan, view


def test_spot_checks_carry_the_annotator_and_survive_a_reload(tmp_path):
    s, lan, view = _fitted_with_checks(tmp_path)
    view.draw()
    first = view.current
    view.confirm()
    ev = s.store.events(("review",))
    assert list(ev["annotator"]) == ["ada"] and ev["model_version"].iloc[0].startswith(spot.MARKER)
    n_prop = len(s.propagated()) - 1   # the confirmed item has a person's (review) label now
    # a reload: a new kernel opens the same store; nothing is fitted yet
    s2 = dw.Session.from_embeddings(s.embeddings, s.classes, y_true=s.y_true, store=s.store.path)
    lan2 = Lancet(s2, progress=False)
    view2 = LancetView(s2, lan2, annotator="ada", background=False)
    assert f'data-propagated="{n_prop}"' in view2.summary.value and "no propagated labels" not in view2.bins_html.value
    assert list(view2.checks["id"]) == [first["id"]] and view2.checks["correct"].tolist() == [True]
    assert 'data-checks="1"' in view2.estimate_html.value
    assert len(view2.curve_source.data["x"]) >= 1 and view2.curve_source.data["x"][-1] == 6


def test_undoing_a_spot_check_removes_it_from_the_estimate(tmp_path):
    s, lan, view = _fitted_with_checks(tmp_path)
    view.draw()
    view.confirm()
    assert len(view.checks) == 1
    s.undo("ada")                                 # Backspace in the Label panel: the annotator's latest batch
    assert len(view.checks) == 0 and "no spot checks yet" in view.estimate_html.value


def test_a_spot_check_the_store_refuses_stays_on_screen(tmp_path, monkeypatch):
    s, lan, view = _fitted_with_checks(tmp_path)
    view.draw()
    first = view.current

    def refuse(*a, **k):
        raise PermissionError("label store is read-only")

    monkeypatch.setattr(s.store, "append", refuse)
    view.confirm()
    assert view.current == first and "read-only" in view.check_text.value and len(view.checks) == 0


def test_a_reloaded_view_counts_only_items_no_person_has_labeled(tmp_path):
    """After a reload the summary is read from the store, whose latest propagated row of an item labeled
    since is an older round's: such items are not counted as propagated (the summary's own definition)."""
    s, lan, view = _fitted_with_checks(tmp_path)
    unlabeled = int((np.asarray(s.label_vector()) < 0).sum())
    prop = lan.propagated()
    s.label(prop["id"].iloc[:3].tolist(), prop["label"].iloc[:3].tolist(), annotator="ada")  # no refit
    s2 = dw.Session.from_embeddings(s.embeddings, s.classes, y_true=s.y_true, store=s.store.path)
    view2 = LancetView(s2, Lancet(s2, progress=False), annotator="ada", background=False)
    assert f'data-propagated="{unlabeled - 3}"' in view2.summary.value, view2.summary.value


def test_the_learning_curve_shows_a_single_model_version_and_its_legend_sits_outside(tmp_path):
    """With one fitted version the curve was an empty box (a line needs two points), and the legend inside
    the plot covered its right end; the text legend was laid out one tag per line (the map's flex class)."""
    s, lan, view = _fitted_with_checks(tmp_path)
    assert len(view.curve_source.data["x"]) == 1
    drawn = [r for r in view.figure.renderers
             if getattr(r.glyph, "y", None) == "conf" and type(r.glyph).__name__ == "Scatter"]
    assert drawn, "one version must still be drawn (a marker, not only a line)"
    assert view.figure.legend[0] in view.figure.above
    assert "dcai-legend" not in view.legend.value.replace("dcai-lancet-legend", "")


def test_the_stop_gauge_claims_only_what_was_measured():
    """The served app said "STOP: labels cover the data" at 60 random labels on digits: the DMN's two-sample
    test alone, which a random sample passes at any size. Now: the verdict needs stable predictions too,
    and even then points to the spot checks instead of claiming coverage."""
    import re

    from dcai_widgets.lancet.stop import PredictionStability, stop_report
    from dcai_widgets.widgets.lancet_view import stop_html

    st = PredictionStability(gap=10)
    st.update(60, np.arange(30) % 3)
    early = stop_html(stop_report(0.70, 0.5, alpha_t=0.1, stability=st))
    text = re.sub("<[^>]+>", " ", early)
    assert 'data-stop="0"' in early and "keep labeling" in text and "still change" in text
    assert "cover" not in text and "1 of 3 rounds" not in text and "0 of 3 rounds measured" in text
    for n in (70, 80, 90):
        st.update(n, np.arange(30) % 3)
    done = stop_html(stop_report(0.70, 0.5, alpha_t=0.1, stability=st))
    text = re.sub("<[^>]+>", " ", done)
    assert 'data-stop="1"' in done and "stop rule is met" in text and "spot checks" in text
    assert "cover" not in text and "1.000 vs 0.99" in text


def test_a_page_that_adopts_the_teams_fit_shows_that_fit_not_its_own_older_one(tmp_path):
    """Team mode: one page fits LANCET for everyone, the others adopt its fit (dcai_widgets.team). An adopting
    page's view went on showing its own older engine (its counts, its stop gauge)."""
    from dcai_widgets.lancet.stop import stop_report
    from dcai_widgets.team.team_fit import engine_payload

    s, lan, view = _fitted_with_checks(tmp_path)            # this page's own fit, on 6 labels
    other = dw.Session.from_embeddings(s.embeddings, s.classes, y_true=s.y_true, store=s.store.path)
    lan2 = Lancet(other, batch=6, steps=80, dmn_steps=40, progress=False)
    ids = [int(i) for i in np.flatnonzero(np.asarray(other.label_vector()) < 0)[:12]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other.label(ids, other.y_true[ids], annotator="bo")   # the other page: 18 labels, then its fit
        lan2.fit()
    lan2.report_ = stop_report(0.70, 0.5, alpha_t=0.1)        # a verdict this page's engine never had
    state = engine_payload(lan2, lan2.candidates(), lan2.n_labeled_, lan2.classes_seen_)
    state["by"] = "bo#0123456789ab"
    s.emit("team_fit", state=state)                          # what SharedQueue.fit does when it adopts
    unlabeled = int((np.asarray(other.label_vector()) < 0).sum())
    assert f'data-propagated="{unlabeled}"' in view.summary.value, view.summary.value
    assert "fit on 18 labels from people" in view.summary.value and "bo's page" in view.summary.value
    assert 'data-stop="1"' in view.gauge_text.value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lan.fit()                                            # this page fits again: its own fit is newest
    assert "team's fit" not in view.summary.value and "fit on 18 labels from people" in view.summary.value
    assert "human, review or import label" in view.summary.value   # what the count holds (imports too)


def test_shared_queue_tells_its_page_when_it_adopts_the_teams_fit(tmp_path):
    from dcai_widgets.queue import UncertaintyQueue
    from dcai_widgets.team import SharedQueue

    s1 = _blobs(tmp_path)
    s2 = dw.Session.from_embeddings(s1.embeddings, s1.classes, y_true=s1.y_true, store=s1.store.path)
    s1.label(list(range(0, 90, 9)), [s1.classes[int(c)] for c in s1.y_true[0:90:9]], annotator="ada")
    got = []
    s2.on("team_fit", lambda state: got.append(state))
    a = SharedQueue(s1, UncertaintyQueue(s1, cold_start=5), annotator="ada", heartbeat_s=0, fit_share=1.0)
    b = SharedQueue(s2, UncertaintyQueue(s2, cold_start=5), annotator="bo", heartbeat_s=0, fit_share=1.0)
    a.fit()
    b.fit()
    assert b.team_.adopted_ == 1 and len(got) == 1
    assert got[0]["n_labeled"] == 10 and got[0]["by"].startswith("ada#") and "stop" in got[0]
    b.fit()
    assert len(got) == 1          # nothing new adopted: no event


def test_no_accuracy_figure_while_a_confidence_bin_with_labels_has_no_check(tmp_path):
    """Two right checks in one bin printed "estimated accuracy 54.2%": the unchecked bins counted at 0.5."""
    import pandas as pd

    s, lan, view = _fitted_with_checks(tmp_path)
    ids = s.propagated()["id"].to_numpy()[:40]
    human = np.asarray(s.label_vector()) >= 0
    ids = [int(i) for i in ids if not human[i]][:30]
    s.set_propagated(ids[:20], ["c0"] * 20, [0.95] * 20, model_version="lancet-60-9")
    s.set_propagated(ids[20:], ["c0"] * 10, [0.5] * 10, model_version="lancet-60-9")
    view._team = {"n_labeled": 60}            # show the store's propagated labels (as an adopting page)
    view.checks = pd.DataFrame({"id": ids[:2], "label": ["c0", "c0"], "confidence": [0.95, 0.95],
                                "correct": [True, True]})
    view.refresh()
    html_ = view.estimate_html.value
    assert "not estimated yet" in html_ and 'data-accuracy=""' in html_ and "95% interval" in html_
    assert np.isnan(view.curve_source.data["acc"][-1])
    view.checks = pd.concat([view.checks, pd.DataFrame({"id": [ids[25]], "label": ["c0"], "confidence": [0.5],
                                                        "correct": [False]})], ignore_index=True)
    view.refresh()
    assert "estimated accuracy of propagated labels" in view.estimate_html.value
    assert np.isfinite(view.curve_source.data["acc"][-1])


def test_estimate_says_whether_every_bin_with_labels_was_checked():
    import pandas as pd

    prop = pd.DataFrame({"id": range(10), "label": ["a"] * 10, "confidence": [0.95] * 8 + [0.5] * 2})
    one_bin = pd.DataFrame({"id": [0, 1], "label": ["a"] * 2, "confidence": [0.95] * 2, "correct": [True] * 2})
    assert not spot.estimate(prop, one_bin)["complete"]
    both = pd.concat([one_bin, pd.DataFrame({"id": [8], "label": ["a"], "confidence": [0.5], "correct": [True]})])
    assert spot.estimate(prop, both)["complete"]


def test_the_propagated_count_follows_labels_made_after_the_fit_like_the_map(tmp_path):
    """Label tab, one page: LANCET's summary said 1,735 propagated while the map's faint count said 1,733
    (two spot checks had been made since the fit)."""
    s, lan, view = _fitted_with_checks(tmp_path)
    before = int(view.summary.value.split('data-propagated="')[1].split('"')[0])
    prop = lan.propagated()
    s.label(prop["id"].iloc[:2].tolist(), prop["label"].iloc[:2].tolist(), annotator="ada")   # no refit
    assert f'data-propagated="{before - 2}"' in view.summary.value
    import re

    counts = [int(c) for c in re.findall(r"</td><td>(\d+)</td><td><div", view.bins_html.value)]
    assert sum(counts) == before - 2          # the bins table counts the same items as the summary
    s.undo("ada")
    assert f'data-propagated="{before}"' in view.summary.value


def _fitted_on(tmp_path, calibration, n_labels=60):
    """A LANCET fit on ``n_labels`` true labels of 120 blobs, with or without calibration."""
    s = _blobs(tmp_path, n_per=40)
    rng = np.random.default_rng(1)
    ids = rng.choice(len(s), n_labels, replace=False).tolist()
    s.label(ids, s.y_true[ids], annotator="ada")
    kw = {} if calibration else {"calibration": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lan = Lancet(s, batch=6, steps=80, dmn_steps=40, progress=False, **kw).fit()
    return s, lan


def test_an_uncalibrated_models_probability_is_never_shown_as_a_confidence(tmp_path):
    """``Lancet(calibration=None)`` stores its raw head probability as the propagated label's confidence;
    the cards, the LANCET view and its spot checks printed it like a calibrated one ("~c1 0.97"). Now the
    model version says so and no figure is printed: "uncalibrated", with a tooltip saying why — also on a
    reloaded page that has only the store."""
    from dcai_widgets.widgets.item_grid import ItemGrid

    s, lan = _fitted_on(tmp_path, calibration=False)
    prop = s.propagated()
    assert len(prop) and prop["model_version"].str.endswith("-uncalibrated").all()
    grid = ItemGrid(s, prop["id"].tolist()[:6])
    badges = " ".join(c.badges.value for _b, c, _t in grid._cells)
    assert "uncalibrated" in badges and "without calibration" in badges
    assert not re.search(r"~c\d [01]\.\d\d", badges), badges
    view = LancetView(s, lan, per_bin=2, annotator="ada", background=False)
    assert 'data-calibrated="0"' in view.bins_html.value and "calibrated confidence" not in view.bins_html.value
    assert all(np.isnan(view.curve_source.data["conf"]))
    view.draw()
    assert "uncalibrated model" in view.check_text.value and "calibrated confidence" not in view.check_text.value
    s2 = dw.Session.from_embeddings(s.embeddings, s.classes, y_true=s.y_true, store=s.store.path)
    view2 = LancetView(s2, Lancet(s2, progress=False), annotator="ada", background=False)
    assert 'data-calibrated="0"' in view2.bins_html.value


def test_a_calibrated_models_confidence_is_still_shown(tmp_path):
    from dcai_widgets.widgets.item_grid import ItemGrid

    s, lan = _fitted_on(tmp_path, calibration=True)
    prop = s.propagated()
    assert len(prop) and not prop["model_version"].str.endswith("-uncalibrated").any()
    grid = ItemGrid(s, prop["id"].tolist()[:6])
    badges = " ".join(c.badges.value for _b, c, _t in grid._cells)
    assert re.search(r"~c\d (>0\.99|[01]\.\d\d)", badges) and "uncalibrated" not in badges
    view = LancetView(s, lan, per_bin=2, annotator="ada", background=False)
    assert 'data-calibrated="1"' in view.bins_html.value and np.isfinite(view.curve_source.data["conf"]).all()


def test_a_team_annotators_spot_check_is_their_own_label_and_is_restored_after_a_reload(tmp_path):
    """A "review" label overrides every colleague's label, so only a lead's (or the single user's) spot
    check is one; a team annotator's is their own "human" label, still marked as a spot check so the
    estimate and the curve come back after a reload."""
    s, lan = _fitted_on(tmp_path, calibration=True)
    view = LancetView(s, lan, per_bin=2, annotator="ada", background=False, label_source="human")
    view.draw()
    first = view.current
    view.confirm()
    row = s.store.events(("human", "review")).iloc[-1]
    assert (int(row["id"]), row["source"], row["annotator"]) == (int(first["id"]), "human", "ada")
    assert row["model_version"] == spot.MARKER + str(first["label"])
    lead = LancetView(s, lan, per_bin=2, annotator="lee", background=False)   # default: a review
    lead.draw()
    lead.confirm()
    assert s.store.events(("review",))["annotator"].tolist() == ["lee"]
    s2 = dw.Session.from_embeddings(s.embeddings, s.classes, y_true=s.y_true, store=s.store.path)
    view2 = LancetView(s2, Lancet(s2, progress=False), annotator="ada", background=False, label_source="human")
    assert len(view2.checks) == 2 and int(first["id"]) in set(view2.checks["id"])
    assert 'data-checks="2"' in view2.estimate_html.value
    with pytest.raises(ValueError, match="label_source"):
        LancetView(s, lan, label_source="lead")


def test_the_app_gives_a_team_annotators_lancet_view_human_labels_and_a_leads_review_labels(tmp_path):
    import ipywidgets as W

    from dcai_widgets.queue import UncertaintyQueue
    from dcai_widgets.widgets import App

    s = _blobs(tmp_path)
    made = {}

    class Recorder(W.HTML):
        def __init__(self, session, engine, annotator=None, label_source="review"):
            super().__init__()
            made[annotator] = label_source

    for who, role, team in (("ada", "annotator", True), ("lee", "lead", True), ("solo", None, False)):
        app = App(s, annotator=who, queue=UncertaintyQueue(s, cold_start=5), role=role, team=team)
        app._lancet_slot = W.VBox()      # as with LANCET as the queue (its view beside the Label panel)
        app._build_lancet_view((Recorder, app.label_panel.queue))
    assert made == {"ada": "human", "lee": "review", "solo": "review"}


def test_the_legends_use_one_of_the_projects_own_classes_as_their_example(tmp_path):
    """The walk's shapes project (circle, square, triangle) read "~6 0.83 on an item = propagated label 6"
    beside the LANCET view, and "~3 0.87" under the grids: classes it does not have."""
    from dcai_widgets.widgets.item_grid import ItemGrid

    s = _blobs(tmp_path)
    view = LancetView(s, Lancet(s, progress=False), background=False)
    assert "~c0 0.83" in view.legend.value and "~6" not in view.legend.value
    grid = ItemGrid(s, [0, 1])
    assert "~c0 0.87" in grid.legend.value and "~3" not in grid.legend.value


def test_with_every_item_labeled_the_view_does_not_ask_for_a_first_batch(tmp_path):
    """The walk's CSV with its labels imported: "no propagated labels yet: label a first batch" beside
    "60 of 60 labeled"."""
    s = _blobs(tmp_path, n_per=4)
    view = LancetView(s, Lancet(s, progress=False), background=False)
    assert "label a first batch" in view.bins_html.value
    s.import_labels()
    view.refresh()
    assert "nothing to propagate" in view.bins_html.value and "first batch" not in view.bins_html.value


def test_an_imprecise_fit_says_uncertain_in_the_view_and_after_a_reload(overlapping):
    """A fit on 60 labels of overlapping classes (calibration too loose: ``-imprecise``): the bins, the spot
    check and the cards say "uncertain" with the reason, also on a page that has only the store."""
    from dcai_widgets.widgets.item_grid import ItemGrid

    s = overlapping
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lan = Lancet(s, batch=6, steps=80, dmn_steps=40, progress=False).fit()
    assert lan.model_version_.endswith("-imprecise")
    view = LancetView(s, lan, per_bin=2, annotator="ada", background=False)
    assert "uncertain: the confidence cannot be trusted yet" in view.bins_html.value
    view.draw()
    assert "calibrated confidence uncertain" in view.check_text.value
    grid = ItemGrid(s, s.propagated()["id"].tolist()[:4])
    badges = " ".join(c.badges.value for _b, c, _t in grid._cells)
    assert "uncertain" in badges and "±10 points" in badges and not re.search(r"~[abcd] [01]\.\d\d", badges)
    s2 = dw.Session.from_embeddings(s.embeddings, s.classes, y_true=s.y_true, store=s.store.path)
    view2 = LancetView(s2, Lancet(s2, progress=False), annotator="ada", background=False)
    assert "uncertain: the confidence cannot be trusted yet" in view2.bins_html.value
