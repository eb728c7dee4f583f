"""Elite(mode="semi") (beyond the paper): the expert labels also train, ALICE validates on held-out folds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from dcai_widgets.elite import Elite, alice_step
from dcai_widgets.elite.engine import _stratified_folds

from .test_alice import _tiny
from .test_engine import polluted


def test_folds_are_disjoint_cover_all_labels_and_hold_both_classes():
    labels = np.array([0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1])
    folds = _stratified_folds(labels, 2, seed=0)
    joined = np.concatenate(folds)
    assert sorted(joined.tolist()) == list(range(len(labels)))            # every label in exactly one fold
    for f in folds:
        assert set(labels[f].tolist()) == {0, 1}
    with pytest.raises(ValueError, match="at least 3 expert labels of each class; there are 8 normal and 2 anom"):
        _stratified_folds(np.r_[np.ones(2, int), np.zeros(8, int)], 3, seed=0)


def test_each_fold_validates_only_on_labels_it_does_not_train_on(monkeypatch):
    X, _, labels = polluted(seed=5)
    calls = []
    orig = Elite._train

    def spy(self, X_, train, val_ids, val_labels, fixed_ids, fixed_labels, callback, fold=None):
        calls.append((train.copy(), val_ids.copy(), None if fixed_ids is None else fixed_ids.copy()))
        return orig(self, X_, train, val_ids, val_labels, fixed_ids, fixed_labels, callback, fold)

    monkeypatch.setattr(Elite, "_train", spy)
    ticks = []
    e = Elite.from_arrays(X, labels, epochs=2, min_epochs=2, mode="semi", folds=2, seed=1).fit(
        callback=lambda ep, total, rec: ticks.append((ep, total)))
    lab = np.flatnonzero(labels >= 0)
    assert len(calls) == 2
    for train, val_ids, fixed in calls:
        assert not np.isin(val_ids, fixed).any() and not np.isin(lab, train).any()
        assert sorted(np.r_[val_ids, fixed].tolist()) == lab.tolist()
    assert sorted(np.concatenate([c[1] for c in calls]).tolist()) == lab.tolist()   # each label held out once
    assert ticks == [(1, 4), (2, 4), (3, 4), (4, 4)]                                # one progress over the folds
    assert [r["fold"] for r in e.history_] == [0, 0, 1, 1]


def test_semi_mode_results_and_errors():
    X, y, labels = polluted(seed=1)
    test = labels < 0
    e = Elite.from_arrays(X, labels, epochs=20, mode="semi").fit()
    assert roc_auc_score(y[test], e.scores_[test]) > 0.9
    assert e.scores_.shape == (len(X),) and np.isfinite(e.scores_).all()
    assert (e.pseudo_labels_[labels >= 0] == labels[labels >= 0]).all()
    assert set(np.unique(e.pseudo_labels_[e.train_ids_])) <= {0, 1}
    assert len(e.suspects(5)) == 5 and np.isnan(e.pollution_)
    few = labels.copy()
    few[np.flatnonzero(labels == 1)[1:]] = -1                  # one anomaly label: nothing to cross-fit
    with pytest.raises(ValueError, match="at least 2 expert labels of each class; there are 5 normal and 1"):
        Elite.from_arrays(X, few, mode="semi").fit()
    Elite.from_arrays(X, few, epochs=1).fit()                  # the published mode still runs on it
    with pytest.raises(ValueError, match="mode must be one of"):
        Elite.from_arrays(X, labels, mode="deepsad").fit()
    with pytest.raises(ValueError, match="folds must be an int >= 2"):
        Elite.from_arrays(X, labels, mode="semi", folds=1).fit()
    with pytest.raises(ValueError, match="mode='semi' is ELITE with ALICE"):
        Elite.from_arrays(X, labels, mode="semi", alice=False).fit()


def test_frozen_items_are_never_flipped_and_weigh_eta_m():
    model, xb, xv, yv, C = _tiny("svdd")
    yb = torch.zeros(len(xb), dtype=torch.float64)
    free, _, _ = alice_step(model, xb, yb, xv, yv, C, lr=0.5, strong=False)
    assert (free != yb).any()                                  # unfrozen, some items flip here
    frozen = torch.ones(len(xb), dtype=torch.bool)
    y_new, res, _ = alice_step(model, xb, yb, xv, yv, C, lr=0.5, strong=False, frozen=frozen)
    assert torch.equal(y_new, yb) and len(res.flipped) == 0
    assert torch.allclose(res.weights, torch.full((len(xb),), 1.0, dtype=torch.float64))
