"""Issue 16, closing the loop: items excluded with ``Session.exclude(ids, reason=...)`` (e.g. anomalies
confirmed in the Clean tab) are never asked by any engine, their labels are not trained on, and the
Label panel passes over an excluded item. Each engine on a small blobs session with a real SQLite store."""
from __future__ import annotations

import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.lancet import Lancet
from dcai_widgets.metastore.inspect_model import build_inspect_model
from dcai_widgets.queue import UncertaintyQueue

CLASSES = ["a", "b", "c"]


def blobs(n_per=60, k=3, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 6, (k, d))
    X = np.vstack([c + rng.normal(0, 1.5, (n_per, d)) for c in centers]).astype(np.float32)
    return X, np.repeat(np.arange(k), n_per)


def session(path, labeled):
    X, y = blobs()
    s = dw.Session.from_embeddings(X, CLASSES, y_true=y, store=path)
    s.label(labeled, [CLASSES[int(y[i])] for i in labeled], annotator="ada")
    return s


LABELED = np.array([0, 1, 2, 3, 4, 5, 60, 61, 62, 63, 64, 65, 120, 121, 122, 123, 124, 125])
OUT_LABELED = [3, 63, 123]     # labeled, then excluded: not trained on


def pair(tmp_path):
    """(session with OUT_LABELED excluded, the same session where those labels were never given)."""
    s = session(tmp_path / "x.db", LABELED)
    s.exclude(OUT_LABELED, reason="anomaly")
    ref = session(tmp_path / "ref.db", np.setdiff1d(LABELED, OUT_LABELED))
    return s, ref


def test_uncertainty_queue_skips_excluded_items(tmp_path):
    s, ref = pair(tmp_path)
    first = UncertaintyQueue(s, cold_start=5).fit().candidates(20)
    s.exclude(first, reason="anomaly")
    q = UncertaintyQueue(s, cold_start=5).fit()
    out = set(s.excluded().tolist())
    assert not out & set(q.candidates())                   # never asked
    assert q.n_labeled_ == len(LABELED) - len(OUT_LABELED)
    r = UncertaintyQueue(ref, cold_start=5).fit()          # trained as if the excluded labels were absent
    np.testing.assert_allclose(q.proba_, r.proba_, rtol=1e-5, atol=1e-6)
    s.exclude(first, excluded=False)                       # brought back: asked again
    assert set(first) <= set(UncertaintyQueue(s, cold_start=5).fit().candidates())


@pytest.mark.parametrize("full_scan", [False, True])
def test_seals_skips_excluded_items(tmp_path, full_scan):
    s, ref = pair(tmp_path)
    first = dw.Seals(s, k=10, strategy="entropy", full_scan=full_scan, batch=10).fit().candidates(15)
    s.exclude(first, reason="anomaly")
    seals = dw.Seals(s, k=10, strategy="entropy", full_scan=full_scan, batch=10).fit()
    out = set(s.excluded().tolist())
    assert not out & set(seals.candidates())
    assert not out & set(seals.candidates(60))
    assert not out & set(seals.scores()["id"].tolist())
    assert seals.report()["n_labeled"].iloc[-1] == len(LABELED) - len(OUT_LABELED)
    r = dw.Seals(ref, k=10, strategy="entropy", full_scan=full_scan, batch=10).fit()
    ids = np.arange(len(s))
    np.testing.assert_allclose(seals.proba(ids), r.proba(ids), rtol=1e-5, atol=1e-6)


def test_seals_rare_mode_keeps_excluded_out_of_query_and_background(tmp_path):
    s, _ = pair(tmp_path)
    seals = dw.Seals(s, k=10, strategy="most_likely_positive", target="a", batch=10).fit()
    s.exclude(seals.candidates(), reason="anomaly")
    seals.fit()                                            # the same engine, refit after the exclusion
    out = set(s.excluded().tolist())
    assert not out & set(seals.candidates(40)) and not out & set(seals.scores()["id"].tolist())


def test_lancet_skips_excluded_items(tmp_path):
    s, ref = pair(tmp_path)
    kw = dict(batch=5, steps=60, dmn_steps=30, progress=False, calibration=None)
    first = Lancet(s, **kw).fit().candidates(10)
    s.exclude(first, reason="anomaly")
    lan = Lancet(s, **kw).fit()
    out = set(s.excluded().tolist())
    assert lan.n_labeled_ == len(LABELED) - len(OUT_LABELED)
    assert not out & set(lan.candidates()) and not out & set(lan.candidates(100))
    assert not out & set(lan.weights_.index.tolist())
    assert not out & set(lan.propagated()["id"].tolist())  # no propagated label for an excluded item
    # excluded after the fit: not asked either
    more = lan.candidates(3)
    s.exclude(more)
    assert not set(more) & set(lan.candidates(50))
    r = Lancet(ref, **kw).fit()
    assert r.n_labeled_ == lan.n_labeled_


def test_inspect_model_leaves_session_exclusions_out(tmp_path):
    X, y = blobs()
    s = dw.Session.from_embeddings(X, CLASSES, y_true=y, store=tmp_path / "m.db")
    ids = np.arange(0, len(y), 3)
    s.label(ids, [CLASSES[int(y[i])] for i in ids], annotator="ada")
    out = ids[::4]
    s.exclude(out, reason="anomaly")
    im = build_inspect_model(s, epochs=1, min_steps=5)
    try:
        assert not set(out.tolist()) & set(im.train_ids.tolist())
        assert not set(out.tolist()) & set(im.val_ids.tolist())
    finally:
        im.close()


def test_label_panel_passes_over_an_item_excluded_elsewhere(tmp_path):
    from dcai_widgets.widgets.label_panel import LabelPanel

    s, _ = pair(tmp_path)
    panel = LabelPanel(s, queue=UncertaintyQueue(s, cold_start=5), background=False)
    i = panel.current
    upcoming = panel._upcoming(3)
    s.exclude([i] + upcoming, reason="anomaly")            # the Clean tab excludes the shown and next items
    assert panel.current not in {i, *upcoming}
    assert "excluded" in panel.status.value
    for _ in range(5):
        panel.skip()
        assert panel.current not in {i, *upcoming}


def test_shared_queue_never_claims_excluded_items(tmp_path):
    from dcai_widgets.team import SharedQueue

    s, _ = pair(tmp_path)
    cold = SharedQueue(s, UncertaintyQueue(s, cold_start=5), annotator="ada", heartbeat_s=0)
    s.exclude(np.arange(0, len(s), 2), reason="anomaly")       # every even item
    got = cold.candidates(40)                                  # before any fit: the fixed fallback order
    assert len(got) == 40 and all(i % 2 for i in got)
    q = SharedQueue(s, UncertaintyQueue(s, cold_start=5), annotator="bo", heartbeat_s=0).fit()
    got = q.candidates(30)
    assert len(got) == 30 and all(i % 2 for i in got)
    assert all(i % 2 for i in s.store.claims()["id"])
    cold.close(), q.close()
