"""2-D map of the embeddings, chosen by size: PCA for a handful of items, t-SNE for small sets, UMAP fed
with the FAISS kNN graph (umap-learn accepts a precomputed kNN) for everything larger.

Why not UMAP everywhere: for a few thousand items UMAP's own cost is small but its numba JIT is not
(~5-6 s in every fresh kernel on a 2-core machine, 12 s more the first time umap is imported), so a
1,797-digit map took 16 s cold. scikit-learn's Barnes-Hut t-SNE (van der Maaten, "Accelerating t-SNE
using Tree-Based Algorithms", JMLR 2014) is compiled ahead of time, maps the same set in ~1-3 s and
keeps more of each item's 10 nearest neighbours (10-NN preservation, measured in
benchmarks/app_latency.py: digits 0.58 vs UMAP 0.49; adbench CIFAR10 and 20news subsets likewise).
Its cost grows faster than UMAP's, so above `TSNE_MAX` items UMAP (McInnes et al., 2018) takes over.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

SMALL_MAX = 15      # below 16 items: PCA (neither t-SNE nor UMAP is meaningful)
TSNE_MAX = 3000     # up to this many items: t-SNE; above: UMAP on the FAISS kNN graph


def map_method(n: int) -> str:
    """Which projection `project_2d` uses for `n` items: 'pca', 'tsne', 'umap' or, above
    `mapping_scale.SAMPLED_ABOVE`, 'sampled' (UMAP on a sample, the rest placed; dcai_widgets.mapping_scale)."""
    from . import mapping_scale

    if n > mapping_scale.SAMPLED_ABOVE:
        return "sampled"
    if n <= SMALL_MAX:
        return "pca"
    return "tsne" if n <= TSNE_MAX else "umap"


def project_2d(X: np.ndarray, knn_graph: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None, *,
               k: int = 15, metric: str = "l2", seed: int | None = 0) -> np.ndarray:
    """(N, 2) float32 map of the rows of X with the method `map_method(N)` picks.

    `knn_graph(k)` returns (ids, distances) of each row's k nearest rows, self first (the FAISS index's
    graph); only UMAP needs it. `metric` "cosine" compares directions: rows are L2-normalised first.
    """
    n = len(X)
    method = map_method(n)
    if method != "sampled":   # a memory-mapped 10M x d file is read in chunks, never copied whole
        X = np.asarray(X, dtype=np.float32)
    if method == "pca":
        return small_map(X)
    if method == "tsne":
        return tsne_map(X, metric=metric, seed=0 if seed is None else seed)
    if method == "sampled":   # no N x k graph, no N-point UMAP: see dcai_widgets.mapping_scale
        from .mapping_scale import sampled_map

        return sampled_map(X, metric=metric, seed=seed, n_neighbors=k)
    if knn_graph is None:
        raise ValueError("a UMAP map needs the kNN graph (knn_graph=)")
    ids, dist = knn_graph(k + 1)
    return umap_from_knn(X, ids, dist, seed=seed)


def tsne_map(X: np.ndarray, *, metric: str = "l2", seed: int = 0, max_iter: int = 500) -> np.ndarray:
    """Barnes-Hut t-SNE (scikit-learn), PCA-initialised, perplexity min(30, (N-1)/3), one thread.

    One thread: on a shared 2-core machine OpenMP's second thread mostly waits (runs took 2.6-11 s with
    two threads, 1.1-2.6 s with one), and the map is built beside a person labeling. 500 iterations: the
    default 1,000 gave the same 10-NN preservation on digits (0.584 vs 0.582) at twice the time.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    if n < 4:
        raise ValueError(f"a map needs at least 4 items, got {n}")
    if metric == "cosine":
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    perplexity = float(min(30.0, (n - 1) / 3.0))
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter,
                   n_jobs=1).fit_transform(X)
    return np.asarray(emb, dtype=np.float32)


def umap_from_knn(X: np.ndarray, knn_ids: np.ndarray, knn_dists: np.ndarray, *, n_neighbors: int | None = None,
                  min_dist: float = 0.1, seed: int | None = 0, verbose: bool = False) -> np.ndarray:
    """Project the N rows of X to 2-D with UMAP using a precomputed kNN graph (self first in each row)."""
    import umap

    n, k = knn_ids.shape
    if n < 4:
        raise ValueError(f"a map needs at least 4 items, got {n}")
    k = min(k, n_neighbors or k)
    reducer = umap.UMAP(n_neighbors=k, min_dist=min_dist, random_state=seed, verbose=verbose,
                        precomputed_knn=(knn_ids[:, :k].astype(np.int32), knn_dists[:, :k].astype(np.float32),
                                         None),
                        n_jobs=1 if seed is not None else -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "transform unavailable" / "n_jobs overridden" notes
        # with the kNN graph given, UMAP uses X only to place disconnected components
        emb = reducer.fit_transform(np.asarray(X, dtype=np.float32))
    return np.asarray(emb, dtype=np.float32)


def small_map(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """A PCA projection for tiny sets where UMAP is not meaningful."""
    Xc = X - X.mean(0)
    if X.shape[1] == 1:
        return np.hstack([Xc, np.zeros_like(Xc)]).astype(np.float32)
    vt = np.linalg.svd(Xc, full_matrices=False)[2]
    return (Xc @ vt[:2].T).astype(np.float32)


def neighbour_preservation(X: np.ndarray, Y: np.ndarray, k: int = 10, metric: str = "l2",
                           sample: int | None = 2000, seed: int = 0) -> float:
    """Share of each item's k nearest neighbours in X that are also among its k nearest on the map Y
    (exact search, averaged over up to `sample` items): how much local structure the map keeps."""
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(X, dtype=np.float32)
    if metric == "cosine":
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    n = len(X)
    rows = np.arange(n) if sample is None or n <= sample else np.random.default_rng(seed).choice(n, sample, False)
    a = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X[rows], return_distance=False)[:, 1:]
    b = NearestNeighbors(n_neighbors=k + 1).fit(Y).kneighbors(np.asarray(Y)[rows], return_distance=False)[:, 1:]
    return float(np.mean([len(set(p) & set(q)) / k for p, q in zip(a, b)]))
