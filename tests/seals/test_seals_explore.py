"""The exploration sample: random items scored beside the kNN pool, so far-apart parts of a concept are found."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from dcai_widgets.neighbors import NeighborIndex
from dcai_widgets.seals import Seals


def first_feature(X):
    return np.asarray(X)[:, :1]


def attribute_model():
    """A classifier that reads only the concept's attribute (coordinate 0), so it ranks both parts of the
    concept alike: what the tests check is whether the pool lets it see the far part at all."""
    return make_pipeline(FunctionTransformer(first_feature), LogisticRegression(class_weight="balanced"))


@pytest.fixture(scope="module")
def split_concept():
    """40 common clusters; the rare concept is two small clusters far apart that share one attribute
    (coordinate 0 raised), like the benchmark's sub-clusters.  Seeds come from the first one only."""
    rng = np.random.default_rng(5)
    d = 8
    centers = rng.normal(scale=6.0, size=(40, d))
    blob = rng.integers(0, 40, 4000)
    X = centers[blob] + rng.normal(size=(4000, d))
    rare_a = centers[3] + rng.normal(size=(40, d))
    rare_b = centers[27] + rng.normal(size=(40, d))
    rare_a[:, 0] += 12.0
    rare_b[:, 0] += 12.0
    X = np.vstack([X, rare_a, rare_b]).astype(np.float32)
    y = np.r_[np.zeros(4000), np.ones(80)].astype(np.int64)
    part = np.r_[np.zeros(4000), np.ones(40), 2 * np.ones(40)].astype(np.int64)
    return X, y, part, NeighborIndex(kind="flat").fit(X)


def hunt(X, y, part, index, explore, rounds=12):
    lab = np.full(len(y), -1)
    lab[np.flatnonzero(part == 1)[:3]] = 1
    lab[np.random.default_rng(0).choice(np.flatnonzero(y == 0), 30, replace=False)] = 0
    s = Seals.from_arrays(X, index, k=10, strategy="most_likely_positive", target=1, batch=10,
                          explore=explore, background_negatives=0, estimator=attribute_model())
    lab0 = lab.copy()
    for _ in range(rounds):
        ids = s.fit(lab).candidates()
        lab[ids] = y[ids]
    return s.fit(lab), lab, lab0


def test_the_knn_pool_alone_never_reaches_the_far_part_of_the_concept(split_concept):
    X, y, part, index = split_concept
    s, lab, _ = hunt(X, y, part, index, explore=0)
    assert (lab[part == 1] == 1).sum() >= 30              # the seeded part is found
    assert (lab[part == 2] == 1).sum() == 0               # the other part never is
    rep = s.report()
    assert (rep["n_explore"] == 0).all() and (rep["pool_size"] == rep["n_scored"]).all()


def test_the_exploration_sample_leads_the_pool_to_the_far_part(split_concept):
    X, y, part, index = split_concept
    s, lab, lab0 = hunt(X, y, part, index, explore=400)
    assert (lab[part == 2] == 1).sum() >= 20
    ex = s.explore_ids_
    assert len(ex) == 400 and np.array_equal(ex, np.unique(ex))
    rep = s.report()
    assert (rep["n_explore"] > 0).all()
    assert (rep["pool_size"] + rep["n_explore"] == rep["n_scored"]).all()
    # every unlabeled exploration item is a candidate, and the fraction scored counts them once
    # (a seed that happens to be in the sample was never scored)
    cand = set(s.candidates_pool_.tolist())
    assert set(ex[lab[ex] == -1].tolist()) <= cand
    ever = s.pool_.ever_.copy()
    ever[ex[lab0[ex] == -1]] = True
    assert s.pool_fraction == pytest.approx(ever.mean())


def test_exploration_sample_is_drawn_once_seeded_and_apart_from_the_background(split_concept):
    X, y, part, index = split_concept
    lab = np.full(len(y), -1)
    lab[np.flatnonzero(part == 1)[:3]] = 1
    lab[:30] = 0
    a = Seals.from_arrays(X, index, k=10, target=1, explore=0.05, background_negatives=300).fit(lab)
    b = Seals.from_arrays(X, index, k=10, target=1, explore=0.05, background_negatives=300).fit(lab)
    assert len(a.explore_ids_) <= 204 and len(a.explore_ids_) >= 180   # 5% of 4,080, minus any overlap
    assert np.array_equal(a.explore_ids_, b.explore_ids_)
    assert not set(a.explore_ids_.tolist()) & set(a.background_ids_.tolist())
    first = a.explore_ids_.copy()
    lab[first[:5]] = 0
    a.fit(lab)
    assert np.array_equal(a.explore_ids_, first)
    assert not set(first[:5].tolist()) & set(a.candidates_pool_.tolist())    # labeled: no longer scored


def test_multiclass_mode_explores_too_and_bad_values_are_refused(split_concept):
    X, y, part, index = split_concept
    lab = np.full(len(y), -1)
    lab[np.flatnonzero(part == 1)[:3]] = 1
    lab[:30] = 0
    s = Seals.from_arrays(X, index, k=10, explore=100).fit(lab)
    assert s.report()["n_explore"].iloc[-1] > 0
    for bad in (-1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="explore"):
            Seals.from_arrays(X, index, k=10, explore=bad)


def test_scored_rows_stay_pool_plus_exploration_under_labels_and_retractions(split_concept):
    """Each round scores exactly the kNN pool plus the unlabeled exploration items, whatever was labeled
    or retracted before (the row cache keeps its exploration flags across compactions)."""
    X, y, part, index = split_concept
    rng = np.random.default_rng(2)
    lab = np.full(len(y), -1)
    lab[np.flatnonzero(y == 1)[:2]] = 1
    lab[rng.choice(np.flatnonzero(y == 0), 10, replace=False)] = 0
    s = Seals.from_arrays(X, index, k=8, strategy="entropy", target=1, batch=15, explore=0.05)
    for r in range(10):
        s.fit(lab)
        explore = s.explore_ids_[lab[s.explore_ids_] == -1]
        expect = set(s.pool_.ids().tolist()) | set(explore.tolist())
        got = s.scores()["id"].tolist()
        assert len(got) == len(expect) and set(got) == expect, r
        np.testing.assert_array_equal(s.pool_.ids(), s.pool_.from_scratch(X, index, np.flatnonzero(lab >= 0), k=8))
        ids = s.candidates()
        lab[ids] = y[ids]
        if r % 3 == 2:      # retract some labels, exploration items among them
            labeled = np.flatnonzero(lab >= 0)
            drop = np.r_[rng.choice(labeled, 6, replace=False), s.explore_ids_[lab[s.explore_ids_] >= 0][:2]]
            keep_seed = np.flatnonzero(lab == 1)[:1]
            lab[np.setdiff1d(drop, keep_seed)] = -1
