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


def test_ivf_cells_are_the_index_lists():
    from dcai_widgets.neighbors import ivf_cells

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 8)).astype(np.float32)
    ivf = NeighborIndex(kind="ivf", nlist=16).fit(X)
    cells = ivf_cells(ivf, len(X))
    _, expect = ivf.index_.quantizer.search(X, 1)
    np.testing.assert_array_equal(cells, expect[:, 0])
    assert ivf_cells(NeighborIndex(kind="flat").fit(X), len(X)) is None
    assert ivf_cells(object(), len(X)) is None


def test_exploration_sample_is_stratified_by_ivf_cell():
    """With an IVF index each cell gives about the same number of items (all of a cell smaller than
    that), so a small cell, e.g. a rare sub-cluster that owns one, is never left out by chance."""
    from dcai_widgets.neighbors import ivf_cells
    from dcai_widgets.seals.draws import _stratified

    rng = np.random.default_rng(1)
    centers = rng.normal(scale=10, size=(20, 8))
    X = np.vstack([c + rng.normal(size=(1000, 8)) for c in centers]).astype(np.float32)
    ivf = NeighborIndex(kind="ivf", nlist=20, nprobe=20).fit(X)
    cells = ivf_cells(ivf, len(X))
    sizes = np.bincount(cells, minlength=20)
    assert sizes.max() > 3 * sizes.min()               # uneven cells: a uniform draw would follow sizes
    s = Seals.from_arrays(X, ivf, k=5, target=1, explore=200, background_negatives=300)
    ids = s._explore(np.full(len(X), -1))
    assert len(ids) == 200 and not np.isin(ids, s.background_ids_).any()
    np.testing.assert_array_equal(np.bincount(cells[ids], minlength=20), np.full(20, 10))
    again = Seals.from_arrays(X, ivf, k=5, target=1, explore=200, background_negatives=300)
    np.testing.assert_array_equal(again._explore(np.full(len(X), -1)), ids)     # seeded
    # a cell smaller than its share gives all it has; the others make up the rest
    toy = np.r_[np.zeros(500), np.ones(500), np.full(3, 2)].astype(np.int64)
    got = _stratified(np.random.default_rng(0), toy, 31, exclude=np.array([0, 1]))
    assert len(got) == 31 and len(set(got.tolist())) == 31 and not np.isin(got, [0, 1]).any()
    assert np.isin([1000, 1001, 1002], got).all()
    assert sorted(np.bincount(toy[got]).tolist()) == [3, 14, 14]


def test_batch_quota_asks_exploration_items_from_outside_the_pool(split_concept):
    X, y, part, index = split_concept
    lab = np.full(len(y), -1)
    lab[np.flatnonzero(part == 1)[:3]] = 1
    lab[np.random.default_rng(0).choice(np.flatnonzero(y == 0), 30, replace=False)] = 0
    kw = dict(k=10, strategy="most_likely_positive", target=1, batch=25, explore=0.05, background_negatives=0)
    s = Seals.from_arrays(X, index, explore_quota=0.6, **kw).fit(lab)
    got = s.candidates()
    outside = ~s.pool_.mask()[got]
    n_out = int(outside.sum())
    assert n_out >= 15                                 # at least 0.6 of 25 from the exploration sample, outside the pool
    assert np.isin(np.asarray(got)[outside], s.explore_ids_).all()
    p = s.proba(got)
    assert (np.diff(p) <= 1e-12).all()                 # the batch is best first
    plain = Seals.from_arrays(X, index, explore_quota=0, **kw).fit(lab)
    top = plain.scores()["id"].tolist()[:25]
    assert plain.candidates() == top                   # quota 0: the strategy's own top
    assert int((~plain.pool_.mask()[top]).sum()) < n_out
    # multi-class mode and full scans ignore the quota; bad values are refused
    full = Seals.from_arrays(X, index, explore_quota=0.2, full_scan=True, **kw).fit(lab)
    assert full.candidates() == full.scores()["id"].tolist()[:25]
    with pytest.raises(ValueError, match="explore_quota"):
        Seals.from_arrays(X, index, explore_quota=1.5, **kw)


def test_small_data_the_background_covers_still_gets_an_exploration_sample():
    """With N below the background's size (the 1,797-item demo and 2,000 weak negatives) the background
    takes every item; the exploration sample then overlaps it instead of being empty."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(1500, 6)).astype(np.float32)
    s = Seals.from_arrays(X, NeighborIndex(kind="flat").fit(X), k=10, target=1, explore=0.02)
    ids = s._explore(np.full(1500, -1))
    assert len(ids) == 30 and len(s.background_ids_) == 1500
    big = Seals.from_arrays(np.vstack([X, X + 50]), None, k=10, target=1, explore=0.01, background_negatives=200)
    ids = big._explore(np.full(3000, -1))
    assert len(ids) == 30 and not np.isin(ids, big.background_ids_).any()   # disjoint when there is room
