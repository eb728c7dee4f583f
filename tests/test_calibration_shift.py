"""Trust-score importance weights for the propagated labels' calibrator (issue 14, fifth pass).

LANCET asks about low-trust items, so its out-of-fold pairs are harder than the pool at the same score and
distance; ``calibration_shift`` weights the pairs toward the pool's trust scores for the confidences shown on
the pool, and the suggestions keep the unweighted calibrator.
"""
import warnings

import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.calibration import TopLabelCalibrator, cross_fit, nn_distance, padded_log_proba
from dcai_widgets.calibration_shift import heldout_trust, label_distances, trust_score, trust_weights


def test_label_distances_gives_the_nearest_distance_and_the_trust_score():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    labeled = np.arange(0, 300, 7)
    y = rng.integers(0, 3, len(labeled))
    pred = rng.integers(0, 3, 300)
    near, trust = label_distances(X, labeled, y, pred, chunk=64)
    np.testing.assert_allclose(near, nn_distance(X, labeled), rtol=1e-4, atol=1e-4)
    # by hand: log(nearest label of another class / nearest label of the predicted class)
    d = np.sqrt(((X[:, None, :] - X[labeled][None]) ** 2).sum(-1))
    same = np.array([d[i, y == pred[i]].min() for i in range(300)])
    other = np.array([d[i, y != pred[i]].min() for i in range(300)])
    unl = np.setdiff1d(np.arange(300), labeled)   # a label's own distance is 0 only up to float32 rounding
    np.testing.assert_allclose(trust[unl], np.log(other[unl] / same[unl]), rtol=1e-3, atol=1e-3)
    assert (trust[labeled][pred[labeled] == y] > 5).all()   # on a label of its predicted class: trusted


def test_a_predicted_class_without_labels_gets_the_lowest_trust():
    D = np.array([[1.0, 2.0], [3.0, 1.0]])
    np.testing.assert_allclose(trust_score(D, np.array([0, 0]), known=np.array([True, False])), [np.log(2), -10])
    X = np.eye(4, dtype=np.float32)
    _, t = label_distances(X, np.array([0, 1]), np.array([0, 1]), np.array([0, 5, 1, 5]))
    assert t[1] == -10 and t[3] == -10 and t[0] > 0


def test_trust_weights_favour_the_pairs_that_look_like_the_pool():
    rng = np.random.default_rng(0)
    source = np.r_[rng.normal(-1, 1, 80), rng.normal(1, 1, 20)]      # asked items: mostly low trust
    target = rng.normal(1, 1, 2000)                                    # pool: mostly high trust
    w = trust_weights(source, target)
    assert abs(w.mean() - 1) < 0.25 and w.min() >= 0.1 - 1e-12 and w.max() <= 10 + 1e-12
    assert w[80:].mean() > 3 * w[:80].mean()
    same = trust_weights(rng.normal(0, 1, 100), rng.normal(0, 1, 5000))
    assert np.abs(same - 1).max() < 0.5                                # one population: about equal weights
    np.testing.assert_array_equal(trust_weights(np.ones(5), np.ones(9)), np.ones(5))   # nothing to tell apart


def test_weighted_pairs_calibrate_the_pool_when_the_asked_items_are_the_hard_ones():
    """A fixed-seed world where correctness depends on trust, which neither the score nor the distance
    carries, and the labels were asked among the low-trust items: the unweighted calibrator says the asked
    items' accuracy on the pool; the trust-weighted one says the pool's."""
    rng = np.random.default_rng(3)
    n, K = 6000, 4
    trust = rng.normal(0, 1.5, n)
    logits = rng.normal(0, 1, (n, K))
    logits[:, 0] += 1.5
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    right = rng.random(n) < 1 / (1 + np.exp(-(1.0 + 1.5 * trust)))
    dist = np.ones(n)
    asked = rng.choice(np.flatnonzero(trust < 0.5), 150, replace=False)
    asked = np.r_[asked, rng.choice(np.flatnonzero(trust >= 0.5), 30, replace=False)]
    pool = np.setdiff1d(np.arange(n), asked)
    plain = TopLabelCalibrator("coverage").fit(logp[asked], right[asked], dist[asked])
    w = trust_weights(trust[asked], trust[pool])
    weighted = TopLabelCalibrator("coverage").fit(logp[asked], right[asked], dist[asked], sample_weight=w)
    acc = right[pool].mean()
    off_plain = abs(plain.predict(logp[pool], distance=dist[pool]).mean() - acc)
    off_weighted = abs(weighted.predict(logp[pool], distance=dist[pool]).mean() - acc)
    assert off_plain > 0.07 and off_weighted < 0.03, (off_plain, off_weighted, acc)   # 0.089 / 0.005


def test_heldout_trust_uses_the_folds_of_cross_fit():
    """Each held-out item's trust is measured against the labels its fold's model was trained on: the
    folds must be cross_fit's own (same ``folds`` and ``seed``)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    labeled = np.sort(rng.choice(200, 40, replace=False))
    y = np.arange(40) % 3
    trained_on: dict[int, np.ndarray] = {}

    def fit_predict(train, test):
        for i in test:
            trained_on[int(i)] = np.asarray(train)
        return padded_log_proba(np.zeros((len(test), 1)), np.array([0]), 3)

    cross_fit(labeled, y, fit_predict, folds=5, seed=7)
    pred = rng.integers(0, 3, 40)
    t = heldout_trust(X, labeled, y, pred, folds=5, seed=7)
    where = {int(i): k for k, i in enumerate(labeled)}
    for j, i in enumerate(labeled):
        tr = trained_on[int(i)]
        ty = y[[where[int(a)] for a in tr]]
        assert np.isclose(t[j], label_distances(X, tr, ty, pred[[j]], rows=[i])[1][0])


def _fitted(tmp_path, **kw):
    from sklearn.datasets import make_blobs

    X, yt = make_blobs(n_samples=240, centers=3, cluster_std=3.0, n_features=6, random_state=0)
    s = dw.Session.from_embeddings(X.astype(np.float32), ["a", "b", "c"], y_true=yt, store=tmp_path / "l.db")
    ids = np.random.default_rng(1).choice(len(s), 60, replace=False)
    s.label(ids.tolist(), s.y_true[ids], annotator="ada")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Lancet_fit(s, **kw)


def Lancet_fit(s, **kw):
    return dw.Lancet(s, batch=6, steps=80, dmn_steps=40, progress=False, **kw).fit()


def test_lancet_shows_propagated_labels_from_the_weighted_calibrator_and_suggests_with_the_plain_one(tmp_path):
    lan = _fitted(tmp_path)
    assert lan.pool_calibrator_ is not lan.calibrator_
    np.testing.assert_allclose(lan.confidence_, lan.pool_calibrator_.predict(lan.log_proba_, distance=lan.distance_))
    plain = lan.calibrator_.predict(lan.log_proba_, distance=lan.distance_)
    assert not np.allclose(plain, lan.confidence_)
    i = int(lan.propagated()["id"].iloc[0])
    assert np.isclose(lan.suggest(i)[1], plain[i])
    stored = lan.session.propagated().set_index("id")["confidence"]
    assert np.isclose(stored.loc[i], lan.confidence_[i], atol=1e-6)
    assert lan.trust_.shape == lan.distance_.shape == (len(lan.session),)


def test_without_weights_one_calibrator_serves_both(tmp_path):
    lan = _fitted(tmp_path, calibration_weights=None)
    assert lan.pool_calibrator_ is lan.calibrator_
    i = int(lan.propagated()["id"].iloc[0])
    assert np.isclose(lan.suggest(i)[1], lan.confidence_[i])


def test_calibration_weights_is_checked(tmp_path):
    s = dw.Session.from_embeddings(np.zeros((4, 2), np.float32), ["a", "b"], store=tmp_path / "x.db")
    with pytest.raises(ValueError, match="calibration_weights"):
        dw.Lancet(s, calibration_weights="density")


def test_accuracy_se_uses_the_effective_number_of_weighted_pairs():
    from dcai_widgets.calibration import accuracy_se

    ok = np.r_[np.ones(75, bool), np.zeros(25, bool)]
    p = (75 + 1) / (100 + 2)
    assert accuracy_se(ok) == pytest.approx(np.sqrt(p * (1 - p) / 100))
    w = np.r_[np.full(50, 3.0), np.full(50, 1.0)]          # Kish: n_eff = 200^2 / 500 = 80
    assert accuracy_se(np.tile([True, False], 50), w) == pytest.approx(np.sqrt(0.5 * 0.5 / 80))
    assert 0 < accuracy_se(np.ones(60, bool)) < 0.03           # all right still leaves an error
    assert accuracy_se(np.zeros(0, bool)) == float("inf")


def test_a_fit_whose_calibration_is_too_loose_shows_uncertain_not_a_figure(tmp_path, overlapping):
    """60 labels on overlapping classes (the model right ~70% of the time) pin the accuracy only to about
    +-12 points: the fit's version ends in "-imprecise" and the cards print "uncertain"; well separated
    classes with the same labels get a figure."""
    from dcai_widgets.calibration import MAX_ACCURACY_SE
    from dcai_widgets.widgets.item_grid import shown_confidence

    s = overlapping
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lan = Lancet_fit(s)
    assert lan.calibration_se_ > MAX_ACCURACY_SE and lan.model_version_.endswith("-imprecise")
    prop = s.propagated()
    assert prop["model_version"].str.endswith("-imprecise").all()
    assert shown_confidence(prop["confidence"].iloc[0], prop["model_version"].iloc[0]) == "uncertain"
    (tmp_path / "p").mkdir()
    precise = _fitted(tmp_path / "p")
    assert precise.calibration_se_ <= MAX_ACCURACY_SE and not precise.model_version_.endswith("-imprecise")
    v = precise.session.propagated()["model_version"].iloc[0]
    assert shown_confidence(0.8, v) == "0.80"
