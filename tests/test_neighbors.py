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
