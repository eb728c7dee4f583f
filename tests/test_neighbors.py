import numpy as np
import pytest

from dcai_widgets.neighbors import NeighborIndex


def _brute(X, q, k):
    d = ((q[:, None, :] - X[None]) ** 2).sum(-1)
    return np.argsort(d, axis=1)[:, :k]


def test_flat_is_exact():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 16)).astype(np.float32)
    idx = NeighborIndex().fit(X)
    assert idx.kind_ == "flat"
    ids, d = idx.search(X[:20], 5)
    assert np.array_equal(ids, _brute(X, X[:20], 5))
    assert np.allclose(d[:, 0], 0, atol=1e-3)


def test_ivf_above_threshold_has_high_recall():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=5, size=(40, 32))
    X = (centers[rng.integers(0, 40, 20000)] + rng.normal(size=(20000, 32))).astype(np.float32)
    idx = NeighborIndex(exact_below=10_000).fit(X)
    assert idx.kind_ == "ivf"
    q = X[:200]
    got, _ = idx.search(q, 10)
    truth = _brute(X, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])
    assert recall > 0.9


def test_cosine_and_hnsw_and_save_load(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    cos = NeighborIndex(metric="cosine").fit(X)
    ids, d = cos.search(X[:1] * 7.0, 1)  # scale does not matter for cosine
    assert ids[0, 0] == 0 and abs(d[0, 0]) < 1e-5
    h = NeighborIndex(kind="hnsw").fit(X)
    assert h.search(X[:5], 1)[0][:, 0].tolist() == [0, 1, 2, 3, 4]
    path = h.save(tmp_path / "i.faiss")
    back = NeighborIndex.load(path, X)
    assert back.kind_ == "hnsw" and np.array_equal(back.search(X[:5], 3)[0], h.search(X[:5], 3)[0])
    with pytest.raises(ValueError, match="rebuild"):
        NeighborIndex.load(path, X[:10])


def test_search_ids_excludes_self_and_knn_graph_starts_with_self():
    X = np.random.default_rng(2).normal(size=(100, 4)).astype(np.float32)
    idx = NeighborIndex().fit(X)
    ids, _ = idx.search_ids([3, 4], 5)
    assert 3 not in ids[0] and 4 not in ids[1] and ids.shape == (2, 5)
    g, gd = idx.knn_graph(6)
    assert (g[:, 0] == np.arange(100)).all() and (gd[:, 0] == 0).all()


def test_bad_input():
    with pytest.raises(ValueError, match="unknown index kind"):
        NeighborIndex(kind="lsh")
    with pytest.raises(ValueError, match="unknown metric"):
        NeighborIndex(metric="manhattan")
    X = np.zeros((10, 3), np.float32)
    idx = NeighborIndex().fit(X)
    with pytest.raises(ValueError, match="dimension"):
        idx.search(np.zeros((1, 4)), 2)
    with pytest.raises(ValueError, match="larger than"):
        idx.search(np.zeros((1, 3)), 11)
    with pytest.raises(ValueError, match="NaN"):
        idx.search(np.full((1, 3), np.nan), 2)
    with pytest.raises(ValueError, match="empty"):
        NeighborIndex().fit(np.zeros((0, 3)))
    with pytest.raises(RuntimeError, match="fit"):
        NeighborIndex().search(X, 1)


# -- IVF-PQ with exact re-ranking (issue 18) ---------------------------------------------------------
@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """One OpenMP thread: on a busy shared box FAISS' barriers made two threads train many times slower."""
    import faiss

    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(old)


def _clustered(n=12_000, d=32, k=40, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3, size=(k, d))
    return (centers[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_auto_picks_ivfpq_when_a_copy_would_not_fit_the_budget():
    X = _clustered()
    assert NeighborIndex(exact_below=1000, flat_bytes=X.nbytes).fit(X[:5000]).kind_ == "ivf"
    idx = NeighborIndex(exact_below=1000, flat_bytes=X.nbytes // 2).fit(X)
    assert idx.kind_ == "ivfpq"
    assert idx.index_.code_size == 32 // 4     # d/4 bytes per vector, not 4 d


@pytest.mark.parametrize("metric, opq", [("l2", False), ("cosine", False)])
def test_ivfpq_with_reranking_has_high_recall_and_exact_distances(metric, opq):
    X = _clustered()
    idx = NeighborIndex(kind="ivfpq", metric=metric, opq=opq).fit(X)
    assert idx.recall(k=50, n_queries=100) >= 0.95
    flat = NeighborIndex(kind="flat", metric=metric).fit(X)
    ids, dist = idx.search_ids(np.arange(30), 10)
    ids_f, dist_f = flat.search_ids(np.arange(30), 10)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(ids.tolist(), ids_f.tolist())]) >= 9
    for a, da, b, db in zip(ids, dist, ids_f, dist_f):     # re-ranked: true distances, nearest first
        true = dict(zip(b.tolist(), db.tolist()))
        got = [(d, true[i]) for i, d in zip(a.tolist(), da.tolist()) if i in true]
        np.testing.assert_allclose([g for g, _ in got], [t for _, t in got], rtol=1e-4, atol=1e-5)
        assert (np.diff(da) >= -1e-6).all()
    assert (ids != np.arange(30)[:, None]).all()


def test_ivfpq_without_reranking_is_worse_and_tune_reaches_the_target():
    X = _clustered(d=64)
    rough = NeighborIndex(kind="ivfpq", pq_m=4, rerank=1).fit(X)     # 4 bytes per vector, no re-ranking
    fine = NeighborIndex(kind="ivfpq", pq_m=4, rerank=20).fit(X)
    r_rough, r_fine = rough.recall(k=20, n_queries=100), fine.recall(k=20, n_queries=100)
    assert r_fine > r_rough + 0.1 and r_fine >= 0.9
    found = fine.tune(k=20, target_recall=0.9)
    assert max(found.values()) >= 0.9 and fine.nprobe == min(s for s, r in found.items() if r >= 0.9)


def test_ivfpq_saved_and_reopened_over_a_memmap_gives_the_same_results(tmp_path):
    X = _clustered()
    np.save(tmp_path / "x.npy", X)
    E = np.load(tmp_path / "x.npy", mmap_mode="r")
    idx = NeighborIndex(kind="ivfpq", rerank=7, nprobe=4).fit(E)
    idx.save(tmp_path / "i.faiss")
    back = NeighborIndex.load(tmp_path / "i.faiss", E)
    assert (back.kind_, back.rerank, back.nprobe) == ("ivfpq", 7, 4)
    assert back.X_ is E
    a, da = idx.search_ids(np.arange(50), 10)
    b, db = back.search_ids(np.arange(50), 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(da, db)
    with pytest.raises(ValueError, match="rebuild"):
        NeighborIndex.load(tmp_path / "i.faiss", E[:100])
    with pytest.raises(ValueError, match="rerank"):
        NeighborIndex(kind="ivfpq", rerank=0)


def test_opq_rotation_and_padding_for_a_dimension_pq_cannot_split(tmp_path):
    """OPQ (opt-in, or needed when pq_m does not divide d: the rotation pads d up to a multiple)."""
    X = _clustered(n=4000, d=18, k=10)
    idx = NeighborIndex(kind="ivfpq", pq_m=4, nlist=16).fit(X)     # 18 is not a multiple of 4: 20 after OPQ
    assert type(idx.index_).__name__ == "IndexPreTransform"
    assert idx.recall(k=20, n_queries=50) >= 0.9
    idx.save(tmp_path / "o.faiss")
    back = NeighborIndex.load(tmp_path / "o.faiss", X)
    np.testing.assert_array_equal(back.search_ids(np.arange(5), 5)[0], idx.search_ids(np.arange(5), 5)[0])
