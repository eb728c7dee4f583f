"""FAISS nearest-neighbour index: exact below a size threshold, IVF (or HNSW) above; L2 or cosine.

Distances are true distances: Euclidean for "l2" (FAISS returns squared values; we take the root) and
1 - cosine similarity for "cosine". The index can be saved beside the embeddings and reopened.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

METRICS = ("l2", "cosine")
KINDS = ("auto", "flat", "ivf", "hnsw")


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


class NeighborIndex:
    """k-nearest-neighbour search over a fixed set of vectors, backed by FAISS.

    kind="auto" picks an exact flat index when N <= exact_below and an IVF index above it; "hnsw" is
    available for very large, read-mostly data. Parameters follow scikit-learn conventions; `fit`
    builds the index and learned state ends in `_`.
    """

    def __init__(self, kind: str = "auto", metric: str = "l2", exact_below: int = 50_000,
                 nlist: int | None = None, nprobe: int | None = None, hnsw_m: int = 32,
                 ef_search: int = 128, seed: int = 0, ef_construction: int = 40):
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
        self.kind, self.metric, self.exact_below = kind, metric, int(exact_below)
        self.nlist, self.nprobe, self.hnsw_m, self.ef_search, self.seed = nlist, nprobe, hnsw_m, ef_search, seed
        self.ef_construction = int(ef_construction)

    # -- build ---------------------------------------------------------------------------------
    def _prep(self, x: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            import faiss

            x = x.copy()
            faiss.normalize_L2(x)
        return x

    def fit(self, X) -> NeighborIndex:
        import faiss

        X = _as_matrix(X, name="embeddings")
        if len(X) == 0:
            raise ValueError("cannot index an empty set of vectors")
        n, d = X.shape
        kind = self.kind if self.kind != "auto" else ("flat" if n <= self.exact_below else "ivf")
        xp = self._prep(X)
        ip = self.metric == "cosine"
        if kind == "flat":
            index = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2)
            index.hnsw.efSearch = int(self.ef_search)
            index.hnsw.efConstruction = int(self.ef_construction)
        else:
            nlist = int(self.nlist or max(1, min(n // 39, int(4 * math.sqrt(n)))))
            quant = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
            index = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2)
            rng = np.random.default_rng(self.seed)
            sample = xp if n <= 64 * nlist else xp[np.sort(rng.choice(n, 64 * nlist, replace=False))]
            index.cp.seed = int(self.seed)
            index.train(sample)
            index.nprobe = int(self.nprobe or max(8, nlist // 32))
        index.add(xp)
        self.index_, self.kind_, self.n_, self.d_ = index, kind, n, d
        self.X_ = X
        return self

    # -- search --------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "index_"):
            raise RuntimeError("the index is not built yet; call fit(X) first")

    def search(self, vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest indexed items of each query vector: (ids (m, k) int64, distances (m, k) float32)."""
        self._check_fitted()
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if k > self.n_:
            raise ValueError(f"k={k} is larger than the number of items ({self.n_}); use k <= {self.n_}")
        q = self._prep(_as_matrix(vectors, self.d_, name="query vectors"))
        dist, ids = self.index_.search(q, k)
        missing = ids < 0
        if missing.any() and self.kind_ == "ivf":  # too few items in the probed lists: widen the search
            rows = np.where(missing.any(axis=1))[0]
            old = self.index_.nprobe
            self.index_.nprobe = self.index_.nlist
            dist[rows], ids[rows] = self.index_.search(q[rows], k)
            self.index_.nprobe = old
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

    def tune(self, k: int = 10, target_recall: float = 0.95, n_queries: int = 200, seed: int = 0) -> dict:
        """Smallest nprobe (IVF) or efSearch (HNSW) whose recall@k against exact search reaches
        target_recall on a sample of indexed items; sets it and returns {setting: recall}. Flat: {}."""
        import faiss

        self._check_fitted()
        if self.kind_ == "flat":
            return {}
        k = min(int(k), self.n_)
        rng = np.random.default_rng(seed)
        q = self.X_[np.sort(rng.choice(self.n_, min(n_queries, self.n_), replace=False))]
        qp = self._prep(np.ascontiguousarray(q))
        exact = faiss.IndexFlatIP(self.d_) if self.metric == "cosine" else faiss.IndexFlatL2(self.d_)
        xp = self._prep(self.X_)
        for lo in range(0, self.n_, 262_144):
            exact.add(xp[lo:lo + 262_144])
        _, truth = exact.search(qp, k)
        del exact, xp
        if self.kind_ == "ivf":
            settings, attr, obj = [p for p in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
                                    if p <= self.index_.nlist], \
                "nprobe", self.index_
        else:
            settings, attr, obj = [16, 32, 64, 128, 256, 512], "efSearch", self.index_.hnsw
        found = {}
        for s in settings:
            setattr(obj, attr, int(s))
            _, got = self.index_.search(qp, k)
            found[s] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth)]))
            if found[s] >= target_recall:
                break
        best = next((s for s, r in found.items() if r >= target_recall), settings[-1])
        setattr(obj, attr, int(best))
        if self.kind_ == "ivf":
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
        params = {k: getattr(self, k) for k in ("kind", "metric", "exact_below", "nlist", "nprobe",
                                                "hnsw_m", "ef_search", "seed", "ef_construction")}
        params.update(kind_=self.kind_, n_=self.n_, d_=self.d_)
        path.with_name(path.name + ".json").write_text(json.dumps(params))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, X) -> NeighborIndex:
        """Reopen a saved index over the same vectors X (kept for search by id)."""
        import faiss

        path = Path(path)
        meta_path = path.with_name(path.name + ".json")
        if not path.exists() or not meta_path.exists():
            raise FileNotFoundError(f"no saved index at {str(path)!r}")
        p = json.loads(meta_path.read_text())
        self = cls(**{k: p[k] for k in ("kind", "metric", "exact_below", "nlist", "nprobe",
                                        "hnsw_m", "ef_search", "seed", "ef_construction") if k in p})
        X = _as_matrix(X, name="embeddings")
        if X.shape != (p["n_"], p["d_"]):
            raise ValueError(f"saved index {str(path)!r} is over {p['n_']}x{p['d_']} vectors, "
                             f"not {X.shape[0]}x{X.shape[1]}; rebuild it")
        self.index_ = faiss.read_index(str(path))
        self.kind_, self.n_, self.d_, self.X_ = p["kind_"], p["n_"], p["d_"], X
        return self

    def __len__(self) -> int:
        return getattr(self, "n_", 0)
