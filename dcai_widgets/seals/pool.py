"""SEALS candidate pool: the union of the k nearest neighbours of every labeled item, minus the labeled.

Kept incrementally: each update searches only the items labeled since the last one, and a per-item
cover count lets a retracted label (undo) shrink the pool exactly as recomputing from scratch would.
Memory is O(N) (a cover count and an ever-scored flag per item) plus k ids per labeled item.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..neighbors import _as_matrix

__all__ = ["CandidatePool", "search_neighbors"]


def search_neighbors(index: Any, vectors: np.ndarray, k: int, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` with its input checked as :class:`NeighborIndex` checks it (numeric, 1-D or 2-D,
    the index's dimension, finite), ``k >= 1``; works for any object with ``search``."""
    v = _as_matrix(vectors, dim, name="query vectors")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    ids, dists = index.search(v, int(k))
    return np.asarray(ids, dtype=np.int64), np.asarray(dists, dtype=np.float32)


@contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """Run FAISS on ``n`` OpenMP threads inside the block: a few dozen queries are faster on one thread
    than paying OpenMP's fork/barrier on a busy 2-core machine (measured 3-4x in benchmarks/seals.py)."""
    try:
        import faiss

        old = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(int(n))
    except Exception:   # no FAISS (a custom index): nothing to limit
        yield
        return
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


def _mapped(n: int, dtype: Any) -> np.ndarray:
    """Zeros written now rather than ``np.zeros``' lazily mapped pages: the rounds then write at random
    into memory that is already mapped, instead of faulting pages in one by one (a one-time cost of a few
    ms at 1M, paid when the pool is built)."""
    a = np.empty(n, dtype=dtype)
    a.fill(0)
    return a


class CandidatePool:
    """Union of the k nearest neighbours of the labeled items, minus the labeled ones.

    ``index`` is anything with ``search(vectors (m, d), k) -> (ids (m, k), dists (m, k))`` (a
    ``NeighborIndex`` or a raw FAISS index); ``X`` the (N, d) vectors it holds.  With ``graph`` (an
    (N, >= k) integer table of each item's nearest other items, nearest first, -1 padding, e.g.
    ``NeighborIndex.knn_table(k)``) a newly labeled item's neighbours are looked up instead of
    searched; ``index`` may then be None.
    """

    def __init__(self, X: np.ndarray, index: Any, k: int = 100, batch: int = 4096, graph: np.ndarray | None = None):
        if graph is None and not hasattr(index, "search"):
            raise TypeError(f"index must have search(vectors, k); got {type(index).__name__}")
        X = X if isinstance(X, np.ndarray) else np.asarray(X)     # a np.memmap stays one (rows read by id)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (N, d); got shape {X.shape}")
        n = X.shape[0]
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        if k >= n:
            raise ValueError(f"k={k} neighbours asked but there are only {n} items (each has at most "
                             f"{n - 1} others); choose k <= {n - 1}")
        if graph is not None:
            graph = np.asarray(graph)
            if graph.ndim != 2 or graph.shape[0] != n or graph.dtype.kind not in "iu":
                raise ValueError(f"graph must be an integer (N, k) neighbour table with N={n}; got "
                                 f"{graph.dtype} {graph.shape}")
            if graph.shape[1] < k:
                raise ValueError(f"graph lists {graph.shape[1]} neighbours per item but k={k} are asked; "
                                 f"rebuild it with k >= {k}")
        self.X = X
        self.index = index
        self.graph = graph
        self.k = k
        self.batch = batch
        self.n = n
        self.cover_ = _mapped(n, np.int32)        # how many searched items list each item as a neighbour
        self.ever_ = _mapped(n, bool)             # ever in the pool (ever scored)
        self.neighbors_: dict[int, np.ndarray] = {}      # searched item -> its k neighbour ids
        self.labeled_ = _mapped(n, bool)
        self._labeled_ids = np.zeros(0, dtype=np.int64)
        self.n_searched_last_ = 0
        self._mask = _mapped(n, bool)
        self._ids: np.ndarray | None = np.zeros(0, dtype=np.int64)   # sorted members, built when asked
        self._size = 0
        self._changes: list[np.ndarray] | None = []      # ids whose membership or label changed, not yet taken
        self._n_changes = 0
        self._scratch = _mapped(n, np.int32)      # for _distinct: O(len) dedupe without sorting

    # -- updates ----------------------------------------------------------------------------------
    def update(self, labeled_ids: Iterable[int]) -> CandidatePool:
        """Make the pool match this labeled set: search the newly labeled, drop the unlabeled.

        Work is proportional to the change (k ids per newly labeled or retracted item), not to N or to
        the pool: at 1M items one pass over N costs more than the rest of a round's bookkeeping.
        """
        if isinstance(labeled_ids, np.ndarray) and labeled_ids.ndim == 1 and labeled_ids.dtype.kind in "iu":
            ids = labeled_ids.astype(np.int64, copy=False)
            if ids.size > 1 and not (ids[1:] > ids[:-1]).all():     # not already sorted and distinct
                ids = np.unique(ids)
        else:
            ids = np.unique(np.asarray(list(labeled_ids), dtype=np.int64))
        if ids.size and (ids[0] < 0 or ids[-1] >= self.n):
            raise ValueError(f"labeled ids must lie in 0..{self.n - 1}; got {ids[0]}..{ids[-1]}")
        fresh = ids[~self.labeled_[ids]]                 # labeled since the last update
        if len(ids) - len(fresh) == len(self._labeled_ids):   # every earlier label is still there
            gone = np.zeros(0, dtype=np.int64)
        else:                                            # labels retracted since
            gone = np.setdiff1d(self._labeled_ids, ids, assume_unique=True)
        touched = [fresh, gone]
        for i in gone:
            row = self.neighbors_.pop(int(i), None)
            if row is not None:
                touched.append(self._add_cover(row, -1))
        for s in range(0, len(fresh), self.batch):
            chunk = fresh[s:s + self.batch]
            rows, flat = self._neighbors(chunk)
            self.neighbors_.update(zip(chunk.tolist(), rows))
            touched.append(self._add_cover(flat, +1))
        self.n_searched_last_ = len(fresh)
        self.labeled_[gone] = False
        self.labeled_[ids] = True
        self._labeled_ids = ids
        # only touched items can have changed membership: the newly labeled and retracted, and the
        # neighbours of the searched and retracted
        t = self._distinct(np.concatenate(touched))
        inside = (self.cover_[t] > 0) & ~self.labeled_[t]
        before = self._mask[t]
        self._mask[t] = inside
        joined = t[inside & ~before]
        left = t[before & ~inside]
        self.ever_[joined] = True
        self._size += len(joined) - len(left)
        if len(joined) or len(left):
            self._ids = None
        if self._changes is not None:
            self._changes += [joined, left, fresh, gone]
            self._n_changes += len(joined) + len(left) + len(fresh) + len(gone)
            if self._n_changes > self.n:     # nobody is taking them: stop keeping a log, say "everything"
                self._changes = None
        return self

    def _neighbors(self, chunk: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """The k neighbour ids of each item of ``chunk`` (looked up in the graph, or searched), as one
        array per item and all of them in one array."""
        if self.graph is not None:
            nbr = np.take(self.graph, chunk, axis=0)      # plain row gather: faster than graph[chunk, :k]
            if nbr.shape[1] > self.k:
                nbr = nbr[:, :self.k]
            keep = (nbr >= 0) & (nbr != chunk[:, None])
            if keep.all():      # the usual case: a full row, self already left out by knn_table
                return list(nbr), nbr.ravel()
            rows = [row[m] for row, m in zip(nbr, keep)]
            return rows, nbr[keep]
        with faiss_threads(1 if len(chunk) <= 256 else max(1, os.cpu_count() or 1)):
            nbr, _ = search_neighbors(self.index, self.X[chunk], self.k + 1, self.X.shape[1])
        rows = self._drop_self(chunk, nbr)
        return rows, (np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64))

    def _add_cover(self, ids: np.ndarray, sign: int) -> np.ndarray:
        """Add ``sign`` to the cover count of each id, once per occurrence (retraction mirrors the search
        exactly); returns the distinct ids touched (as int64)."""
        ids = ids.astype(np.int64, copy=False)
        if len(ids) >= 2**31:
            u, c = np.unique(ids, return_counts=True)
        else:   # O(len), no sort: each occurrence points at its id's last position; count per position
            at = np.arange(len(ids), dtype=np.int32)
            self._scratch[ids] = at
            c = np.bincount(self._scratch[ids], minlength=len(ids))
            keep = c > 0
            u, c = ids[keep], c[keep]
        self.cover_[u] += sign * c.astype(self.cover_.dtype)
        return u

    def _distinct(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` without repeats, in O(len) (one scatter and one gather on an N-sized scratch array,
        where np.unique would sort): the last occurrence of each id is kept."""
        if len(ids) >= 2**31:
            return np.unique(ids)
        ids = ids.astype(np.int64, copy=False)
        at = np.arange(len(ids), dtype=np.int32)
        self._scratch[ids] = at
        return ids[self._scratch[ids] == at]

    def take_changes(self) -> np.ndarray | None:
        """Distinct ids (in no particular order) that joined or left the pool, or were labeled or
        unlabeled, since the last call (a consumer keeping something per pool member, e.g. cached rows,
        updates only these); None when more than N changes piled up untaken: then treat everything as
        changed."""
        ch = self._changes
        self._changes, self._n_changes = [], 0
        if ch is None:
            return None
        return self._distinct(np.concatenate(ch)) if ch else np.zeros(0, dtype=np.int64)

    def _drop_self(self, chunk: np.ndarray, nbr: np.ndarray) -> list[np.ndarray]:
        """Each searched item's first k neighbours: its k+1 results without itself and without FAISS'
        -1 padding (when the item is not among its own results, the (k+1)-th result goes instead)."""
        keep = (nbr >= 0) & (nbr != chunk[:, None])
        keep &= np.cumsum(keep, axis=1) <= self.k
        return [row[m] for row, m in zip(nbr, keep)]

    # -- views ------------------------------------------------------------------------------------
    def mask(self) -> np.ndarray:
        """Boolean (N,) membership of the current pool (kept up to date by each update)."""
        return self._mask

    def labeled_ids(self) -> np.ndarray:
        """Sorted ids of the labeled set of the last update."""
        return self._labeled_ids

    def ids(self) -> np.ndarray:
        """Sorted ids of the current pool (one pass over N, made when first asked after a change)."""
        if self._ids is None:
            self._ids = np.flatnonzero(self._mask)
        return self._ids

    def __len__(self) -> int:
        return self._size

    @property
    def fraction_scored(self) -> float:
        """Fraction of all N items that were ever in the pool."""
        return float(self.ever_.mean()) if self.n else 0.0

    @staticmethod
    def from_scratch(X: np.ndarray, index: Any, labeled_ids: Iterable[int], k: int = 100) -> np.ndarray:
        """The pool recomputed in one go (reference for tests): union of kNN of labeled, minus labeled."""
        ids = np.unique(np.asarray(list(labeled_ids), dtype=np.int64))
        if ids.size == 0:
            return np.zeros(0, dtype=np.int64)
        nbr, _ = search_neighbors(index, np.asarray(X)[ids], k + 1, np.asarray(X).shape[1])
        keep = []
        for i, row in zip(ids, nbr):
            keep.append(row[(row >= 0) & (row != i)][:k])
        return np.setdiff1d(np.unique(np.concatenate(keep)), ids)
