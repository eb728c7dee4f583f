"""Candidate selection inside the low-DMN-weight pool: representative (dense) items, not outliers."""
import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.lancet import Lancet


def _session(tmp_path, X, y):
    return dw.Session.from_embeddings(X.astype(np.float32), ["a", "b"], y_true=y, store=tmp_path / "l.db")


def test_density_is_low_for_outliers(tmp_path):
    rng = np.random.default_rng(0)
    blob = rng.normal(0, 1, (200, 6))
    outliers = rng.normal(0, 1, (5, 6)) * 6 + 12  # scattered, far from the blob and each other
    X = np.vstack([blob, outliers])
    lan = Lancet(_session(tmp_path, X, np.r_[np.zeros(200, int), np.ones(5, int)]), progress=False)
    d = lan.density()
    assert d.shape == (205,) and np.isfinite(d).all() and (d > 0).all()
    assert d[200:].max() < np.median(d[:200])  # every outlier is sparser than a typical blob item
    assert lan.density() is d  # computed once


def test_density_pick_takes_the_densest_item_of_each_pool_cluster(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (40, 4))
    s = _session(tmp_path, X, np.r_[np.zeros(20, int), np.ones(20, int)])
    # the pool (lowest ranks) = items 0..9 in one cluster of z; item 7 is the densest, item 0 is at the centroid
    z = np.zeros((40, 2), np.float32)
    z[:10] = [[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1], [2, 2], [-2, -2], [1, 1], [-1, -1], [2, -2]]
    z[10:] = 50 + rng.normal(0, 1, (30, 2))
    unl = np.arange(40)
    rank = np.arange(40, dtype=float)
    density = np.ones(40)
    density[7] = 10.0
    picks = {}
    for pick in ("centroid", "density"):
        lan = Lancet(s, batch=1, pool_factor=1, pool_frac=0.25, pool_pick=pick, progress=False)
        lan.n_labeled_ = 0
        lan._density = density
        picks[pick] = lan._select(z, unl, rank).tolist()
    assert picks["density"] == [7]
    assert picks["centroid"] == [0]


def test_pool_pick_is_checked(tmp_path):
    s = _session(tmp_path, np.random.default_rng(0).normal(0, 1, (20, 3)), np.r_[np.zeros(10, int), np.ones(10, int)])
    with pytest.raises(ValueError, match="pool_pick"):
        Lancet(s, pool_pick="outliers")


def test_stop_rule_never_fires_while_a_class_has_no_label(tmp_path, monkeypatch):
    import dcai_widgets.lancet.engine as engine
    from dcai_widgets.lancet.stop import stop_report

    # a DMN at chance with no small weight: the rule as the paper states it would fire
    # (the paper's DMN part only: the predictions' stability, stop.py's second part, is not what this checks)
    monkeypatch.setattr(engine, "stop_report", lambda loss, w, a, stability=None: stop_report(0.7, 0.5, a))
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(c, 0.5, (15, 3)) for c in (0, 5, 10)]).astype(np.float32)
    s = dw.Session.from_embeddings(X, ["a", "b", "c"], y_true=np.repeat([0, 1, 2], 15), store=tmp_path / "l.db")
    s.label([0, 1, 15, 16], [0, 0, 1, 1])  # class c has no label
    lan = Lancet(s, batch=2, steps=40, dmn_steps=20, progress=False)
    with pytest.warns(UserWarning, match="no labels yet"):
        r = lan.fit().should_stop()
    assert not r.stop and "1 of 3 classes have no human label" in r.reason
    s.label([30], [2])
    assert lan.fit().should_stop().stop
