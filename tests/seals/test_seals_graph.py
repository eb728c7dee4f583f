"""SEALS with a precomputed kNN table (neighbors="graph"): the same pool and picks as searching each
round, no search during rounds, and the table cached on disk by the Session."""
import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.neighbors import NeighborIndex
from dcai_widgets.seals import CandidatePool, Seals


class NoSearch:
    """An index that fails the test if a round searches it."""

    def search(self, v, k):
        raise AssertionError("searched during a round although a kNN table was given")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    return X, NeighborIndex(kind="flat").fit(X)


def test_knn_table_is_exact_knn_without_self(data):
    X, index = data
    table = index.knn_table(9)
    assert table.shape == (600, 9) and table.dtype == np.int32
    d = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    expect = np.argsort(d, axis=1, kind="stable")[:, :9]
    assert (table != np.arange(600)[:, None]).all()
    agree = np.mean([len(set(a) & set(b)) / 9 for a, b in zip(table, expect)])
    assert agree == 1.0
    with pytest.raises(ValueError, match="k=600"):
        index.knn_table(600)


def test_pool_from_table_equals_searched_pool_under_labels_and_retractions(data):
    X, index = data
    table = index.knn_table(12)
    searched = CandidatePool(X, index, k=12)
    looked_up = CandidatePool(X, NoSearch(), k=12, graph=table)
    rng = np.random.default_rng(1)
    labeled = set()
    for _ in range(8):
        labeled |= set(rng.choice(600, 12).tolist())
        if len(labeled) > 20:                       # undo a few
            labeled -= set(rng.choice(sorted(labeled), 4, replace=False).tolist())
        searched.update(sorted(labeled))
        looked_up.update(sorted(labeled))
        np.testing.assert_array_equal(looked_up.ids(), searched.ids())
        np.testing.assert_array_equal(looked_up.cover_, searched.cover_)
    # a table with fewer columns than k: clear error; wrong N or dtype: clear error
    with pytest.raises(ValueError, match="k >= 13"):
        CandidatePool(X, None, k=13, graph=table)
    with pytest.raises(ValueError, match="N=600"):
        CandidatePool(X, None, k=5, graph=table[:10])
    with pytest.raises(ValueError, match="integer"):
        CandidatePool(X, None, k=5, graph=table.astype(np.float32))


def test_seals_graph_mode_picks_what_search_mode_picks(data):
    X, index = data
    y = (X[:, 0] + 0.3 * X[:, 1] > 1.2).astype(np.int64)
    lab = np.full(600, -1)
    rng = np.random.default_rng(0)
    lab[rng.choice(np.flatnonzero(y == 1), 3, replace=False)] = 1
    lab[rng.choice(np.flatnonzero(y == 0), 20, replace=False)] = 0
    a = Seals.from_arrays(X, index, k=15, strategy="most_likely_positive", target=1, batch=10, explore=0.05)
    b = Seals.from_arrays(X, NoSearch(), k=15, strategy="most_likely_positive", target=1, batch=10,
                          explore=0.05, graph=index.knn_table(15))
    c = Seals.from_arrays(X, index, k=15, strategy="most_likely_positive", target=1, batch=10, explore=0.05,
                          neighbors="graph")        # table computed from the index
    assert b.neighbors == "graph"
    for _ in range(4):
        got = [s.fit(lab).candidates() for s in (a, b, c)]
        assert got[0] == got[1] == got[2]
        lab[got[0]] = y[got[0]]
    assert (b.report()["n_searched"] > 0).all()
    with pytest.raises(ValueError, match="neighbors must be one of"):
        Seals.from_arrays(X, index, neighbors="lookup")
    with pytest.raises(TypeError, match="knn_table"):
        Seals.from_arrays(X, NoSearch(), k=15, target=1, neighbors="graph").fit(lab)


def test_session_caches_the_table_on_disk(tmp_path):
    s = dw.Session.demo(store=tmp_path / "labels.db", cache_dir=tmp_path / "cache")
    y = s.y_true
    table = s.knn_table(20)
    assert table.shape == (len(s), 20)
    assert list((tmp_path / "cache").rglob("knn-*-k20.npy"))
    # a fresh Session over the same data reads the file instead of searching every item
    s2 = dw.Session.demo(store=tmp_path / "labels2.db", cache_dir=tmp_path / "cache")
    s2._index = NoSearch()
    np.testing.assert_array_equal(s2.knn_table(20), table)
    seeds = [int(np.flatnonzero(y == c)[0]) for c in range(len(s.classes))]
    s.label(seeds, [int(y[i]) for i in seeds])
    g = dw.Seals(s, k=20, neighbors="graph").fit()
    q = dw.Seals(s, k=20).fit()
    assert g.candidates() == q.candidates()
