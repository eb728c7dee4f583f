"""The sampled map (UMAP on a sample, the rest placed by FAISS kNN): consistent placement, determinism,
the on-disk cache (reused; rebuilt when the embeddings change) and the dispatch from `project_2d`."""
import numpy as np
import pytest

from dcai_widgets import mapping, mapping_scale
from dcai_widgets.mapping_scale import SampledMap, embeddings_key, sampled_map


@pytest.fixture(scope="module")
def blobs():
    """3,000 points in 8 well-separated clusters in 16-d, and their cluster."""
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=4.0, size=(8, 16))
    y = rng.integers(0, 8, 3000)
    return (centres[y] + rng.normal(size=(3000, 16))).astype(np.float32), y


@pytest.fixture(scope="module")
def fitted(blobs):
    X, _ = blobs
    est = SampledMap(sample_size=500, seed=0, progress=False)
    return est, est.fit_transform(X)


def map_agreement(Y, y, rows, k=10):
    """Share of each row's k nearest map neighbours (among all items) in the row's cluster."""
    from sklearn.neighbors import NearestNeighbors

    nb = NearestNeighbors(n_neighbors=k + 1).fit(Y).kneighbors(Y[rows], return_distance=False)[:, 1:]
    return float((y[nb] == y[rows, None]).mean())


def test_placed_items_land_among_their_neighbours(blobs, fitted):
    X, y = blobs
    est, Y = fitted
    assert Y.shape == (3000, 2) and Y.dtype == np.float32 and np.isfinite(Y).all()
    placed = np.setdiff1d(np.arange(3000), est.sample_ids_)
    assert len(est.sample_ids_) == 500 and len(placed) == 2500
    # sample rows keep their fitted positions; placed rows sit among their own cluster on the map
    assert np.array_equal(Y[est.sample_ids_], est.sample_map_)
    assert map_agreement(Y, y, placed) > 0.97
    # each placed item is nearer (on the map) to its embedding-space nearest sample point than to a
    # typical sample point: the layout of the sample is kept, not only the clusters
    nearest = est.index_.search(X[placed], 1)[0][:, 0]
    d_near = np.linalg.norm(Y[placed] - est.sample_map_[nearest], axis=1)
    spread = np.linalg.norm(est.sample_map_ - est.sample_map_.mean(0), axis=1).mean()
    assert np.median(d_near) < 0.1 * spread
    # local structure, not only clusters: more of each item's 10-NN kept than by putting every placed
    # item on a random sample point of its own cluster
    rng = np.random.default_rng(0)
    by_cluster = [est.sample_ids_[y[est.sample_ids_] == c] for c in range(8)]
    cluster_only = Y.copy()
    cluster_only[placed] = Y[[rng.choice(by_cluster[c]) for c in y[placed]]]
    cluster_only[placed] += rng.normal(scale=1e-3, size=(len(placed), 2))
    kept = mapping.neighbour_preservation(X, Y, sample=600)
    chance = mapping.neighbour_preservation(X, cluster_only, sample=600)
    assert kept > 2 * chance, (kept, chance)


def test_same_seed_same_map_and_transform_in_chunks_is_the_same(blobs, fitted):
    X, _ = blobs
    _, Y = fitted
    again = SampledMap(sample_size=500, seed=0, progress=False).fit_transform(X)
    assert np.array_equal(again, Y)
    est = SampledMap(sample_size=500, seed=0, chunk_size=257, progress=False).fit(X)
    out = est.transform(X)
    out[est.sample_ids_] = est.sample_map_
    assert np.array_equal(out, Y)


def test_the_cache_is_reused_and_rebuilt_when_the_embeddings_change(blobs, tmp_path, monkeypatch):
    X, _ = blobs
    X = X[:1200].copy()
    first = sampled_map(X, cache_dir=tmp_path, sample_size=300, progress=False)
    files = list(tmp_path.glob("map-sampled-*.npy"))
    assert len(files) == 1

    def no_fit(self, X):
        raise AssertionError("the cached map should have been reused")

    monkeypatch.setattr(SampledMap, "fit", no_fit)
    assert np.array_equal(sampled_map(X, cache_dir=tmp_path, sample_size=300, progress=False), first)
    X2 = X.copy()
    X2[7, 3] += 1.0                      # one value changes: another key, a new map
    assert embeddings_key(X2) != embeddings_key(X)
    with pytest.raises(AssertionError, match="reused"):
        sampled_map(X2, cache_dir=tmp_path, sample_size=300, progress=False)
    monkeypatch.undo()
    second = sampled_map(X2, cache_dir=tmp_path, sample_size=300, progress=False)
    assert len(list(tmp_path.glob("map-sampled-*.npy"))) == 2 and second.shape == first.shape
    # other settings are another map too
    sampled_map(X, cache_dir=tmp_path, sample_size=301, progress=False)
    assert len(list(tmp_path.glob("map-sampled-*.npy"))) == 3


def test_embeddings_key_reads_chunks_and_sees_dtype_and_shape(tmp_path, monkeypatch):
    import dcai_widgets.store.cache as cache

    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.save(tmp_path / "x.npy", X)
    assert embeddings_key(np.load(tmp_path / "x.npy", mmap_mode="r")) == embeddings_key(X)   # from the mapped pages
    W = np.arange(80, dtype=np.float32).reshape(10, 8)
    monkeypatch.setattr(cache, "HASH_CHUNK_BYTES", 3 * 16)        # a non-contiguous view, 3 rows at a time
    assert embeddings_key(W[:, ::2]) == embeddings_key(np.ascontiguousarray(W[:, ::2]))
    monkeypatch.setattr(cache, "HASH_CHUNK_BYTES", 1000 * 16)
    assert embeddings_key(W[:, ::2]) == embeddings_key(np.ascontiguousarray(W[:, ::2]))
    assert embeddings_key(X) != embeddings_key(X.astype(np.float64))
    assert embeddings_key(X) != embeddings_key(X.reshape(20, 2))


def test_project_2d_builds_the_sampled_map_above_the_threshold(blobs, monkeypatch):
    X, y = blobs
    assert mapping.map_method(mapping_scale.SAMPLED_ABOVE) != "sampled"
    assert mapping.map_method(mapping_scale.SAMPLED_ABOVE + 1) == "sampled"
    monkeypatch.setattr(mapping_scale, "SAMPLED_ABOVE", 2000)

    def no_graph(k):
        raise AssertionError("the sampled map needs no kNN graph of all items")

    Y = mapping.project_2d(X, no_graph, k=15, seed=0)
    assert Y.shape == (3000, 2) and map_agreement(Y, y, np.arange(0, 3000, 7)) > 0.97


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="2-D"):
        SampledMap().fit(np.zeros(50))
    with pytest.raises(ValueError, match="at least 16"):
        SampledMap().fit(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="sample_size"):
        SampledMap(sample_size=1).fit(np.zeros((50, 3)))
    X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    X[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SampledMap(sample_size=50).fit(X)
    with pytest.raises(RuntimeError, match="fit"):
        SampledMap().transform(X)
    with pytest.raises(ValueError, match="metric"):
        SampledMap(metric="manhattan").fit(X)


def test_a_large_session_gets_the_sampled_map_cached_by_its_embeddings(blobs, tmp_path, monkeypatch):
    """Session.map above the threshold: the sampled map (no kNN graph of all items), saved in the cache
    keyed by the embeddings' content, reopened by a new session, rebuilt for other embeddings."""
    import dcai_widgets as dw

    X, y = blobs
    monkeypatch.setattr(mapping_scale, "SAMPLED_ABOVE", 2000)
    monkeypatch.setattr(mapping_scale, "SAMPLE_SIZE", 400)
    fits = []
    real_fit = SampledMap.fit
    monkeypatch.setattr(SampledMap, "fit", lambda self, X: fits.append(len(X)) or real_fit(self, X))

    def session(emb, name):
        return dw.Session.from_embeddings(emb, [str(c) for c in range(8)], store=tmp_path / f"{name}.db",
                                          cache_dir=tmp_path / "cache")

    m1 = session(X, "a").map
    assert fits == [3000] and m1.shape == (3000, 2) and map_agreement(m1, y, np.arange(0, 3000, 7)) > 0.97
    m2 = session(X.copy(), "b").map
    assert fits == [3000] and np.array_equal(m1, m2)          # reopened from the cache, not rebuilt
    X3 = X.copy()
    X3[0, 0] += 0.5
    session(X3, "c").map
    assert fits == [3000, 3000]                                 # other embeddings: a new map
