"""dw.simulate: learning curves of any engine against an oracle."""
import warnings

import numpy as np
import pytest

import dcai_widgets as dw


def _session(tmp_path, n_per=30, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (k, 4))
    X = np.vstack([c + rng.normal(0, 1, (n_per, 4)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(k), n_per)
    return dw.Session.from_embeddings(X, [f"c{i}" for i in range(k)], y_true=y, store=tmp_path / "l.db")


class Constant:
    """Asks items in id order and predicts class 0 everywhere (known accuracy)."""

    batch = 4

    def __init__(self, s):
        self.s = s

    def fit(self):
        return self

    def candidates(self, n=None):
        free = np.flatnonzero(self.s.label_vector() < 0)
        return [int(i) for i in free[:n]]

    def predict(self):
        return np.zeros(len(self.s), np.int64)


def test_curve_for_engine_with_predict(tmp_path):
    s = _session(tmp_path)
    df = dw.simulate(Constant, s, budget=10)
    assert list(df["human_labels"]) == [0, 4, 8, 10]
    # after labeling ids 0..7 (class 0) the rest is 22 of class 0 out of 82 unlabeled
    assert df["accuracy"].iloc[2] == pytest.approx(22 / 82)
    assert df["coverage"].eq(1.0).all() and (df["seconds"] >= 0).all()
    lab = s.labeled()
    assert len(lab) == 10 and set(lab["annotator"]) == {"oracle"}


def test_curve_for_lancet(tmp_path):
    s = _session(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = dw.simulate(lambda s: dw.Lancet(s, batch=3, steps=100, dmn_steps=60, progress=False), s, budget=9)
    assert list(df["human_labels"]) == [0, 3, 6, 9]
    assert df["accuracy"].iloc[-1] > 0.9  # three well-separated blobs
    assert {"round", "human_labels", "accuracy", "coverage", "seconds", "stop", "efficiency"} <= set(df.columns)


def test_curve_for_uncertainty_queue_uses_proba(tmp_path):
    from dcai_widgets.queue import UncertaintyQueue

    s = _session(tmp_path)
    df = dw.simulate(lambda s: UncertaintyQueue(s, cold_start=3), s, budget=6, batch=3)
    assert np.isnan(df["accuracy"].iloc[0]) or df["accuracy"].iloc[0] >= 0
    assert df["accuracy"].iloc[-1] > 0.9


def test_bad_input(tmp_path):
    s = _session(tmp_path)
    with pytest.raises(ValueError, match="budget"):
        dw.simulate(Constant, s, budget=0)
    with pytest.raises(ValueError, match="one label per item"):
        dw.simulate(Constant, s, oracle=np.zeros(3))
    with pytest.raises(ValueError, match="not one of session.classes"):
        dw.simulate(Constant, s, oracle=np.array(["zz"] * len(s)))
    with pytest.raises(TypeError, match="fit"):
        dw.simulate(lambda s: object(), s)
    with pytest.raises(TypeError, match="callable"):
        dw.simulate(3, s)
    s2 = dw.Session.from_embeddings(np.zeros((5, 2), np.float32), ["a", "b"], store=tmp_path / "m.db")
    with pytest.raises(ValueError, match="oracle"):
        dw.simulate(Constant, s2)
