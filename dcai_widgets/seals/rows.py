"""The rows SEALS scores each round, kept in one buffer across rounds (Coleman et al., AAAI 2022).

SEALS' point is that a round scores only the candidate pool, not all N items; gathering the pool's rows
afresh from a large (possibly memory-mapped) X each round would cost what the pool saves.  The buffer holds
float32 copies of every unlabeled pool member and exploration item, and a round moves only the rows of
items that joined or left (``CandidatePool.take_changes``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["RowBuffer"]


class RowBuffer:
    """Float32 copies of the rows to score, by item id, with room to grow.

    ``X[:m]`` / ``ids[:m]`` are the rows and their ids (in the buffer's order, which removals change);
    ``ex[:m]``: the item is in the exploration sample; ``exo[:m]``: ... and not in the kNN pool;
    ``pos``: an N-sized map id -> row (or -1).  ``key`` says what the buffer was built for (the owner
    rebuilds it when that changes).  It never allocates N x d: ``cap`` rows to start, doubling (capped at
    N) when short.  Every page is written up front (a first write to a fresh page faults: at 1M a round
    that crossed into new pages spent 3-6 ms there)."""

    def __init__(self, n: int, d: int, cap: int, key: object = None):
        self.key = key
        self.pos = np.full(n, -1, dtype=np.int32)
        self.m = 0
        self.X, self.ids, self.ex, self.exo = self._arrays(cap, d)

    @staticmethod
    def _arrays(cap: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        out = (np.empty((cap, d), dtype=np.float32), np.empty(cap, dtype=np.int64),
               np.empty(cap, dtype=bool), np.empty(cap, dtype=bool))
        for a in out:
            a.fill(0)
        return out

    def _reserve(self, rows: int) -> None:
        """Room for ``rows`` rows: a doubling (capped at N) copied over when the buffer is short."""
        cap = len(self.X)
        if rows <= cap:
            return
        grown = self._arrays(min(len(self.pos), max(rows, 2 * cap)), self.X.shape[1])
        m = self.m
        for new, old in zip(grown, (self.X, self.ids, self.ex, self.exo)):
            new[:m] = old[:m]
        self.X, self.ids, self.ex, self.exo = grown

    def add(self, X: np.ndarray, new: np.ndarray, is_ex: np.ndarray, outside_pool: np.ndarray) -> None:
        """Append the rows of ``new`` (distinct ids not in the buffer, ascending), gathered from X;
        ``is_ex`` / ``outside_pool``: per id, in the exploration sample / ... and outside the kNN pool."""
        k = len(new)
        if not k:
            return
        m = self.m
        self._reserve(m + k)
        # straight into the buffer: X[new] builds a temporary and checks every id, twice the time
        # (1,500 random rows of 1M x 128: 0.68 ms against 0.33 ms); the ids are pool members, in range
        if X.dtype == self.X.dtype:
            np.take(X, new, axis=0, out=self.X[m:m + k], mode="clip")
        else:                                    # float16 embeddings: widened row by row as read
            self.X[m:m + k] = np.take(X, new, axis=0)
        self.ids[m:m + k] = new
        self.ex[m:m + k] = is_ex
        self.exo[m:m + k] = outside_pool
        self.pos[new] = np.arange(m, m + k, dtype=np.int32)
        self.m = m + k

    def drop(self, gone: np.ndarray) -> None:
        """Remove the rows of ``gone`` (ids in the buffer): the last rows move into the holes."""
        if not len(gone):
            return
        m = self.m
        at = self.pos[gone].astype(np.int64)
        self.pos[gone] = -1
        keep_to = m - len(gone)
        tail = np.ones(m - keep_to, dtype=bool)
        tail[at[at >= keep_to] - keep_to] = False
        movers = keep_to + np.flatnonzero(tail)     # surviving rows past the new end
        holes = at[at < keep_to]                    # as many as movers
        if len(holes):
            for a in (self.X, self.ids, self.ex, self.exo):
                a[holes] = a[movers]
            self.pos[self.ids[holes]] = holes.astype(np.int32)
        self.m = keep_to

    def holds(self, ids: np.ndarray) -> np.ndarray:
        """Whether each id has a row."""
        return self.pos[ids] >= 0
