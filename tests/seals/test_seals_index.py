"""HNSW build parameter of NeighborIndex (SEALS' index choice): set, saved and reopened."""
import numpy as np

from dcai_widgets.neighbors import NeighborIndex


def test_hnsw_ef_construction_is_used_saved_and_reopened(tmp_path):
    X = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    idx = NeighborIndex(kind="hnsw", hnsw_m=8, ef_construction=64, ef_search=32).fit(X)
    assert idx.index_.hnsw.efConstruction == 64
    ids, _ = idx.search(X[:5], 6)
    assert (ids[:, 0] == np.arange(5)).all()
    idx.save(tmp_path / "i.faiss")
    back = NeighborIndex.load(tmp_path / "i.faiss", X)
    assert back.ef_construction == 64 and back.kind_ == "hnsw"
    assert np.array_equal(back.search(X[:5], 6)[0], ids)
