"""kNN graph / kNN table searched by an Executor: each actor holds a copy of the built FAISS index.

The index is built (trained and filled) once, in this process, then serialised
(``faiss.serialize_index``) and shared; actors search the same row blocks the in-process
``NeighborIndex.knn_graph`` / ``knn_table`` search, with the same ``NeighborIndex.search`` code, so the
neighbour ids are identical and the distances equal (FAISS search of a query does not depend on which
process runs it).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .executor import get_executor
from .rows import shareable

__all__ = ["search_blocks"]


class _SearchWorker:
    """Held by one actor: a NeighborIndex rebuilt from its parameters, its FAISS index and its vectors."""

    def __init__(self, state: dict, index_bytes: Any, X: Any, k: int, what: str):
        import faiss

        from ..neighbors import NeighborIndex

        self.ni = NeighborIndex.__new__(NeighborIndex)
        self.ni.__dict__.update(state)
        self.ni.index_ = faiss.deserialize_index(index_bytes.get())
        X = X.get()
        self.ni.X_ = np.asarray(X) if not isinstance(X, np.ndarray) else X
        self.k, self.what = int(k), what

    def __call__(self, task: tuple[int, int]) -> tuple[int, np.ndarray, np.ndarray | None]:
        lo, hi = task
        if self.what == "graph":
            ids, dist = self.ni.search(self.ni.X_[lo:hi], self.k)
            return lo, ids, dist
        return lo, self.ni.search_ids(np.arange(lo, hi), self.k)[0].astype(np.int32), None


def search_blocks(index: Any, k: int, step: int, executor: Any, what: str = "graph",
                  ids: np.ndarray | None = None, dist: np.ndarray | None = None, progress: bool = True
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Fill ``ids`` (and ``dist``) block by block, ``step`` rows per task, on ``executor``.

    ``what="graph"``: ``index.search(X[lo:hi], k)`` per block (the rows of ``knn_graph`` before its
    self-first fix-up); ``what="table"``: ``index.search_ids(range(lo, hi), k)[0]`` as int32 (``knn_table``).
    """
    import faiss
    from tqdm.auto import tqdm

    if what not in ("graph", "table"):
        raise ValueError(f"what={what!r}: use 'graph' or 'table'")
    ex = get_executor(executor)
    n = int(index.n_)
    if ids is None:
        ids = np.empty((n, k), np.int64 if what == "graph" else np.int32)
    if dist is None and what == "graph":
        dist = np.empty((n, k), np.float32)
    state = {key: v for key, v in index.__dict__.items() if key not in ("index_", "X_")}
    blob = ex.share(faiss.serialize_index(index.index_))
    X = ex.share(shareable(index.X_))
    tasks = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    bar = tqdm(total=n, desc=f"kNN {what} ({ex.name})", unit="row", disable=not progress or n <= 2 * step,
               leave=False)
    for _, (lo, got, d) in ex.map(_SearchWorker, (state, blob, X, k, what), tasks):
        ids[lo:lo + len(got)] = got
        if d is not None:
            dist[lo:lo + len(d)] = d
        bar.update(len(got))
    bar.close()
    return ids, dist
