"""2-D map: UMAP fed with the FAISS kNN graph (umap-learn accepts a precomputed kNN)."""
from __future__ import annotations

import warnings

import numpy as np


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
