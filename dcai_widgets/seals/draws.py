"""The two random samples SEALS draws once per data set: weak background negatives and the exploration
sample (Coleman et al., AAAI 2022, extended; the reasons are in :class:`~dcai_widgets.seals.engine.Seals`).

Both are seeded by the engine's ``random_state`` and drawn again only when N or the size changes; with
a FAISS IVF index the exploration sample is stratified by coarse cell, so a small dense region is not
left out by chance.
"""
from __future__ import annotations

import numpy as np

from ..neighbors import ivf_cells
from .strategies import MISSING

__all__ = ["SampleDraws"]


def _stratified(rng: np.random.Generator, cells: np.ndarray, m: int, exclude: np.ndarray) -> np.ndarray:
    """m items spread evenly over cells: in a random order, the items of lowest rank within their cell
    (ties at the last rank broken at random), so each cell gives about m / #cells, all of a smaller one."""
    perm = rng.permutation(len(cells))
    perm = perm[~np.isin(perm, exclude)]
    c = cells[perm]
    o = np.argsort(c, kind="stable")
    rank = np.empty(len(perm), dtype=np.int64)
    rank[o] = np.arange(len(perm)) - np.searchsorted(c[o], c[o], side="left")
    level = int(np.searchsorted(np.cumsum(np.bincount(rank)), min(m, len(perm))))
    take = rank < level
    take[np.flatnonzero(rank == level)[:max(0, m - int(take.sum()))]] = True
    return perm[take].astype(np.int64)


class SampleDraws:
    """The draws as a mixin of ``Seals``: reads ``background_negatives``, ``explore``, ``random_state``,
    ``target_``, ``index`` and ``pool_``; keeps ``background_ids_`` and ``explore_ids_`` (sorted ids)."""

    def _background_ids(self, n: int) -> np.ndarray:
        """The background sample (drawn once for this N, seeded); empty when off or in multi-class mode."""
        m = int(self.background_negatives)
        if self.target_ is None or m <= 0:
            return np.zeros(0, dtype=np.int64)
        if getattr(self, "background_ids_", None) is None or self._background_n != (n, m):
            rng = np.random.default_rng(self.random_state)
            self.background_ids_ = np.sort(rng.choice(n, min(m, n), replace=False)).astype(np.int64)
            self._background_n = (n, m)
        return self.background_ids_

    def _background(self, y: np.ndarray) -> np.ndarray:
        """Unlabeled ids of the background sample, used as weak negatives; empty when off."""
        ids = self._background_ids(len(y))
        return ids[y[ids] == MISSING]

    def _explore(self, y: np.ndarray) -> np.ndarray:
        """Unlabeled ids of the exploration sample (drawn once; disjoint from the background unless the
        background leaves fewer than its size); empty when off."""
        n = len(y)
        ex = float(self.explore)
        m = min(n, int(round(ex * n)) if ex < 1 else int(ex))
        if m <= 0:
            return np.zeros(0, dtype=np.int64)
        if getattr(self, "explore_ids_", None) is None or self._explore_n != (n, m):
            seed = None if self.random_state is None else (int(self.random_state), 1)
            rng = np.random.default_rng(seed)
            bg = self._background_ids(n)
            if n - len(bg) < m:     # a small data set the background covers: let the two samples overlap
                bg = np.zeros(0, dtype=np.int64)
            cells = ivf_cells(self.index, n)
            if cells is None:
                rest = np.setdiff1d(np.arange(n), bg, assume_unique=True)
                ids = rng.choice(rest, m, replace=False).astype(np.int64)
            else:
                ids = _stratified(rng, cells, m, exclude=bg)
            self.explore_ids_ = np.sort(ids)
            self._explore_n = (n, m)
            self._explore_ever = np.zeros(len(ids), dtype=bool)
            self._explore_pos = np.full(n, -1, dtype=np.int32)     # id -> position in the sample, or -1
            self._explore_pos[self.explore_ids_] = np.arange(len(ids), dtype=np.int32)
        ids = self.explore_ids_
        return ids[y[ids] == MISSING]

    def _in_explore(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether each id is in the exploration sample, and its position there (meaningful where it is):
        one lookup per id in an N-sized map (a binary search per id cost 0.2 ms a round at 1M)."""
        ex = getattr(self, "explore_ids_", None)
        if ex is None or not len(ex):
            return np.zeros(len(ids), dtype=bool), np.zeros(0, dtype=np.int64)
        pos = self._explore_pos[ids]
        return pos >= 0, pos

    def _fraction_scored(self, y: np.ndarray) -> float:
        """Fraction of all items ever scored: ever in the kNN pool, or an unlabeled exploration item."""
        ever = int(self.pool_.ever_.sum())
        ids = getattr(self, "explore_ids_", None)
        if ids is not None and len(ids):
            ever += int((self._explore_ever & ~self.pool_.ever_[ids]).sum())
        return ever / len(y) if len(y) else 0.0
