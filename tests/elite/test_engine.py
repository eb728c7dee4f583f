"""Elite over arrays and Sessions: the margin C, results, query rules, conv backbone and clear errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import dcai_widgets as dw
from dcai_widgets.elite import Elite
from dcai_widgets.elite.classical import hbos
from dcai_widgets.elite.inputs import arrays_inputs
from dcai_widgets.elite.models import build


def polluted(n=300, d=6, rp=0.15, seed=0, k=5):
    """Normals from one Gaussian, anomalies from a shifted, wider one; k + k labels chosen by class."""
    rng = np.random.default_rng(seed)
    na = int(n * rp)
    X = np.vstack([rng.normal(0, 1, (n - na, d)), rng.normal(2.5, 1.5, (na, d))]).astype(np.float32)
    y = np.r_[np.zeros(n - na, int), np.ones(na, int)]
    labels = np.full(n, -1)
    labels[rng.choice(np.flatnonzero(y == 1), k, replace=False)] = 1
    labels[rng.choice(np.flatnonzero(y == 0), k, replace=False)] = 0
    return X, y, labels


def test_margin_is_the_untrained_models_mean_training_loss():
    X, _, labels = polluted()
    e = Elite.from_arrays(X, labels, epochs=1, hidden=(16, 8), seed=3).fit()
    inp = arrays_inputs(X, labels, None, "normal", "anomaly", images=False, need_labels=True)
    model = build("svdd", (X.shape[1],), (16, 8), 3)
    xt = torch.from_numpy(inp.X[inp.train_ids])
    model.setup(xt)
    with torch.no_grad():
        expected = float(model(xt).mean())   # every pool item pseudo-normal: its loss is its score
    assert e.C_ == pytest.approx(expected, rel=1e-6)
    assert not np.isin(inp.val_ids, inp.train_ids).any()   # the labels validate, they are not trained on


def test_elite_beats_its_unsupervised_model_and_reports_results():
    X, y, labels = polluted(seed=1)
    test = labels < 0
    unsup = Elite.from_arrays(X, labels, alice=False, epochs=20).fit()
    e = Elite.from_arrays(X, labels, epochs=20).fit()
    auc_e = roc_auc_score(y[test], e.scores_[test])
    auc_u = roc_auc_score(y[test], unsup.scores_[test])
    assert auc_e > 0.9 and auc_e > auc_u
    assert e.scores_.shape == (len(X),) and np.isfinite(e.scores_).all()
    assert set(np.unique(e.pseudo_labels_)) <= {0, 1}
    assert (e.pseudo_labels_[labels >= 0] == labels[labels >= 0]).all()
    assert (e.pseudo_labels_[e.train_ids_] == 1).sum() > 0   # ALICE flipped some pool items
    assert np.abs(e.meta_gradients_[e.train_ids_]).max() > 0 and (e.meta_gradients_[labels >= 0] == 0).all()
    assert 1 <= e.n_epochs_ <= 20 and len(e.history_) == e.n_epochs_
    assert np.isnan(e.pollution_) and not e.pollution_estimate_.ok   # labels chosen by class: no estimate
    sus = e.suspects(10)
    assert list(sus.columns) == ["id", "score", "pseudo_label"] and len(sus) == 10
    assert sus["score"].is_monotonic_decreasing and not sus["id"].isin(np.flatnonzero(labels >= 0)).any()
    assert set(sus["pseudo_label"]) <= {"normal", "anomaly"}
    assert (unsup.pseudo_labels_[unsup.train_ids_] == 0).all()   # the baseline never flips


@pytest.mark.parametrize("rule", ["score", "meta", "margin", "random"])
def test_query_rules_pick_distinct_unlabeled_items(rule):
    X, _, labels = polluted(seed=2)
    e = Elite.from_arrays(X, labels, epochs=3).fit()
    q = e.query(12, rule=rule)
    assert len(q) == 12 and len(set(q.tolist())) == 12 and (labels[q] < 0).all()
    if rule == "meta":
        mg = np.abs(e.meta_gradients_[e.train_ids_])
        assert np.abs(e.meta_gradients_[q]).min() >= np.sort(mg)[-12] - 1e-12
    if rule == "margin":
        gap = np.abs(e.scores_[e.train_ids_] - e.threshold_)
        assert np.abs(e.scores_[q] - e.threshold_).max() <= np.sort(gap)[11] + 1e-12
    if rule == "score":   # pseudo-normal items first, highest score first
        sc = e.scores_[q]
        assert (np.diff(sc[e.pseudo_labels_[q] == 0]) <= 0).all()
    with pytest.raises(ValueError, match="unknown query rule"):
        e.query(3, rule="entropy")


def test_bad_input_gives_clear_errors():
    X, _, labels = polluted()
    with pytest.raises(ValueError, match="validation set.*has none"):
        Elite.from_arrays(X, np.full(len(X), -1)).fit()
    only_normal = np.where(labels == 1, -1, labels)
    with pytest.raises(ValueError, match="both classes.*'anomaly'"):
        Elite.from_arrays(X, only_normal).fit()
    Xn = X.copy()
    Xn[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 item\(s\) \(first: \[7\]\)"):
        Elite.from_arrays(Xn, labels).fit()
    normal_id = int(np.flatnonzero(labels == 0)[0])
    with pytest.raises(ValueError, match=rf"items \[{normal_id}\] are labeled 'normal' but excluded"):
        Elite.from_arrays(X, labels, excluded=[normal_id]).fit()
    with pytest.raises(ValueError, match="backbone must be one of"):
        Elite.from_arrays(X, labels, backbone="vae").fit()
    with pytest.raises(ValueError, match="neither 'normal' nor 'anomaly'"):
        Elite.from_arrays(X, np.where(labels == 1, "weird", None)).fit()
    with pytest.raises(RuntimeError, match="not fitted"):
        Elite.from_arrays(X, labels).suspects()
    # the unsupervised baseline needs no label at all
    assert Elite.from_arrays(X, None, alice=False, epochs=1).fit().scores_.shape == (len(X),)


def test_session_labels_exclusions_and_other_classes(tmp_path):
    X, y, _ = polluted(n=200, seed=4)
    s = dw.Session.from_embeddings(X, ["normal", "anomaly", "other"], store=tmp_path / "l.db")
    anom, norm = np.flatnonzero(y == 1)[:4], np.flatnonzero(y == 0)[:4]
    s.label(anom, ["anomaly"] * 4, annotator="ada")
    s.label(norm, ["normal"] * 4, annotator="ada")
    s.label([int(norm[-1]) + 1], ["other"], annotator="ada")   # other classes are ignored
    s.exclude(anom[:2], annotator="ada", reason="anomaly")      # confirmed anomalies stay validation items
    e = dw.Elite(s, epochs=2).fit()
    assert sorted(e.labeled_ids_.tolist()) == sorted(np.r_[anom, norm].tolist())
    assert not np.isin(anom[:2], e.train_ids_).any()
    assert (e.pseudo_labels_[anom] == 1).all() and (e.pseudo_labels_[norm] == 0).all()
    assert not e.suspects(None)["id"].isin(np.r_[anom, norm]).any()
    s.exclude([int(norm[0])], annotator="ada")
    with pytest.raises(ValueError, match="labeled 'normal' but excluded"):
        dw.Elite(s, epochs=1).fit()
    with pytest.raises(ValueError, match="lack \\['bad'\\]"):
        dw.Elite(s, anomaly="bad").fit()


def test_conv_backbone_on_raw_images(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.uniform(0, 0.2, (60, 12, 12)).astype(np.float32)
    imgs[:8, 3:9, 3:9] = 1.0   # anomalies: a bright square
    s = dw.Session.from_images(imgs, ["normal", "anomaly"], store=tmp_path / "i.db",
                               encoder=lambda items: np.asarray(items.images).reshape(len(items), -1))
    s.label([0, 1], ["anomaly"] * 2, annotator="ada")
    s.label([20, 21], ["normal"] * 2, annotator="ada")
    e = dw.Elite(s, backbone="conv", epochs=3, hidden=(8,)).fit()
    assert e.scores_.shape == (60,) and np.isfinite(e.scores_).all()
    t = Elite.from_arrays(np.zeros((5, 4)), [1, 0, -1, -1, -1], backbone="conv")
    with pytest.raises(ValueError, match="images of shape"):
        t.fit()
    ts = dw.Session.from_embeddings(rng.normal(size=(20, 3)).astype(np.float32), ["normal", "anomaly"],
                                    store=tmp_path / "t.db")
    with pytest.raises(ValueError, match="needs an image session"):
        dw.Elite(ts, backbone="conv").fit()


def test_suspects_frame_types():
    X, _, labels = polluted()
    sus = Elite.from_arrays(X, labels, epochs=1).fit().suspects(5)
    assert isinstance(sus, pd.DataFrame) and sus["id"].dtype == np.int64


def test_margin_threshold_and_ties():
    from dcai_widgets.elite.engine import _threshold

    scores = np.array([1.0, 3.0, 2.0, 4.0, 0.5, 1.8, 3.7, 5.0, 6.0, 0.1])
    assert _threshold(scores, np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1])) == 3.5   # tie: the higher one
    assert _threshold(scores, np.array([0, 3]), np.array([0, 1])) == 2.5
    assert np.isnan(_threshold(scores, np.array([0]), np.array([0])))


def test_hbos_first_ranking_scores_without_labels_and_matches_pyod():
    """backbone="hbos" (alice=False): HBOS fit on the pool scores every item, no label needed, equal to
    PyOD's; the pool's anomalies rank high; the labeled items are scored but not fit on; ALICE refuses it."""
    HBOS = pytest.importorskip("pyod.models.hbos", reason="pyod (a dev dependency) checks the scores").HBOS

    X, y, labels = polluted(n=400, rp=0.1)
    e = Elite.from_arrays(X, np.full(len(X), -1), backbone="hbos", alice=False).fit()
    assert e.scores_.shape == (len(X),) and np.isfinite(e.scores_).all()
    assert roc_auc_score(y, e.scores_) > 0.9
    assert e.model_ is None and e.n_epochs_ == 0 and (e.pseudo_labels_ == 0).all()
    assert list(e.suspects(5)["id"]) == list(np.argsort(-e.scores_, kind="stable")[:5])
    # with labels: fit on the unlabeled pool only (standardised by the pool), same as PyOD directly
    e2 = Elite.from_arrays(X, labels, backbone="hbos", alice=False).fit()
    inp = arrays_inputs(X, labels, None, "normal", "anomaly", images=False, need_labels=False)
    want = HBOS().fit(inp.X[inp.train_ids].astype(np.float64)).decision_function(inp.X.astype(np.float64))
    np.testing.assert_allclose(e2.scores_, want)
    assert len(e2.query(5, rule="score")) == 5
    # values outside the pool's range (edge bins, tolerance, far out) and a constant feature
    rng = np.random.default_rng(1)
    F = np.c_[rng.normal(size=(200, 3)), np.ones(200)]
    Q = np.r_[F, [[9, 0, 0, 1], [-9, 0, 0, 1], [F[:, 0].max() + 0.01, F[:, 1].min() - 0.01, 0, 2]]]
    np.testing.assert_allclose(hbos(F, Q), HBOS().fit(F).decision_function(Q))
    with pytest.raises(ValueError, match="classical detector.*alice=False"):
        Elite.from_arrays(X, labels, backbone="hbos").fit()
    with pytest.raises(ValueError, match="backbone must be one of"):
        Elite.from_arrays(X, labels, backbone="iforest", alice=False).fit()
