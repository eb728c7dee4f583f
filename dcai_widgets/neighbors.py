"""FAISS nearest-neighbour index: exact below a size threshold, IVF (or HNSW) above, IVF-PQ with exact
re-ranking when the vectors are too large to copy into RAM; L2 or cosine.

Distances are true distances: Euclidean for "l2" (FAISS returns squared values; we take the root) and
1 - cosine similarity for "cosine". The index can be saved beside the embeddings and reopened.

The indexed matrix may be a memory-mapped file (``np.memmap``, float32 or float16): it is validated, added
and searched by id in row chunks (``dcai_widgets.rows``), never copied whole.  The IVF-PQ kind (Jegou et
al., "Product quantization for nearest neighbor search", TPAMI 2011; optionally with OPQ, Ge et al.,
"Optimized product quantization", TPAMI 2014) keeps d/4 bytes per vector in RAM and re-ranks a short list
of ``rerank`` x k candidates with exact distances read from those rows.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .rows import ROW_DTYPES, chunk_rows, exact_knn, iter_chunks, nonfinite_rows, normalized, rerank

METRICS = ("l2", "cosine")
KINDS = ("auto", "flat", "ivf", "ivfpq", "hnsw")
FLAT_BYTES = 1 << 30   # kind="auto": above this many bytes of float32 vectors, IVF-PQ instead of a full copy
PARAMS = ("kind", "metric", "exact_below", "nlist", "nprobe", "hnsw_m", "ef_search", "seed", "ef_construction",
          "pq_m", "opq", "rerank", "flat_bytes")


def _as_matrix(x, d: int | None = None, name: str = "vectors") -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == object or x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d); got shape {x.shape}")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"{name} have dimension {x.shape[1]} but the index has dimension {d}; "
                         "encode them with the same encoder as the items")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def _as_rows(X, name: str = "embeddings", check: bool = True) -> np.ndarray:
    """The indexed (N, d) matrix without copying it when it is float32 or float16 (a memory-mapped file
    stays one); other dtypes are converted to float32 as before.  Finite values are checked in chunks."""
    if not isinstance(X, np.ndarray):
        X = np.asarray(X)
    if X.dtype == object or X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d); got shape {X.shape}")
    if X.dtype not in ROW_DTYPES:
        X = np.ascontiguousarray(X, dtype=np.float32)
    if check and len(nonfinite_rows(X)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return X


def _sample_rows(X: np.ndarray, m: int, seed: int) -> np.ndarray:
    """``m`` rows drawn without replacement (all of them when m >= N), as float32, read in file order."""
    n = len(X)
    if m >= n:
        return np.ascontiguousarray(X[:], dtype=np.float32)
    ids = np.sort(np.random.default_rng(seed).choice(n, m, replace=False))
    return np.ascontiguousarray(np.take(X, ids, axis=0), dtype=np.float32)


def ivf_cells(index, n: int) -> np.ndarray | None:
    """(n,) int64: the IVF list (coarse cell) holding each item, read from the inverted lists of a FAISS
    IVF index (a NeighborIndex or raw; no search: ~0.03 s at 1M).  None for any other index, or when
    the lists do not hold exactly the ids 0..n-1."""
    try:
        import faiss

        ivf = faiss.extract_index_ivf(getattr(index, "index_", index))
        inv = ivf.invlists
        cells = np.full(n, -1, dtype=np.int64)
        for lst in range(ivf.nlist):
            size = inv.list_size(lst)
            if size:
                ids = faiss.rev_swig_ptr(inv.get_ids(lst), size).astype(np.int64)
                if ids.min() < 0 or ids.max() >= n:
                    return None
                cells[ids] = lst
    except Exception:     # no FAISS, not an IVF index, lists not readable
        return None
    return cells if (cells >= 0).all() else None


def _mean_recall(got: np.ndarray, truth, k: int) -> float:
    """Mean fraction of each true top-k found among the returned ids."""
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(got, truth)]))


class NeighborIndex:
    """k-nearest-neighbour search over a fixed set of vectors, backed by FAISS.

    kind="auto" picks an exact flat index when N <= exact_below, an IVF index above it while a float32
    copy of the vectors stays within ``flat_bytes`` (1 GiB: 2M x 128), and IVF-PQ with exact re-ranking
    beyond (10M x 128 float32 is 4.8 GiB; its PQ codes at d/4 bytes are 320 MB).  "hnsw" is available for
    very large, read-mostly data that fits in RAM.  Parameters follow scikit-learn conventions; `fit`
    builds the index and learned state ends in `_`.

    IVF-PQ: ``nlist`` coarse cells (default sqrt(N), 64..1024: on 2 cores each extra cell costs every one
    of the N additions a distance), ``pq_m`` sub-quantizers of 8 bits (default d/4), ``opq`` an OPQ rotation
    learned first, trained on a sample of max(39 nlist, 64 x 256) rows and filled in chunks; a search takes
    ``rerank`` x k candidates from the codes and re-ranks them with exact distances from the indexed rows
    (read by id: a memory-mapped file is fine).
    """

    def __init__(self, kind: str = "auto", metric: str = "l2", exact_below: int = 50_000,
                 nlist: int | None = None, nprobe: int | None = None, hnsw_m: int = 32,
                 ef_search: int = 128, seed: int = 0, ef_construction: int = 40, *, pq_m: int | None = None,
                 opq: bool = False, rerank: int = 10, flat_bytes: int = FLAT_BYTES):
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
        if int(rerank) < 1:
            raise ValueError(f"rerank must be >= 1 (candidates per neighbour asked); got {rerank}")
        self.kind, self.metric, self.exact_below = kind, metric, int(exact_below)
        self.nlist, self.nprobe, self.hnsw_m, self.ef_search, self.seed = nlist, nprobe, hnsw_m, ef_search, seed
        self.ef_construction = int(ef_construction)
        self.pq_m, self.opq, self.rerank, self.flat_bytes = pq_m, bool(opq), int(rerank), int(flat_bytes)

    # -- build ---------------------------------------------------------------------------------
    def _prep(self, x: np.ndarray) -> np.ndarray:
        """Vectors as FAISS gets them: float32, unit-normalised for cosine (always a copy then)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return normalized(x) if self.metric == "cosine" else x

    def _choose_kind(self, n: int, d: int) -> str:
        if self.kind != "auto":
            return self.kind
        if n <= self.exact_below:
            return "flat"
        return "ivf" if n * d * 4 <= self.flat_bytes else "ivfpq"

    def _pq_layout(self, d: int) -> tuple[int, int]:
        """(sub-quantizers, padded dimension): pq_m (default d/4, at least 1) and d rounded up to a multiple
        of it (an OPQ matrix pads the vectors when d is not one)."""
        m = int(self.pq_m or max(1, d // 4))
        if m < 1:
            raise ValueError(f"pq_m must be >= 1; got {self.pq_m}")
        return m, int(math.ceil(d / m) * m)

    def fit(self, X) -> NeighborIndex:
        """Build the index over X (N, d): in RAM or memory-mapped, added in chunks, never copied whole
        (except by the flat, IVF and HNSW kinds, which keep the vectors themselves)."""
        import faiss
        from tqdm.auto import tqdm

        X = _as_rows(X, name="embeddings")
        if len(X) == 0:
            raise ValueError("cannot index an empty set of vectors")
        n, d = X.shape
        kind = self._choose_kind(n, d)
        ip = self.metric == "cosine"
        mt = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
        if kind == "flat":
            index = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, mt)
            index.hnsw.efSearch = int(self.ef_search)
            index.hnsw.efConstruction = int(self.ef_construction)
        elif kind == "ivf":
            nlist = int(self.nlist or max(1, min(n // 39, int(4 * math.sqrt(n)))))
            quant = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
            index = faiss.IndexIVFFlat(quant, d, nlist, mt)
            index.cp.seed = int(self.seed)
            index.train(self._prep(_sample_rows(X, 64 * nlist, self.seed)))
            index.nprobe = int(self.nprobe or max(8, nlist // 32))
        else:
            index = self._ivfpq(X, mt)
        step = chunk_rows(d)
        for lo, hi in tqdm(list(iter_chunks(n, step)), desc=f"index ({kind})", disable=n <= 4 * step,
                           leave=False):
            index.add(self._prep(X[lo:hi]))
        self.index_, self.kind_, self.n_, self.d_ = index, kind, n, d
        self.X_ = X
        return self

    def _ivfpq(self, X: np.ndarray, mt: int):
        """An IVF-PQ index (behind an OPQ rotation when asked or when d needs padding), trained on a sample."""
        import faiss

        n, d = X.shape
        nlist = int(self.nlist or min(1024, max(64, int(math.sqrt(n)))))
        nlist = max(1, min(nlist, n // 39 or 1))
        m, dp = self._pq_layout(d)
        quant = faiss.IndexFlatIP(dp) if mt == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dp)
        ivf = faiss.IndexIVFPQ(quant, dp, nlist, m, 8, mt)
        ivf.cp.seed = int(self.seed)
        ivf.nprobe = int(min(nlist, self.nprobe or 16))
        index = faiss.IndexPreTransform(faiss.OPQMatrix(d, m, dp), ivf) if (self.opq or dp != d) else ivf
        index.train(self._prep(_sample_rows(X, max(39 * nlist, 64 * 256), self.seed)))
        return index

    def _ivf(self):
        """The IVF part of the FAISS index (inside an OPQ pre-transform), or None for flat/HNSW."""
        import faiss

        return faiss.extract_index_ivf(self.index_) if self.kind_ in ("ivf", "ivfpq") else None

    # -- search --------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "index_"):
            raise RuntimeError("the index is not built yet; call fit(X) first")

    def _raw_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS' own (scores, ids) for prepared queries; IVF rows that came back short are searched again
        over every list; IVF-PQ short lists are re-ranked exactly from the indexed rows."""
        kk = min(self.n_, k * self.rerank) if self.kind_ == "ivfpq" else k
        dist, ids = self.index_.search(q, kk)
        missing = (ids[:, :k] < 0).any(axis=1) if kk >= k else (ids < 0).any(axis=1)
        ivf = self._ivf()
        if missing.any() and ivf is not None:  # too few items in the probed lists: widen the search
            rows = np.where(missing)[0]
            old = ivf.nprobe
            ivf.nprobe = ivf.nlist
            try:
                dist[rows], ids[rows] = self.index_.search(q[rows], kk)
            finally:
                ivf.nprobe = old
        if self.kind_ == "ivfpq":
            ids, dist = rerank(self.X_, q, ids, k, self.metric)
        return dist, ids

    def search(self, vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest indexed items of each query vector: (ids (m, k) int64, distances (m, k) float32)."""
        self._check_fitted()
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if k > self.n_:
            raise ValueError(f"k={k} is larger than the number of items ({self.n_}); use k <= {self.n_}")
        q = self._prep(_as_matrix(vectors, self.d_, name="query vectors"))
        dist, ids = self._raw_search(q, k)
        if self.metric == "cosine":
            dist = 1.0 - dist
        else:
            dist = np.sqrt(np.maximum(dist, 0.0))
        return ids.astype(np.int64), dist.astype(np.float32)

    def search_ids(self, ids, k: int, exclude_self: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours of indexed items by id; the item itself is left out when exclude_self."""
        self._check_fitted()
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        bad = ids[(ids < 0) | (ids >= self.n_)]
        if len(bad):
            raise ValueError(f"unknown item id(s) {bad[:5].tolist()}; ids run from 0 to {self.n_ - 1}")
        k = int(k)
        if exclude_self and k > self.n_ - 1:
            raise ValueError(f"k={k} is larger than the number of other items ({self.n_ - 1})")
        got, dist = self.search(self.X_[ids], min(k + int(exclude_self), self.n_))
        if not exclude_self:
            return got, dist
        # drop the item itself; where approximate search missed it, drop the (k+1)-th result instead
        other = got != ids[:, None]
        keep = other & (np.cumsum(other, axis=1) <= k)
        return got[keep].reshape(len(ids), k), dist[keep].reshape(len(ids), k)

    def recall(self, k: int = 100, n_queries: int = 200, seed: int = 0) -> float:
        """Mean recall@k of ``search_ids`` against exact search (a chunked brute-force scan of the indexed
        rows) on ``n_queries`` random indexed items, each excluded from its own results; 1.0 for flat."""
        self._check_fitted()
        k = min(int(k), self.n_ - 1)
        rng = np.random.default_rng(seed)
        qids = np.sort(rng.choice(self.n_, min(int(n_queries), self.n_), replace=False))
        truth, _ = exact_knn(self.X_, self.X_[qids], k + 1, self.metric)
        got, _ = self.search_ids(qids, k)
        return _mean_recall(got, [t[t != q][:k] for t, q in zip(truth, qids)], k)

    def tune(self, k: int = 10, target_recall: float = 0.95, n_queries: int = 200, seed: int = 0) -> dict:
        """Smallest nprobe (IVF, IVF-PQ with its re-ranking) or efSearch (HNSW) whose recall@k against exact
        search reaches target_recall on a sample of indexed items; sets it and returns {setting: recall}.
        Flat: {}."""
        self._check_fitted()
        if self.kind_ == "flat":
            return {}
        k = min(int(k), self.n_)
        rng = np.random.default_rng(seed)
        q = np.ascontiguousarray(self.X_[np.sort(rng.choice(self.n_, min(n_queries, self.n_), replace=False))],
                                 dtype=np.float32)
        truth, _ = exact_knn(self.X_, q, k, self.metric)
        ivf = self._ivf()
        if ivf is not None:
            settings, attr, obj = [p for p in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
                                   if p <= ivf.nlist], "nprobe", ivf
        else:
            settings, attr, obj = [16, 32, 64, 128, 256, 512], "efSearch", self.index_.hnsw
        found = {}
        qp = self._prep(q)
        for s in settings:
            setattr(obj, attr, int(s))
            _, got = self._raw_search(qp, k)
            found[s] = _mean_recall(got, truth, k)
            if found[s] >= target_recall:
                break
        best = next((s for s, r in found.items() if r >= target_recall), settings[-1])
        setattr(obj, attr, int(best))
        if ivf is not None:
            self.nprobe = int(best)
        else:
            self.ef_search = int(best)
        return found

    def knn_graph(self, k: int, executor=None) -> tuple[np.ndarray, np.ndarray]:
        """Each item's k nearest neighbours including itself first (the form UMAP expects).

        ``executor``: None/"local" searches here; "ray", "ray://host:port" or an Executor searches the
        same blocks on Ray actors holding a copy of the index (``dcai_widgets.distributed``)."""
        from tqdm.auto import tqdm

        from .distributed.executor import is_local

        self._check_fitted()
        k = min(int(k), self.n_)
        ids = np.empty((self.n_, k), np.int64)
        dist = np.empty((self.n_, k), np.float32)
        step = 20_000
        if not is_local(executor):
            from .distributed.knn import search_blocks

            search_blocks(self, k, step, executor, "graph", ids, dist)
        else:
            for lo in tqdm(range(0, self.n_, step), desc="kNN graph", disable=self.n_ <= 2 * step, leave=False):
                hi = min(lo + step, self.n_)
                ids[lo:hi], dist[lo:hi] = self.search(self.X_[lo:hi], k)
        # make sure each row starts with the item itself (ties and approximate search may move it)
        rows = np.arange(self.n_)
        not_first = ids[:, 0] != rows
        if not_first.any():
            for r in np.where(not_first)[0]:
                others = ids[r][ids[r] != r][: k - 1]
                od = dist[r][ids[r] != r][: k - 1]
                ids[r, 0], dist[r, 0] = r, 0.0
                ids[r, 1:1 + len(others)], dist[r, 1:1 + len(od)] = others, od
        dist[:, 0] = 0.0
        return ids, dist

    def knn_table(self, k: int, batch: int = 20_000, executor=None) -> np.ndarray:
        """(N, k) int32: each item's k nearest *other* items, nearest first (-1 pads a short row).

        Computed once with the index's current search settings (every OpenMP thread, in batches, with
        a progress bar); SEALS can then look a labeled item's neighbours up instead of searching it.
        At N x k int32 it is about k/d of the embeddings' size (100/128 at 1M x 128 float32).
        """
        from tqdm.auto import tqdm

        self._check_fitted()
        k = int(k)
        if not 1 <= k < self.n_:
            raise ValueError(f"k={k} neighbours asked but there are only {self.n_} items; choose 1 <= k <= {self.n_ - 1}")
        out = np.empty((self.n_, k), np.int32)
        from .distributed.executor import is_local

        if not is_local(executor):   # same batches on Ray actors holding a copy of the index
            from .distributed.knn import search_blocks

            return search_blocks(self, k, batch, executor, "table", out)[0]
        for lo in tqdm(range(0, self.n_, batch), desc="kNN table", disable=self.n_ <= 2 * batch, leave=False):
            hi = min(lo + batch, self.n_)
            out[lo:hi] = self.search_ids(np.arange(lo, hi), k)[0]
        return out

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the FAISS index and its parameters (`path` and `path.json`)."""
        import faiss

        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self.index_, str(tmp))
        os.replace(tmp, path)
        params = {k: getattr(self, k) for k in PARAMS}
        params.update(kind_=self.kind_, n_=self.n_, d_=self.d_)
        path.with_name(path.name + ".json").write_text(json.dumps(params))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, X) -> NeighborIndex:
        """Reopen a saved index over the same vectors X (kept for search by id and IVF-PQ re-ranking; a
        memory-mapped X stays mapped)."""
        import faiss

        path = Path(path)
        meta_path = path.with_name(path.name + ".json")
        if not path.exists() or not meta_path.exists():
            raise FileNotFoundError(f"no saved index at {str(path)!r}")
        p = json.loads(meta_path.read_text())
        self = cls(**{k: p[k] for k in PARAMS if k in p})
        X = _as_rows(X, name="embeddings", check=False)     # checked when the index was built over it
        if X.shape != (p["n_"], p["d_"]):
            raise ValueError(f"saved index {str(path)!r} is over {p['n_']}x{p['d_']} vectors, "
                             f"not {X.shape[0]}x{X.shape[1]}; rebuild it")
        self.index_ = faiss.read_index(str(path))
        self.kind_, self.n_, self.d_, self.X_ = p["kind_"], p["n_"], p["d_"], X
        return self

    def __len__(self) -> int:
        return getattr(self, "n_", 0)
