"""The SVP proxy for active learning: a scikit-learn classifier the Label queue and SEALS score with,
built from a model the Train tab stored in session.models."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

import dcai_widgets as dw
from dcai_widgets.queue import UncertaintyQueue
from dcai_widgets.train import Trainer
from dcai_widgets.train.proxy import ProxyClassifier, proxy_estimator


@pytest.fixture
def sess(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(400) % 4
    X = (rng.normal(0, 2.5, (4, 8))[y] + rng.normal(0, 1.5, (400, 8))).astype(np.float32)
    s = dw.Session.from_embeddings(X, ["a", "b", "c", "d"], y_true=y, store=tmp_path / "p.db")
    s.label(np.arange(60), np.asarray(s.classes)[y[:60]], annotator="ann")
    return s


def entropy(p):
    return -(p * np.log(np.clip(p, 1e-12, 1))).sum(1)


def test_proxy_is_a_seeded_sklearn_classifier(sess):
    X, y = np.asarray(sess.embeddings), sess.y_true
    a = ProxyClassifier(hidden=16, epochs=5).fit(X[:200], np.asarray(["x", "y", "z", "w"])[y[:200]])
    b = clone(a).fit(X[:200], np.asarray(["x", "y", "z", "w"])[y[:200]])
    assert list(a.classes_) == ["w", "x", "y", "z"]
    p = a.predict_proba(X[200:])
    assert p.shape == (200, 4) and np.allclose(p.sum(1), 1) and np.array_equal(p, b.predict_proba(X[200:]))
    assert (a.predict(X[200:]) == np.asarray(["x", "y", "z", "w"])[y[200:]]).mean() > 0.9
    w = np.where(y[:200] == 0, 0.0, 1.0)          # weight 0: class 0 is never learned from
    c = ProxyClassifier(epochs=5).fit(X[:200], y[:200], sample_weight=w)
    assert (c.predict(X[200:][y[200:] == 0]) == 0).mean() < 0.5
    with pytest.raises(ValueError, match="epochs=0"):
        ProxyClassifier(epochs=0).fit(X, y)
    with pytest.raises(RuntimeError, match="not fitted"):
        ProxyClassifier().predict_proba(X)


def test_proxy_of_a_stored_trainer_mirrors_its_architecture(sess):
    t = Trainer(sess, epochs=3, hidden=32, lr=5e-3, batch_size=16, seed=4, progress=False).fit()
    est = proxy_estimator(sess, "trainer", epochs=2)
    assert isinstance(est, ProxyClassifier) and not hasattr(est, "model_")
    assert (est.hidden, est.epochs, est.lr, est.batch_size, est.random_state) == (32, 2, 5e-3, 16, 4)
    assert proxy_estimator(sess, est) is not est                      # a classifier is cloned, never fitted in place
    with pytest.raises(ValueError, match="scorer='nope'.*have \\['trainer'\\]"):
        proxy_estimator(sess, "nope")
    with pytest.raises(TypeError, match="neither a scikit-learn classifier"):
        proxy_estimator(sess, object())
    t.model = "cnn"
    with pytest.raises(ValueError, match="MLP on the embeddings"):
        ProxyClassifier.like(t)


def test_label_queue_scores_candidates_with_the_proxy(sess):
    Trainer(sess, epochs=3, hidden=16, progress=False).fit()
    q = UncertaintyQueue(sess, scorer="trainer", calibration_folds=3).fit()
    lr = UncertaintyQueue(sess, calibration_folds=3).fit()
    labeled = np.arange(60)
    ref = ProxyClassifier.like(sess.models["trainer"]).fit(np.asarray(sess.embeddings)[labeled], sess.y_true[labeled])
    unl = np.arange(60, 400)
    want = unl[np.argsort(-entropy(ref.predict_proba(np.asarray(sess.embeddings)[unl])), kind="stable")]
    assert q.candidates() == want.tolist()                  # ranked by the proxy's entropy
    assert q.candidates(20) != lr.candidates(20)            # not the regression's ranking
    label, conf = q.suggest(int(want[0]))
    assert label in sess.classes and 0 < conf < 1           # calibrated on the proxy's cross-fitted predictions


def test_seals_scores_its_pool_with_the_proxy(sess):
    from dcai_widgets.seals import Seals

    Trainer(sess, epochs=3, hidden=16, progress=False).fit()
    est = proxy_estimator(sess, "trainer")
    s = Seals(sess, k=20, estimator=est, batch=10, explore=0).fit()
    assert isinstance(s.estimator_, ProxyClassifier) and hasattr(s.estimator_, "model_")
    pool = s.candidates_pool_
    p = s.estimator_.predict_proba(np.asarray(sess.embeddings)[pool])
    best = pool[np.argsort(-entropy(p), kind="stable")][:10]
    assert set(s.candidates()) == set(best.tolist())
    assert np.allclose(s.proba(pool[:5]), p[:5])
