"""The 2-D map at 1M-10M items: UMAP fitted on a seeded sample, every other item placed from its nearest
sample points' map positions (FAISS), in chunks, cached on disk by the embeddings' content.

Why not UMAP on all N: umap-learn's optimisation grows with N (the 900,000-item map took 969 s on this
2-core machine, RESULTS.md) and its kNN graph is N x k. A sample of a few tens of thousands keeps every
cluster and the rare ones that matter (a concept of 0.1 % has ~50 points in a 50,000 sample).

Why not `UMAP.transform` for the rest: it first places each new point at the membership-weighted mean of
its nearest training points' positions, then refines with ~30 epochs of SGD against the fixed map (McInnes
et al., "UMAP: Uniform Manifold Approximation and Projection", 2018, section 4 and umap-learn's
``transform``). The placement alone is one FAISS search per item and one weighted mean;
`benchmarks/scale_parts/map.py` measures it against ``transform`` on the same sample fit (time per row,
10-NN preservation, cluster agreement) — the "parametric" map here is that kNN regression, as in
"Parametric UMAP" (Sainburg et al., 2021) without the network.

Weights follow UMAP's fuzzy membership shape: ``exp(-(d_j - d_1) / sigma)`` with ``d_1`` the nearest
distance (UMAP's ``rho``) and ``sigma`` the mean gap to it (a closed-form stand-in for UMAP's
binary-searched bandwidth), so an item sits among its nearest sample points, not between clusters.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from .store.cache import content_hash

log = logging.getLogger(__name__)

# items UMAP is fitted on. A concept needs about `n_neighbors` (15) sample points to get its own island:
# at 50,000 that is a concept of 0.03 % or more (the synthetic 0.1 % concept at 1M: all of each rare item's 10
# map neighbours rare; at 20k with a 1,000 sample, ~1 rare sample point, only 7 %: scattered)
SAMPLE_SIZE = 50_000
# `mapping.project_2d` builds the sampled map above this many items: full UMAP took 90 s at 100k and 969 s
# at 900k here (RESULTS.md), the sampled map's cost is UMAP on the sample plus ~90 us per item placed
SAMPLED_ABOVE = 100_000


def embeddings_key(X: np.ndarray) -> str:
    """Content hash of the rows of X (``store.content_hash``: a memory-mapped 10M x 128 file is hashed from
    its mapped pages, never copied into RAM whole). Any changed value, shape or dtype gives another key."""
    return content_hash("rows", X)


class SampledMap:
    """UMAP on a sample + kNN placement of the rest (scikit-learn estimator conventions).

    `fit(X)` draws `sample_size` rows (None: `SAMPLE_SIZE`; seeded), builds their FAISS kNN graph and fits UMAP on it;
    `transform(X)` places rows in chunks of `chunk_size` at the membership-weighted mean of their
    `place_k` nearest sample points' positions (3: fewer neighbours keep more local structure; 10-NN
    preservation on digits with a 500-point sample: k=2 0.37, 3 0.37, 5 0.34, 10 0.31, 20 0.25, and
    umap-learn's `transform` 0.26 at 40x the time; on 8 Gaussian blobs 0.17, 0.11, 0.09, 0.08, 0.08 vs
    0.05; k=3 rather than 2 so one wrong approximate neighbour cannot move an item alone); `fit_transform(X)` does both and keeps the sample rows at
    their fitted positions. Deterministic for a given `seed` (UMAP then runs single-threaded; the sample
    and FAISS's IVF training are seeded); `seed=None` lets UMAP use every core, the sample stays seeded.
    """

    def __init__(self, sample_size: int | None = None, n_neighbors: int = 15, place_k: int = 3,
                 chunk_size: int = 65_536, metric: str = "l2", min_dist: float = 0.1, seed: int | None = 0,
                 progress: bool = True) -> None:
        self.sample_size, self.n_neighbors, self.place_k = sample_size, n_neighbors, place_k
        self.chunk_size, self.metric, self.min_dist, self.seed = chunk_size, metric, min_dist, seed
        self.progress = progress

    def _sample_size(self) -> int:
        """`sample_size`, or the module's SAMPLE_SIZE when None (read at fit time)."""
        return SAMPLE_SIZE if self.sample_size is None else self.sample_size

    def _check(self, X) -> np.ndarray:
        if not hasattr(X, "shape") or not hasattr(X, "dtype"):
            X = np.asarray(X)
        if X.ndim != 2 or X.dtype.kind not in "iuf":
            raise ValueError(f"embeddings must be a numeric 2-D array (n, d); got shape {X.shape}, dtype {X.dtype}")
        if self.metric not in ("l2", "cosine"):
            raise ValueError(f"unknown metric {self.metric!r}; expected 'l2' or 'cosine'")
        for name in ("sample_size", "n_neighbors", "place_k", "chunk_size"):
            v = self._sample_size() if name == "sample_size" else getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 2:
                raise ValueError(f"{name} must be an int >= 2, got {v!r}")
        return X

    def fit(self, X) -> SampledMap:
        from .mapping import umap_from_knn
        from .neighbors import NeighborIndex

        X = self._check(X)
        n = len(X)
        if n < 16:
            raise ValueError(f"a sampled map needs at least 16 items, got {n}")
        rng = np.random.default_rng(0 if self.seed is None else self.seed)   # None: parallel UMAP only
        m = min(n, int(self._sample_size()))
        sample = np.arange(n) if m == n else np.sort(rng.choice(n, m, replace=False))
        Xs = np.ascontiguousarray(X[sample], dtype=np.float32)
        if not np.isfinite(Xs).all():
            raise ValueError("embeddings contain NaN or infinite values")
        # exact kNN below 20k sample rows, IVF (seeded, recall ~0.95) above: the graph of a 50k sample
        # exactly costs 50k^2 x d flops, ~20 s on a busy core, IVF under 2 s
        index = NeighborIndex(kind="flat" if m <= 20_000 else "ivf", metric=self.metric,
                              seed=0 if self.seed is None else int(self.seed)).fit(Xs)
        k = min(int(self.n_neighbors) + 1, m)
        ids, dist = index.knn_graph(k)
        self.sample_ids_ = sample
        self.sample_map_ = umap_from_knn(Xs, ids, dist, min_dist=self.min_dist, seed=self.seed)
        del ids, dist
        # the placement search: the smallest IVF nprobe whose recall@place_k reaches 0.95 (1M synthetic:
        # nprobe 8 -> 0.98, 16 -> 1.0, at a third of the default's cost); flat indexes are exact
        self.search_settings_ = index.tune(k=min(int(self.place_k), m), target_recall=0.95,
                                           seed=0 if self.seed is None else int(self.seed))
        self.index_ = index
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        """(len(X), 2) float32 positions of rows of X placed among the fitted sample (chunked)."""
        from tqdm.auto import tqdm

        if not hasattr(self, "sample_map_"):
            raise RuntimeError("the map is not fitted yet; call fit(X) first")
        X = self._check(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"embeddings have dimension {X.shape[1]}, the map was fitted on {self.n_features_in_}")
        n = len(X)
        out = np.empty((n, 2), np.float32)
        k = min(int(self.place_k), len(self.sample_ids_))
        step = int(self.chunk_size)
        for lo in tqdm(range(0, n, step), desc="map: placing items", leave=False,
                       disable=not self.progress or n <= 2 * step):
            hi = min(n, lo + step)
            ids, dist = self.index_.search(np.ascontiguousarray(X[lo:hi], dtype=np.float32), k)  # cosine: normalised there
            out[lo:hi] = self.place(ids, dist)
        return out

    def place(self, ids: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """Membership-weighted mean of the sample positions `ids` (m, k) at distances `dist` (m, k)."""
        ids = np.where(ids < 0, ids[:, :1], ids)   # a short IVF row: repeat its nearest hit
        gap = dist - dist[:, :1]
        sigma = np.maximum(gap.mean(axis=1, keepdims=True), 1e-12)
        w = np.exp(-gap / sigma)
        w /= w.sum(axis=1, keepdims=True)
        pos = self.sample_map_[ids]                # (m, k, 2)
        return np.einsum("mk,mkc->mc", w, pos).astype(np.float32)

    def fit_transform(self, X, y=None) -> np.ndarray:
        X = self._check(X)
        self.fit(X)
        out = self.transform(X)
        out[self.sample_ids_] = self.sample_map_
        return out


def sampled_map(X: np.ndarray, *, metric: str = "l2", seed: int | None = 0, cache_dir: str | Path | None = None,
                key: str | None = None, **params) -> np.ndarray:
    """(N, 2) float32 sampled map of X (`SampledMap(**params)`), cached as ``map-sampled-<key>.npy`` in
    `cache_dir` when given. `key` defaults to `embeddings_key(X)` plus the parameters, so changed
    embeddings (or settings) build a new map and unchanged ones reopen the saved one."""
    est = SampledMap(metric=metric, seed=seed, **params)
    if cache_dir is None:
        return est.fit_transform(X)
    from .store.cache import ArrayCache

    settings = f"sample_size={est._sample_size()}," + ",".join(
        f"{p}={getattr(est, p)}" for p in ("n_neighbors", "place_k", "metric", "min_dist", "seed"))
    full = f"map-sampled-{key or embeddings_key(X)}-{hashlib.blake2b(settings.encode(), digest_size=6).hexdigest()}"
    cache = ArrayCache(Path(cache_dir))
    got = cache.get(full)
    if got is not None and got.shape == (len(X), 2):
        return got.astype(np.float32, copy=False)
    out = est.fit_transform(X)
    try:
        cache.put(full, out)
    except OSError as e:   # a read-only cache must not stop the map
        log.warning("could not save the map to %s: %s", cache.path(full), e)
    return out
