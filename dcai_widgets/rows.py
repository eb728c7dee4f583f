"""Row access over embedding matrices that may not fit in RAM (``np.memmap``, float32 or float16).

Every helper here works on row chunks or gathered rows, never on a temporary of the whole (N, d) matrix:
a 10M x 128 float32 file is 4.8 GiB, and ``np.isfinite(X)``, ``X.astype(np.float32)``, ``X.copy()`` or
``X[all_ids]`` would each allocate that much (or more) in anonymous memory, where a memory-mapped file
only occupies the page cache, which the OS can drop.  Engines read rows by id (``take_rows``) and scan in
chunks (``iter_chunks``); ``exact_knn`` is the brute-force reference search that index recall is measured
against, done chunk by chunk.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CHUNK_ROWS = 131_072   # rows per chunk: 64 MiB of float32 at d=128; bounded work, few Python round trips
CHUNK_BYTES = 64 << 20   # float32 bytes per chunk of rows (chunk_rows)
ROW_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


def iter_chunks(n: int, step: int = CHUNK_ROWS) -> Iterator[tuple[int, int]]:
    """(lo, hi) row ranges covering 0..n in steps of ``step``."""
    step = max(1, int(step))
    for lo in range(0, int(n), step):
        yield lo, min(int(n), lo + step)


def chunk_rows(d: int, budget_bytes: int | None = None) -> int:
    """Rows of ``d`` float32 values that fit ``budget_bytes`` (default ``CHUNK_BYTES``; at least 1024)."""
    budget = CHUNK_BYTES if budget_bytes is None else int(budget_bytes)
    return max(1024, budget // max(1, 4 * int(d)))


def is_mapped(X) -> bool:
    """Whether X is (a view of) a memory-mapped file, whose pages do not count as anonymous memory."""
    base = X
    while base is not None:
        if isinstance(base, np.memmap):
            return True
        base = getattr(base, "base", None)
    return False


def nonfinite_rows(X: np.ndarray, step: int | None = None) -> np.ndarray:
    """Rows of a 2-D array holding a NaN or an infinity, checked one chunk of rows at a time (a whole-matrix
    ``np.isfinite`` would allocate N x d booleans: 1.2 GiB at 10M x 128)."""
    X = np.asarray(X)
    if X.dtype.kind not in "fc":
        return np.zeros(0, dtype=np.int64)
    if X.ndim != 2:
        return np.flatnonzero(~np.isfinite(X).reshape(len(X), -1).all(axis=1))
    step = step or chunk_rows(X.shape[1])
    bad = [lo + np.flatnonzero(~np.isfinite(X[lo:hi]).all(axis=1)) for lo, hi in iter_chunks(len(X), step)]
    return np.concatenate(bad).astype(np.int64) if bad else np.zeros(0, dtype=np.int64)


def take_rows(X: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``X[ids]`` as a C-contiguous float32 (m, d) array, reading a memory-mapped X in ascending order
    (one pass over the file's pages, each read once even when an id repeats)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if not len(ids):
        return np.zeros((0, X.shape[1]), dtype=np.float32)
    u, inv = np.unique(ids, return_inverse=True)
    rows = np.take(X, u, axis=0)
    if rows.dtype != np.float32:
        rows = rows.astype(np.float32)
    return np.ascontiguousarray(rows[inv] if len(u) != len(ids) or (u != ids).any() else rows)


def normalized(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as a new float32 array."""
    x = np.array(x, dtype=np.float32, copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _prep(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return normalized(x) if metric == "cosine" else x


def exact_knn(X: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2",
              step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of X for each query, scanning X in chunks (FAISS ``knn`` per chunk, merged).

    Returns (ids (m, k) int64, scores (m, k) float32): squared L2 distances for "l2", inner products of the
    normalised vectors for "cosine" (FAISS' own conventions).  Memory: one chunk plus (m, 2k) results."""
    import faiss

    q = _prep(queries, metric)
    m, n, k = len(q), len(X), int(min(k, len(X)))
    ip = metric == "cosine"
    best_d = np.full((m, k), -np.inf if ip else np.inf, dtype=np.float32)
    best_i = np.full((m, k), -1, dtype=np.int64)
    for lo, hi in iter_chunks(n, step or chunk_rows(X.shape[1])):
        xb = _prep(X[lo:hi], metric)
        kk = min(k, hi - lo)
        if ip:
            d, i = faiss.knn(q, xb, kk, metric=faiss.METRIC_INNER_PRODUCT)
        else:
            d, i = faiss.knn(q, xb, kk)
        D = np.concatenate([best_d, d], axis=1)
        I = np.concatenate([best_i, i + lo], axis=1)
        o = np.argsort(-D if ip else D, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(D, o, axis=1), np.take_along_axis(I, o, axis=1)
    return best_i, best_d


def rerank(X: np.ndarray, queries: np.ndarray, cand: np.ndarray, k: int, metric: str = "l2",
           budget_rows: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Exact re-ranking of a short list: each query's candidate ids (m, c) (-1 = none) scored with the true
    distance to their rows of X (read by id, e.g. from a memory-mapped file), best k kept.

    Returns (ids (m, k) int64, scores (m, k) float32) in FAISS' conventions (squared L2, or inner product of
    normalised vectors for "cosine"), -1 / inf padding where a query had fewer than k candidates.  Queries
    are processed in blocks whose gathered rows stay under ``budget_rows``."""
    q = _prep(queries, metric)
    cand = np.asarray(cand, dtype=np.int64)
    m, c = cand.shape
    k = int(k)
    ip = metric == "cosine"
    out_i = np.full((m, k), -1, dtype=np.int64)
    out_d = np.full((m, k), -np.inf if ip else np.inf, dtype=np.float32)
    block = max(1, int(budget_rows) // max(1, c))
    for lo, hi in iter_chunks(m, block):
        ids = cand[lo:hi]
        valid = ids >= 0
        flat = np.where(valid, ids, 0).ravel()
        u, inv = np.unique(flat, return_inverse=True)
        V = _prep(take_rows(X, u), metric)
        qb = q[lo:hi]
        if ip:
            s = np.einsum("qd,qcd->qc", qb, V[inv].reshape(hi - lo, c, -1))
            s = np.where(valid, s, -np.inf)
            o = np.argsort(-s, axis=1, kind="stable")[:, :k]
        else:
            diff = V[inv].reshape(hi - lo, c, -1) - qb[:, None, :]
            s = np.einsum("qcd,qcd->qc", diff, diff)
            s = np.where(valid, s, np.inf)
            o = np.argsort(s, axis=1, kind="stable")[:, :k]
        kk = o.shape[1]
        out_i[lo:hi, :kk] = np.where(np.take_along_axis(valid, o, axis=1), np.take_along_axis(ids, o, axis=1), -1)
        out_d[lo:hi, :kk] = np.take_along_axis(s, o, axis=1)
    return out_i, out_d
