"""Weak background negatives (search mode) and the per-round row cache of the Seals engine."""
import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from dcai_widgets.neighbors import NeighborIndex
from dcai_widgets.seals import Seals


class SpyLogReg(LogisticRegression):
    """Records what fit saw."""

    def fit(self, X, y, sample_weight=None):
        self.seen_ = (np.asarray(X).shape, np.asarray(y).copy(),
                      None if sample_weight is None else np.asarray(sample_weight).copy())
        return super().fit(X, y, sample_weight=sample_weight)


class NoWeightNB(ClassifierMixin, BaseEstimator):
    """A probabilistic classifier whose fit takes no sample_weight."""

    def fit(self, X, y):
        from sklearn.naive_bayes import GaussianNB

        self.nb_ = GaussianNB().fit(X, y)
        self.classes_ = self.nb_.classes_
        self.n_fit_ = len(y)
        return self

    def predict_proba(self, X):
        return self.nb_.predict_proba(X)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(3)
    centers = rng.normal(scale=4.0, size=(30, 8))
    blob = rng.integers(0, 30, 1500)
    X = (centers[blob] + rng.normal(size=(1500, 8))).astype(np.float32)
    y = (blob == 0).astype(np.int64)
    return X, y, NeighborIndex(kind="flat").fit(X)


def labels(y, n_pos=3, n_neg=20, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.full(len(y), -1)
    lab[rng.choice(np.flatnonzero(y == 1), n_pos, replace=False)] = 1
    lab[rng.choice(np.flatnonzero(y == 0), n_neg, replace=False)] = 0
    return lab


def test_background_negatives_join_training_with_low_weight(blobs):
    X, y, index = blobs
    lab = labels(y)
    s = Seals.from_arrays(X, index, k=10, strategy="most_likely_positive", target=1, estimator=SpyLogReg(),
                          background_negatives=200, background_weight=0.2).fit(lab)
    bg = s.background_ids_
    assert len(bg) == 200 and len(np.unique(bg)) == 200
    n_lab = int((lab != -1).sum())
    free = int((lab[bg] == -1).sum())
    shape, yfit, w = s.estimator_.seen_
    assert shape[0] == n_lab + free
    assert (yfit[n_lab:] == 0).all() and yfit[:n_lab].sum() == 3
    assert np.allclose(w[:n_lab], 1.0) and np.allclose(w[n_lab:], 0.2)
    # drawn once: the same sample next round; a background item labeled since is trained with its label
    lab2 = lab.copy()
    lab2[bg[:5]] = y[bg[:5]]
    s.fit(lab2)
    assert np.array_equal(s.background_ids_, bg)
    assert s.estimator_.seen_[0][0] == int((lab2 != -1).sum()) + int((lab2[bg] == -1).sum())
    # selection still scores only the pool
    assert s.pool_size < len(X) // 2


def test_background_off_and_multiclass_mode_train_on_labels_only(blobs):
    X, y, index = blobs
    lab = labels(y)
    off = Seals.from_arrays(X, index, k=10, strategy="entropy", target=1, estimator=SpyLogReg(),
                            background_negatives=0).fit(lab)
    assert off.estimator_.seen_[0][0] == int((lab != -1).sum()) and off.estimator_.seen_[2] is None
    multi = lab.copy()
    multi[np.flatnonzero(lab == 0)[:8]] = 2
    mc = Seals.from_arrays(X, index, k=10, strategy="entropy", estimator=SpyLogReg(),
                           background_negatives=500).fit(multi)
    assert mc.estimator_.seen_[0][0] == int((multi != -1).sum())     # ignored without a target
    assert mc.estimator_.seen_[2] is None


def test_background_with_an_estimator_without_sample_weight(blobs):
    X, y, index = blobs
    lab = labels(y)
    s = Seals.from_arrays(X, index, k=10, strategy="most_likely_positive", target=1, estimator=NoWeightNB(),
                          background_negatives=100).fit(lab)
    assert s.estimator_.n_fit_ == int((lab != -1).sum()) + int((lab[s.background_ids_] == -1).sum())
    assert len(s.candidates()) == s.batch


def test_background_parameters_are_checked(blobs):
    X, _, index = blobs
    with pytest.raises(ValueError, match="background_negatives"):
        Seals.from_arrays(X, index, target=1, background_negatives=-1)
    with pytest.raises(ValueError, match="background_weight"):
        Seals.from_arrays(X, index, target=1, background_weight=0)
    with pytest.raises(ValueError, match="background_weight"):
        Seals.from_arrays(X, index, target=1, background_weight=1.5)


@pytest.mark.parametrize("strategy", ["entropy", "kcenter"])
def test_cached_rows_match_a_fresh_engine_over_rounds_and_undo(blobs, strategy):
    """Rows kept across rounds (only new pool members gathered) give what a fresh engine gives."""
    X, y, index = blobs
    lab = labels(y)
    s = Seals.from_arrays(X, index, k=15, strategy=strategy, target=1, batch=12)
    for _ in range(4):
        ids = s.fit(lab).candidates()
        lab[ids] = y[ids]
    s.fit(lab)
    fresh = Seals.from_arrays(X, index, k=15, strategy=strategy, target=1, batch=12).fit(lab)
    assert sorted(s.candidates_pool_.tolist()) == sorted(fresh.candidates_pool_.tolist())
    assert set(s.candidates(20)) == set(fresh.candidates(20))
    # undo: retract the labels of the last two rounds; the pool shrinks exactly
    undo = np.flatnonzero(lab != -1)[-20:]
    lab[undo] = -1
    lab[np.flatnonzero(y == 1)[0]] = 1       # keep a positive
    s.fit(lab)
    fresh = Seals.from_arrays(X, index, k=15, strategy=strategy, target=1, batch=12).fit(lab)
    assert sorted(s.candidates_pool_.tolist()) == sorted(fresh.candidates_pool_.tolist())
    assert set(s.candidates(20)) == set(fresh.candidates(20))
    # the row buffer holds exactly the unlabeled pool members and exploration items, each once
    buffered = s._rows.ids[: s._rows.m]
    explore = s.explore_ids_[lab[s.explore_ids_] == -1]
    assert sorted(buffered.tolist()) == sorted(set(s.pool_.ids().tolist()) | set(explore.tolist()))
    assert (s._rows.pos[buffered] == np.arange(len(buffered))).all()
    assert (s._rows.pos >= 0).sum() == len(buffered)


@pytest.mark.parametrize("strategy", ["most_likely_positive", "kcenter"])
def test_row_buffer_follows_random_labels_undos_and_far_labels(blobs, strategy):
    """Over rounds that label candidates, retract random labels and label items far from the pool, the
    buffer always holds the unlabeled pool and exploration items, and scores match a fresh engine's."""
    X, y, index = blobs
    rng = np.random.default_rng(11)
    lab = labels(y)
    s = Seals.from_arrays(X, index, k=10, strategy=strategy, target=1, batch=15, explore=40)
    for r in range(8):
        s.fit(lab)
        buffered = s._rows.ids[: s._rows.m]
        explore = s.explore_ids_[lab[s.explore_ids_] == -1]
        assert len(set(buffered.tolist())) == len(buffered)
        assert set(buffered.tolist()) == set(s.pool_.ids().tolist()) | set(explore.tolist())
        assert (lab[buffered] == -1).all()
        np.testing.assert_array_equal(s._rows.X[: len(buffered)], X[buffered])
        outside = np.isin(buffered, s.explore_ids_) & ~s.pool_.mask()[buffered]
        np.testing.assert_array_equal(s._rows.exo[: len(buffered)], outside)
        fresh = Seals.from_arrays(X, index, k=10, strategy=strategy, target=1, batch=15, explore=40).fit(lab)
        assert sorted(s.candidates_pool_.tolist()) == sorted(fresh.candidates_pool_.tolist())
        if s.scores_ is not None:
            got = dict(zip(s.candidates_pool_.tolist(), s.scores_))
            want = dict(zip(fresh.candidates_pool_.tolist(), fresh.scores_))
            assert got.keys() == want.keys()
            np.testing.assert_allclose([got[i] for i in want], list(want.values()), rtol=1e-5, atol=1e-9)
        assert set(s.candidates()) == set(fresh.candidates())
        ids = s.candidates()
        lab[ids] = y[ids]
        done = np.flatnonzero(lab != -1)
        if r % 2:     # undo a few labels (keeping a positive and a negative)
            undo = rng.choice(done, 6, replace=False)
            lab[undo] = -1
            lab[np.flatnonzero(y == 1)[0]] = 1
            lab[np.flatnonzero(y == 0)[0]] = 0
        else:         # label items anywhere (exploration items included)
            far = rng.choice(np.flatnonzero(lab == -1), 5, replace=False)
            lab[far] = y[far]
            ex = s.explore_ids_[lab[s.explore_ids_] == -1][:2]
            lab[ex] = y[ex]
