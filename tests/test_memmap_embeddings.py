"""Embeddings out of RAM: the chunked memory-mapped writer, memory-mapped sessions, and the row helpers
(issue 18).  Small sizes; the 10M figures are in benchmarks/scale_parts/memory.py."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.data import VectorItems
from dcai_widgets.embed.memmap import open_embeddings, write_embeddings
from dcai_widgets.neighbors import NeighborIndex
from dcai_widgets.rows import exact_knn, nonfinite_rows, rerank, take_rows


def clustered(n: int, d: int = 16, k: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(k, d)).astype(np.float32) * 3
    return (C[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)


def memmap_of(tmp_path, X: np.ndarray, name: str = "emb.npy", dtype=np.float32) -> np.memmap:
    path = tmp_path / name
    np.save(path, X.astype(dtype))
    return open_embeddings(path)


# -- the writer ------------------------------------------------------------------------------------
def test_write_embeddings_chunks_into_a_memmap_equal_to_encoding_in_ram(tmp_path):
    X = clustered(1000)
    W = np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32)
    calls = []

    def encode(lo, hi):
        calls.append((lo, hi))
        return X[lo:hi] @ W

    E = write_embeddings(encode, len(X), tmp_path / "e.npy", chunk=300, progress=False)
    assert isinstance(E, np.memmap) and E.dtype == np.float32 and E.shape == (1000, 8)
    assert calls == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    np.testing.assert_allclose(E, X @ W, rtol=1e-6)
    assert not (tmp_path / "e.npy.partial").exists()


def test_write_embeddings_float16_opt_in_halves_the_file(tmp_path):
    X = clustered(500)
    E = write_embeddings(lambda lo, hi: X[lo:hi], len(X), tmp_path / "h.npy", dtype="float16", progress=False)
    assert E.dtype == np.float16 and isinstance(E, np.memmap)
    np.testing.assert_allclose(E.astype(np.float32), X, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="float16's range"):
        write_embeddings(lambda lo, hi: X[lo:hi] * 1e5, len(X), tmp_path / "big.npy", dtype="float16",
                         progress=False)


def test_write_embeddings_resumes_after_an_interrupted_run(tmp_path):
    X = clustered(1000)
    seen = []

    def failing(lo, hi):
        if lo >= 500:
            raise KeyboardInterrupt
        seen.append(lo)
        return X[lo:hi]

    with pytest.raises(KeyboardInterrupt):
        write_embeddings(failing, len(X), tmp_path / "r.npy", chunk=250, progress=False)
    assert not (tmp_path / "r.npy").exists()     # never a partial file under the final name
    again = []
    E = write_embeddings(lambda lo, hi: again.append(lo) or X[lo:hi], len(X), tmp_path / "r.npy", chunk=250,
                         progress=False)
    assert again == [500, 750]     # only the chunks not written before
    np.testing.assert_array_equal(E, X)


@pytest.mark.parametrize("bad, match", [
    (lambda lo, hi: np.zeros((hi - lo + 1, 4)), "shape"),
    (lambda lo, hi: np.full((hi - lo, 4), np.nan), "NaN"),
    (lambda lo, hi: np.array([["a"]] * (hi - lo), dtype=object), "dtype"),
])
def test_write_embeddings_names_a_bad_chunk(tmp_path, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        write_embeddings(bad, 100, tmp_path / "b.npy", chunk=40, progress=False)


def test_open_embeddings_refuses_what_is_not_a_2d_float_matrix(tmp_path):
    np.save(tmp_path / "i.npy", np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="float32 or float16"):
        open_embeddings(tmp_path / "i.npy")
    with pytest.raises(FileNotFoundError):
        open_embeddings(tmp_path / "missing.npy")


# -- sessions over a memory-mapped file -------------------------------------------------------------
def test_session_over_a_memmap_keeps_it_mapped_and_matches_the_in_ram_session(tmp_path):
    X = clustered(3000)
    E = memmap_of(tmp_path, X)
    s_map = dw.Session.from_embeddings(E, classes=["a", "b"], store=tmp_path / "m.db", cache_dir=tmp_path / "c1")
    s_path = dw.Session.from_embeddings(str(tmp_path / "emb.npy"), classes=["a", "b"], store=tmp_path / "p.db",
                                        cache_dir=tmp_path / "c2")
    s_ram = dw.Session.from_embeddings(X, classes=["a", "b"], store=tmp_path / "r.db", cache_dir=tmp_path / "c3")
    assert s_map.embeddings is E
    assert isinstance(s_path.embeddings, np.memmap)
    assert s_map.fingerprint == s_ram.fingerprint == s_path.fingerprint     # same data, same label store
    assert s_map.index.X_ is E     # the index reads rows from the file, no copy of the matrix
    for s in (s_map, s_path):
        ids, dist = s.neighbors([0, 5, 17], k=10)
        ids_r, dist_r = s_ram.neighbors([0, 5, 17], k=10)
        np.testing.assert_array_equal(ids, ids_r)
        np.testing.assert_allclose(dist, dist_r, rtol=1e-5)


def test_session_encodes_large_sets_in_chunks_into_a_memmapped_cache(tmp_path, monkeypatch):
    import dcai_widgets.session as session_mod
    from dcai_widgets.embed.encoders import CallableEncoder

    monkeypatch.setattr(session_mod, "EMBED_MEMMAP_ROWS", 100)
    X = clustered(700)
    enc = CallableEncoder(lambda b: np.asarray(b) * 2.0, batch_size=64, key="double")
    s = dw.Session(VectorItems(X), ["a", "b"], encoder=enc,
                   store=tmp_path / "s.db", cache_dir=tmp_path / "cache", embedding_dtype="float16")
    E = s.embeddings
    assert isinstance(E, np.memmap) and E.dtype == np.float16
    assert list(s.cache_dir.glob("emb-double-float16.npy"))
    np.testing.assert_allclose(E.astype(np.float32), 2 * X, rtol=1e-3, atol=1e-2)
    # a second session reopens the file instead of encoding again
    enc2 = CallableEncoder(lambda b: pytest.fail("encoded again"), key="double")
    s2 = dw.Session(VectorItems(X), ["a", "b"], encoder=enc2, store=tmp_path / "s2.db",
                    cache_dir=tmp_path / "cache", embedding_dtype="float16")
    np.testing.assert_array_equal(s2.embeddings, E)
    with pytest.raises(ValueError, match="embedding_dtype"):
        dw.Session(VectorItems(X), ["a", "b"], encoder=enc, embedding_dtype="int8", store=tmp_path / "x.db")


def test_a_float16_memmap_flows_through_index_and_seals_without_widening_the_matrix(tmp_path, monkeypatch):
    """numpy reports its allocations to tracemalloc: a float32 copy of the float16 file (2 x its size), an
    N x d boolean finite check, or an N x d row buffer would each show up in the peak.  Chunks are made
    small (256 KiB) so that one chunk is far below the matrix, as at 10M."""
    import dcai_widgets.rows as rows_mod
    from dcai_widgets.seals import MISSING, Seals

    monkeypatch.setattr(rows_mod, "CHUNK_BYTES", 256 << 10)

    from dcai_widgets._validate import check_embeddings

    def traced(f):
        tracemalloc.start()
        try:
            out = f()
            return out, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    n, d = 80_000, 64
    X = clustered(n, d=d, k=40)
    E = memmap_of(tmp_path, X, dtype=np.float16)
    nbytes32 = n * d * 4
    y = np.zeros(n, dtype=np.int64)
    y[np.argsort(((X - X[0]) ** 2).sum(1))[:300]] = 1     # a compact "rare" concept around item 0
    del X
    lab = np.full(n, MISSING, dtype=np.int64)
    lab[np.flatnonzero(y == 1)[:3]] = 1
    lab[np.flatnonzero(y == 0)[:3]] = 0
    W = memmap_of(tmp_path, clustered(20_000, d=d), "warm.npy", np.float16)     # imports, outside the traces
    Seals.from_arrays(W, NeighborIndex(kind="ivfpq").fit(W), k=50, strategy="most_likely_positive", target=1,
                      batch=10).fit(lab[:20_000])

    checked, peak_check = traced(lambda: check_embeddings(E))
    idx, peak_index = traced(lambda: NeighborIndex(kind="ivfpq").fit(E))
    sl = Seals.from_arrays(E, idx, k=50, strategy="most_likely_positive", target=1, batch=10)
    _, peak_setup = traced(lambda: sl.fit(lab))
    peak_round = 0
    for _ in range(3):
        got = sl.candidates()
        lab[got] = y[got]
        peak_round = max(peak_round, traced(lambda: sl.fit(lab))[1])
    print(f"MiB: check {peak_check / 2**20:.2f} index {peak_index / 2**20:.2f} setup {peak_setup / 2**20:.2f} "
          f"round {peak_round / 2**20:.2f} matrix {nbytes32 / 2**20:.2f}")
    assert checked is E
    assert peak_check < n * d / 8          # an N x d boolean finite check would be n * d bytes
    assert peak_index < nbytes32 / 2       # the training sample and one chunk, not a float32 copy
    assert peak_setup < nbytes32 / 2       # O(N) pool bookkeeping, not N x d
    assert peak_round < nbytes32 / 3        # O(N) label vectors per round (~50 bytes/item), not N x d
    assert idx.X_ is E and sl.X is E
    assert len(sl._rows.X) < n
    assert (lab == 1).sum() > 3      # the search found more of the concept


# -- row helpers ----------------------------------------------------------------------------------
def test_row_helpers_match_their_whole_matrix_versions():
    import faiss

    X = clustered(5000)
    X[[7, 4000], 3] = np.nan
    np.testing.assert_array_equal(nonfinite_rows(X, step=512), [7, 4000])
    X[[7, 4000], 3] = 0.0
    ids = np.array([9, 3, 9, 4999, 0])
    np.testing.assert_array_equal(take_rows(X, ids), X[ids])
    q = X[[1, 2, 3]]
    i_ex, d_ex = exact_knn(X, q, 20, step=777)
    d_ref, i_ref = faiss.knn(q, X, 20)
    np.testing.assert_array_equal(i_ex, i_ref)
    np.testing.assert_allclose(d_ex, d_ref, rtol=1e-5)
    shuffled = np.random.default_rng(0).permuted(i_ref, axis=1)
    cand = np.hstack([shuffled, -np.ones((3, 5), dtype=np.int64)])
    i_rr, _ = rerank(X, q, cand, 10)
    np.testing.assert_array_equal(i_rr, i_ref[:, :10])
