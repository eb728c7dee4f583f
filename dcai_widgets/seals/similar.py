"""Items like given ones: the neighbours of items or query vectors in the index, merged, nearest first.

SEALS (Coleman et al., AAAI 2022) grows its pool from these neighbourhoods; the Explore tab's neighbour
grids and "more like these" show them to people, with the cosine similarity printed under each item.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .pool import search_neighbors

__all__ = ["similar_items"]


def similar_items(X: np.ndarray, index: Any, ids: Sequence[int] | None = None,
                  vectors: np.ndarray | None = None, k: int = 10, exclude: Sequence[int] | None = None) -> pd.DataFrame:
    """"More like these": neighbours of items (by id) or query vectors, merged, nearest first.

    Returns id, distance (index metric), similarity (cosine to the nearest query) and query (the
    query item, or -1-based position of the query vector).  The query items themselves are left out.
    """
    if (ids is None) == (vectors is None):
        raise TypeError("pass exactly one of ids= or vectors=")
    n = len(X)
    if ids is not None:
        qids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if qids.size == 0:
            raise ValueError("no ids given: select at least one item")
        if qids.min() < 0 or qids.max() >= n:
            raise ValueError(f"ids must lie in 0..{n - 1}")
        Q = np.asarray(X[qids], dtype=np.float32)
    else:
        Q = np.asarray(vectors, dtype=np.float32)
        if Q.ndim == 1:
            Q = Q[None, :]
        qids = -1 - np.arange(len(Q))
    k = int(k)
    if not 1 <= k < n:
        raise ValueError(f"k={k} neighbours asked but there are only {n} items; choose 1 <= k <= {n - 1}")
    skip = {int(i) for i in qids if i >= 0} | {int(i) for i in (exclude or [])}
    kk = min(n, k + len(skip))
    nbr, dist = search_neighbors(index, Q, kk, X.shape[1])
    best: dict[int, tuple[float, int]] = {}
    for qi, row, drow in zip(qids, nbr, dist):
        for j, d in zip(row, drow):
            j = int(j)
            if j < 0 or j in skip:
                continue
            if j not in best or d < best[j][0]:
                best[j] = (float(d), int(qi))
    items = sorted(best.items(), key=lambda t: (t[1][0], t[0]))[:k]
    out = pd.DataFrame({"id": [i for i, _ in items], "distance": [v[0] for _, v in items],
                        "query": [v[1] for _, v in items]})
    if len(out):
        V = np.asarray(X[out["id"].to_numpy()], dtype=np.float32)
        qrow = {int(q): r for r, q in enumerate(qids)}
        Qm = Q[[qrow[int(q)] for q in out["query"]]]
        num = np.einsum("ij,ij->i", V, Qm)
        den = np.linalg.norm(V, axis=1) * np.linalg.norm(Qm, axis=1)
        out["similarity"] = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0).astype(np.float32)
    else:
        out["similarity"] = np.zeros(0, np.float32)
    return out[["id", "similarity", "distance", "query"]]

