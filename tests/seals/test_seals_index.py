"""HNSW build parameter of NeighborIndex (SEALS' index choice): set, saved and reopened."""
import os

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


def _rare_set(n=20_000, d=32, seed=0):
    """Clustered rows with a rare concept (one small, tight cluster of ~0.5%)."""
    rng = np.random.default_rng(seed)
    C = rng.normal(scale=3, size=(30, d))
    lab = rng.integers(0, 29, n)
    rare = rng.random(n) < 0.005
    lab[rare] = 29
    return (C[lab] + rng.normal(size=(n, d))).astype(np.float32), rare


def test_seals_over_a_memmap_and_an_ivfpq_index_equals_the_in_ram_run_and_finds_the_concept(tmp_path):
    import faiss

    from dcai_widgets.neighbors import ivf_cells
    from dcai_widgets.seals import MISSING, CandidatePool, Seals

    faiss.omp_set_num_threads(1)     # (restored below) FAISS' barriers crawl on a busy shared box

    X, rare = _rare_set()
    np.save(tmp_path / "x.npy", X)
    E = np.load(tmp_path / "x.npy", mmap_mode="r")
    idx = NeighborIndex(kind="ivfpq").fit(E)
    assert ivf_cells(idx, len(X)) is not None     # stratified exploration reads the IVF-PQ lists

    def run(rows):
        lab = np.full(len(X), MISSING, dtype=np.int64)
        rng = np.random.default_rng(0)
        lab[rng.choice(np.flatnonzero(rare), 2, replace=False)] = 1
        lab[rng.choice(np.flatnonzero(~rare), 3, replace=False)] = 0
        sl = Seals.from_arrays(rows, idx, k=30, strategy="most_likely_positive", target=1, batch=10)
        picks = []
        for _ in range(6):
            sl.fit(lab)
            got = sl.candidates()
            picks.append(got)
            lab[got] = rare[got].astype(np.int64)
        return sl, lab, picks

    sl_map, lab_map, picks_map = run(E)
    sl_ram, lab_ram, picks_ram = run(X)
    assert sl_map.X is E and isinstance(sl_map.pool_.X, np.memmap)
    assert picks_map == picks_ram                       # same rows, same answers
    assert (lab_map == 1).sum() >= 20                   # from 2 seeds to most of ~150 positives' first 60 asks
    labeled = np.flatnonzero(lab_map != MISSING)
    sl_map.fit(lab_map)
    np.testing.assert_array_equal(np.sort(sl_map.pool_.ids()),
                                  CandidatePool.from_scratch(E, idx, labeled, k=30))
    assert len(sl_map._rows.X) < len(X)             # the row buffer holds the pool, not N rows
    faiss.omp_set_num_threads(os.cpu_count() or 1)
