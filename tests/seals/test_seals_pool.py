"""Candidate pool: union of kNN of the labeled minus the labeled, kept incrementally."""
import numpy as np
import pytest

from dcai_widgets.neighbors import NeighborIndex
from dcai_widgets.seals import CandidatePool


class CountingIndex:
    """Wraps an index and records how many query vectors each search got."""

    def __init__(self, inner):
        self.inner = inner
        self.queries = []

    def search(self, v, k):
        self.queries.append(len(v))
        return self.inner.search(v, k)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 8)).astype(np.float32)
    return X, NeighborIndex(kind="flat").fit(X)


def brute_knn(X, i, k):
    d = ((X - X[i]) ** 2).sum(1)
    d[i] = np.inf
    return set(np.argsort(d, kind="stable")[:k].tolist())


def test_pool_is_union_of_knn_minus_labeled(data):
    X, index = data
    labeled = [0, 5, 17, 200]
    pool = CandidatePool(X, index, k=7).update(labeled)
    expect = set().union(*(brute_knn(X, i, 7) for i in labeled)) - set(labeled)
    assert set(pool.ids().tolist()) == expect
    assert len(pool) == len(expect)
    assert pool.fraction_scored == pytest.approx(len(expect) / len(X))


def test_incremental_equals_from_scratch_and_searches_only_new(data):
    X, index = data
    counting = CountingIndex(index)
    pool = CandidatePool(X, counting, k=10)
    rng = np.random.default_rng(0)
    labeled: list[int] = []
    for _ in range(6):
        new = [int(i) for i in rng.choice(len(X), 15, replace=False) if i not in labeled][:10]
        labeled += new
        pool.update(labeled)
        assert counting.queries[-1] == len(set(new))
        assert pool.n_searched_last_ == len(set(new))
        scratch = CandidatePool.from_scratch(X, index, labeled, k=10)
        np.testing.assert_array_equal(pool.ids(), scratch)
    # no new labels: no search at all
    n_calls = len(counting.queries)
    pool.update(labeled)
    assert len(counting.queries) == n_calls and pool.n_searched_last_ == 0
    # a retracted label (undo) shrinks the pool exactly as recomputing would
    labeled = labeled[:-5]
    pool.update(labeled)
    np.testing.assert_array_equal(pool.ids(), CandidatePool.from_scratch(X, index, labeled, k=10))
    # items once in the pool still count as scored
    assert pool.ever_.sum() >= len(pool)


class NoSelfIndex:
    """Returns k results that never include the query item itself, with -1 padding at the end."""

    def __init__(self, X, pad):
        self.X, self.pad = X, pad

    def search(self, v, k):
        d = ((v[:, None, :] - self.X[None]) ** 2).sum(-1)
        d[d == 0] = np.inf
        ids = np.argsort(d, axis=1, kind="stable")[:, :k].astype(np.int64)
        if self.pad:
            ids[:, -1] = -1
        return ids, np.zeros(ids.shape, np.float32)


def test_random_labels_and_retractions_keep_the_pool_exact(data):
    X, index = data
    pool = CandidatePool(X, index, k=6)
    rng = np.random.default_rng(7)
    labeled: set[int] = set()
    for step in range(25):
        if labeled and rng.random() < 0.4:          # undo a few
            labeled -= set(rng.choice(sorted(labeled), min(len(labeled), 3), replace=False).tolist())
        labeled |= set(rng.choice(len(X), 4, replace=False).tolist())
        pool.update(sorted(labeled))
        scratch = CandidatePool.from_scratch(X, index, sorted(labeled), k=6)
        np.testing.assert_array_equal(pool.ids(), scratch)
        assert np.array_equal(np.flatnonzero(pool.mask()), scratch)
        np.testing.assert_array_equal(pool.labeled_ids(), sorted(labeled))
        assert (pool.cover_ >= 0).all() and pool.ever_[scratch].all()


@pytest.mark.parametrize("pad", [False, True])
def test_an_index_that_omits_the_item_itself_still_gives_k_neighbours(data, pad):
    X, _ = data
    pool = CandidatePool(X, NoSelfIndex(X, pad), k=5).update([3])
    # k+1 = 6 asked, self not among them (the last may be -1 padding): the first 5 real ones are kept
    assert set(pool.ids().tolist()) == brute_knn(X, 3, 5)
    assert len(pool.neighbors_[3]) == 5


def test_pool_bad_input(data):
    X, index = data
    with pytest.raises(ValueError, match="k=400"):
        CandidatePool(X, index, k=400)
    with pytest.raises(ValueError, match="k must be >= 1"):
        CandidatePool(X, index, k=0)
    with pytest.raises(TypeError, match="search"):
        CandidatePool(X, object(), k=3)
    with pytest.raises(ValueError, match="0..399"):
        CandidatePool(X, index, k=3).update([5, 400])


def test_ivf_tune_picks_smallest_nprobe_reaching_recall():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(40, 16))[rng.integers(0, 40, 6000)] * 3 + rng.normal(size=(6000, 16))).astype(np.float32)
    index = NeighborIndex(kind="ivf", nlist=64, nprobe=1).fit(X)
    found = index.tune(k=10, target_recall=0.9, n_queries=100)
    settings = list(found)
    assert len(settings) >= 2                     # nprobe=1 is not enough here: the search really tunes
    assert found[settings[-1]] >= 0.9 and all(r < 0.9 for r in list(found.values())[:-1])
    assert index.index_.nprobe == settings[-1] == index.nprobe
    # the pool built on the tuned index matches exact neighbours closely
    exact = NeighborIndex(kind="flat").fit(X)
    a = CandidatePool(X, index, k=10).update(range(0, 6000, 300)).ids()
    b = CandidatePool(X, exact, k=10).update(range(0, 6000, 300)).ids()
    assert len(np.intersect1d(a, b)) >= 0.85 * len(b)
    assert NeighborIndex(kind="flat").fit(X).tune() == {}
