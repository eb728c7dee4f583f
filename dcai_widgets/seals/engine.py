"""SEALS: active learning and rare-concept search that scores only the neighbours of the labeled set.

Coleman et al., "Similarity Search for Efficient Active Learning and Search of Rare Concepts" (AAAI
2022): instead of scoring every unlabeled item each round, score the candidate pool, the union of the
k nearest neighbours (FAISS) of the labeled items, grown incrementally as labels arrive.  With
``full_scan=True`` the same strategy, estimator and seed score every unlabeled item, for comparison.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from threadpoolctl import ThreadpoolController

from .._validate import excluded_mask
from .draws import SampleDraws
from .pool import CandidatePool
from .rows import RowBuffer
from .similar import similar_items
from .strategies import MISSING, MostLikelyPositive, ScoreStrategy, _top, as_strategy

__all__ = ["BACKGROUND_NEGATIVES", "BACKGROUND_WEIGHT", "EXPLORE", "EXPLORE_QUOTA", "Seals", "default_estimator"]

_NEEDS_TARGET = {"most_likely_positive", "mlp"}
# weak negatives for search mode (see Seals); defaults chosen in benchmarks/seals.py (RESULTS.md, SEALS)
BACKGROUND_NEGATIVES = 2000
BACKGROUND_WEIGHT = 0.1
# exploration sample scored each round beside the kNN pool (see Seals); chosen in benchmarks/seals.py
EXPLORE = 0.01
# search mode: this fraction of each batch goes to the best-scoring exploration items outside the kNN pool
EXPLORE_QUOTA = 0.16
NEIGHBORS = ("search", "graph")
REPORT_COLUMNS = ["round", "n_labeled", "pool_size", "n_explore", "n_scored", "fraction_scored", "positives_found",
                  "n_searched", "search_s", "train_s", "score_s", "select_s"]


_CONTROLLER: ThreadpoolController | None = None


def _controller() -> ThreadpoolController:
    """The thread controller, built once: building it scans the loaded libraries."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def _blas_limit(n: int | None):
    """A context limiting BLAS threads to ``n``; None leaves them as they are (no context at all:
    entering and leaving a threadpoolctl limit costs about 0.3 ms)."""
    return nullcontext() if n is None else _controller().limit(limits=n, user_api="blas")


def _weight_count(est: Any) -> int | None:
    """Weights a fitted estimator multiplies per row (linear models, MLPs, a pipeline's last step); None
    when unknown."""
    est = est.steps[-1][1] if hasattr(est, "steps") else est
    if hasattr(est, "coefs_"):
        return int(sum(np.size(c) for c in est.coefs_))
    if hasattr(est, "coef_"):
        return int(np.size(est.coef_))
    return None


def _scoring_threads(est: Any, rows: int) -> int | None:
    """BLAS threads for scoring ``rows`` rows: one when the products are small, every thread when they
    are large (an MLP, an unknown estimator, a full scan, or a linear model over a pool of 16k+ rows of
    128) and the machine is not busy.  A 38k x 128 float32 product took 2.5 ms on one thread, 1.6 ms on
    two; but with another process busy on a 2-core machine two threads spin-wait (p90 8-10 ms, against
    2.8 ms on one), so other processes using more than all but 1.5 cores mean one thread."""
    size = _weight_count(est)
    if size is None or rows * size > 50_000_000:
        return None
    return 1 if rows * size < 2_000_000 or _busy() else None


_LOAD = {"at": None, "other": 0.0}
_CPUS = os.cpu_count() or 1     # read once, not per scoring call


def _busy() -> bool:
    """Whether other processes keep the other cores busy: the machine's CPU time (``/proc/stat``) less
    this process's own, over the last half second or more.  Not the load average: that counts this
    process's own BLAS threads (a full scan just before would make every pool scoring look busy).
    False where ``/proc/stat`` is missing."""
    t, last = time.monotonic(), _LOAD["at"]
    if last is None or t - last[0] >= 0.5:     # else the last estimate stands (reading costs ~0.1 ms)
        try:
            with open("/proc/stat", "rb") as f:
                v = f.readline().split()[1:9]
        except OSError:
            return False
        machine = (sum(int(x) for x in v) - int(v[3]) - int(v[4])) / os.sysconf("SC_CLK_TCK")  # not idle
        own = sum(os.times()[:2])
        if last is not None:
            _LOAD["other"] = max(0.0, (machine - last[1]) - (own - last[2])) / (t - last[0])
        _LOAD["at"] = (t, machine, own)
    return _LOAD["other"] > _CPUS - 1.5


ROW_RESERVE = 0.05   # the row buffer's rows mapped up front, as a fraction of N (the pool's usual size)...
ROW_RESERVE_MAX = 262_144   # ...but no more rows than this (128 MiB at d=128), so 10M items never reserve N/20 x d


def _reads_labeled_rows(strategy: Any) -> bool:
    """Whether a strategy needs the labeled rows beside the unlabeled ones (k-center's centres, plug-ins,
    custom score strategies); the built-in score strategies score from the unlabeled rows alone."""
    return bool(getattr(strategy, "reads_labeled_rows", True)) if isinstance(strategy, ScoreStrategy) else True


def _takes_sample_weight(est: Any) -> bool:
    try:
        from sklearn.utils.validation import has_fit_parameter

        return bool(has_fit_parameter(est, "sample_weight"))
    except (TypeError, ValueError, AttributeError):
        return False


def default_estimator() -> LogisticRegression:
    """Logistic regression with balanced class weights: fast, calibrated enough, robust to rare classes."""
    return LogisticRegression(class_weight="balanced", max_iter=1000)


class Seals(SampleDraws):
    """SEALS candidate selection over a Session (or plain arrays via :meth:`from_arrays`).

    Parameters follow scikit-learn: ``fit`` returns self, learned state ends in ``_``.  ``strategy`` is
    a name (entropy, margin, least_confidence, random, most_likely_positive, information_density,
    kcenter), an object with ``query(X, y, clf, n)`` or a modAL-style function.  ``target`` (a class
    name or index) switches to one-vs-rest search for that concept.  ``batch`` is how many ids
    ``candidates()`` returns when no n is given.

    ``background_negatives`` (search mode only, i.e. with a ``target``): that many items drawn once at
    random from the whole data set (seeded by ``random_state``) join training as *weak negatives* with
    sample weight ``background_weight``, unless they are labeled.  A rare concept is almost absent from a
    random sample (0.1% prevalence: ~2 positives in 2,000), and SEALS' own labeled negatives all lie near
    the seeds, so without them the classifier never sees far-away clusters and ranks them badly.  This
    adds no scoring of the whole data (selection still scores only the pool) and applies equally to a
    full scan.  Ignored in multi-class mode (no class can be assumed for unlabeled items).  Estimators
    whose ``fit`` takes no ``sample_weight`` get the background rows unweighted.

    ``explore``: a fixed random sample of the data (a count, or a fraction of N when < 1; drawn once,
    seeded, disjoint from the background sample unless that leaves too few items) whose unlabeled
    members are scored every round beside the kNN pool.  The pool only reaches what is connected to the labeled items; a concept made of
    several far-apart clusters is missed wherever no seed fell.  A member of such a cluster in the
    exploration sample can be picked by the strategy, and once labeled its neighbours join the pool.
    It adds ``explore`` rows to each round's scoring (1% of N by default) and to the fraction scored.
    ``explore=0`` is the paper's SEALS.  With a FAISS IVF index the sample is stratified by coarse cell
    (every IVF list gives about the same number of items, all of a smaller one), so a small dense region,
    such as a rare sub-cluster that owns a cell, is not left out by chance.

    ``explore_quota`` (search mode, strategies with scores): that fraction of each batch (8 of 50 by
    default, rounded) goes to the best-scoring unlabeled exploration items outside the kNN pool, the
    rest to the best of everything scored; the batch is returned best score first.  Without it the
    pool's items, near the labels, fill every batch, and a part of the concept seen only through the
    sample is rarely asked.  0 turns it off; a full scan and multi-class mode ignore it.

    ``neighbors``: "search" (default) searches the index for each newly labeled item's k neighbours,
    as in the paper; "graph" looks them up in a precomputed kNN table (``Session.knn_table``, cached on
    disk beside the index; or ``NeighborIndex.knn_table`` / a ``graph=`` array with ``from_arrays``).
    The table costs one search of every item once (about a minute at 1M on 2 cores) and N x k int32,
    and is shared by every concept searched on these embeddings; it takes the search out of each round.
    """

    def __init__(self, session: Any = None, k: int = 100, strategy: Any = "entropy", target: Any = None,
                 estimator: Any = None, *, full_scan: bool = False, batch: int = 10,
                 random_state: int | None = 0, strategy_params: dict | None = None,
                 background_negatives: int = BACKGROUND_NEGATIVES, background_weight: float = BACKGROUND_WEIGHT,
                 explore: float = EXPLORE, explore_quota: float = EXPLORE_QUOTA, neighbors: str = "search"):
        self.session = session
        self.k = k
        self.strategy = strategy
        self.target = target
        self.estimator = estimator
        self.full_scan = full_scan
        self.batch = batch
        self.random_state = random_state
        self.strategy_params = strategy_params
        self.background_negatives = background_negatives
        self.background_weight = background_weight
        self.explore = explore
        self.explore_quota = explore_quota
        self.neighbors = neighbors
        self._X: np.ndarray | None = None
        self._index: Any = None
        self._graph: np.ndarray | None = None
        self._classes: list[str] | None = None
        self._validate()

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, X: np.ndarray, index: Any = None, classes: Sequence[str] | None = None,
                    graph: np.ndarray | None = None, **params: Any) -> Seals:
        """SEALS over plain (N, d) vectors and an index with ``search(vectors, k)`` (built if None).

        ``graph``: a precomputed (N, >= k) kNN table (see ``neighbors``); giving one implies
        ``neighbors="graph"``."""
        X = X if isinstance(X, np.ndarray) else np.asarray(X)     # a np.memmap stays one
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty 2-D array (N, d); got shape {X.shape}")
        if index is None:
            from ..neighbors import NeighborIndex

            index = NeighborIndex().fit(X)
        self = cls.__new__(cls)
        self.session = None
        self._X, self._index, self._graph = X, index, graph
        if graph is not None:
            params.setdefault("neighbors", "graph")
        self._classes = [str(c) for c in classes] if classes is not None else None
        for name, value in dict(k=100, strategy="entropy", target=None, estimator=None, full_scan=False,
                                batch=10, random_state=0, strategy_params=None,
                                background_negatives=BACKGROUND_NEGATIVES,
                                background_weight=BACKGROUND_WEIGHT, explore=EXPLORE,
                                explore_quota=EXPLORE_QUOTA, neighbors="search").items():
            setattr(self, name, params.pop(name, value))
        if params:
            raise TypeError(f"unknown parameter(s) {sorted(params)}")
        self._validate()
        return self

    @property
    def X(self) -> np.ndarray:
        """The (N, d) vectors searched and scored."""
        return self._X if self._X is not None else self.session.embeddings

    @property
    def index(self) -> Any:
        """The neighbour index (the Session's, or the one given to from_arrays)."""
        return self._index if self._index is not None else self.session.index

    @property
    def classes(self) -> list[str] | None:
        """Class names, when known."""
        if self._classes is not None:
            return self._classes
        return list(self.session.classes) if self.session is not None else None

    def _n_items(self) -> int:
        if self._X is not None:
            return len(self._X)
        return len(self.session)

    def _validate(self) -> None:
        params = dict(self.strategy_params or {})
        key = self.strategy.strip().lower().replace("-", "_") if isinstance(self.strategy, str) else None
        if key in ("random",) or key in ("information_density", "density"):
            params.setdefault("random_state", self.random_state)
        self.strategy_ = as_strategy(self.strategy, **params)
        if key in _NEEDS_TARGET and self.target is None:
            raise ValueError(f"strategy {self.strategy!r} searches for one class: pass target=<class name>")
        if self.estimator is not None and not hasattr(self.estimator, "predict_proba"):
            raise TypeError(f"estimator {type(self.estimator).__name__} has no predict_proba; "
                            "use a probabilistic classifier such as LogisticRegression")
        for name in ("k", "batch", "background_negatives", "background_weight", "explore", "explore_quota"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number; got {v!r} ({type(v).__name__})")
            if not np.isfinite(v):
                raise ValueError(f"{name} must be finite; got {v}")
        if int(self.background_negatives) < 0:
            raise ValueError(f"background_negatives must be >= 0; got {self.background_negatives}")
        if not 0.0 < float(self.background_weight) <= 1.0:
            raise ValueError(f"background_weight must lie in (0, 1]; got {self.background_weight}")
        ex = float(self.explore)
        if not (np.isfinite(ex) and ex >= 0 and (ex < 1 or ex == int(ex))):
            raise ValueError(f"explore must be a count >= 0 or a fraction in [0, 1); got {self.explore}")
        if not 0.0 <= float(self.explore_quota) <= 1.0:
            raise ValueError(f"explore_quota must be a fraction of the batch in [0, 1]; got {self.explore_quota}")
        if int(self.batch) < 1:
            raise ValueError(f"batch must be >= 1; got {self.batch}")
        if self.neighbors not in NEIGHBORS:
            raise ValueError(f"neighbors must be one of {NEIGHBORS}; got {self.neighbors!r}")
        if self.session is None and self._X is None:
            raise TypeError("Seals needs a Session (Seals(session, ...)) or arrays (Seals.from_arrays(X, ...))")
        if self.session is not None and not all(hasattr(self.session, a) for a in ("embeddings", "label_vector")):
            raise TypeError(f"Seals(session) takes a dcai_widgets Session, got {type(self.session).__name__}; "
                            "for plain vectors use Seals.from_arrays(X, index=None, ...)")
        n = self._n_items()
        if not 1 <= int(self.k) < n:
            raise ValueError(f"k={self.k} neighbours asked but there are only {n} items; choose 1 <= k <= {n - 1}")
        self.target_ = self._resolve_target(self.target)
        if self.target_ is not None and isinstance(self.strategy_, MostLikelyPositive):
            self.strategy_.positive = 1

    def _resolve_target(self, target: Any) -> int | None:
        if target is None:
            return None
        classes = self.classes
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            if classes is not None and not 0 <= int(target) < len(classes):
                raise ValueError(f"target class index {target} is out of range; classes are {classes}")
            return int(target)
        if classes is None:
            raise ValueError(f"target {target!r} is a name but no class names are known; pass classes= or "
                             "an integer class index")
        if str(target) not in classes:
            raise ValueError(f"unknown target class {target!r}; choose one of {classes}")
        return classes.index(str(target))

    # -- fitting -----------------------------------------------------------------------------------
    def _label_vector(self, y: Any) -> np.ndarray:
        n = self._n_items()
        if y is None:
            if self.session is None:
                raise TypeError("fit(y) needs the label vector (N,) with -1 for unlabeled when built from arrays")
            y = self.session.label_vector()
        y = np.asarray(y)
        if y.shape != (n,):
            raise ValueError(f"label vector must have shape ({n},) with -1 for unlabeled; got {y.shape}")
        if y.dtype.kind not in "iu":
            raise TypeError(f"label vector must hold integer class indices (-1 = unlabeled); got dtype {y.dtype}")
        return y.astype(np.int64)

    def fit(self, y: np.ndarray | None = None) -> Seals:
        """Grow the pool with the newly labeled items, retrain the estimator and rank the pool.

        Items the session excludes (``Session.exclude``) are neither trained on (nor seed the pool, nor
        serve as background negatives) nor offered as candidates."""
        y = self._label_vector(y)
        out = excluded_mask(self.session, len(y)) if self.session is not None else np.zeros(len(y), bool)
        if out.any():     # an excluded label counts as retracted: the pool drops its neighbours
            y = np.where(out, MISSING, y)
        labeled = np.flatnonzero(y != MISSING)
        if len(labeled) == 0:
            raise ValueError("no labeled items yet: label at least one seed item (e.g. one found by search) "
                             "so SEALS can search its neighbours")
        cname = (lambda t: self.classes[t] if self.classes and t < len(self.classes) else str(t))
        if self.target_ is not None:
            yfit = (y[labeled] == self.target_).astype(np.int64)
            if yfit.sum() == 0:
                raise ValueError(f"no positive of target {cname(self.target_)!r} labeled yet: label at least one "
                                 "seed example of it (search for one, or pick one on the map) before fitting")
            if yfit.sum() == len(yfit):
                raise ValueError(f"every labeled item is {cname(self.target_)!r}: label at least one negative "
                                 "(an item of another class) before fitting")
        else:
            yfit = y[labeled]
            if len(np.unique(yfit)) < 2:
                raise ValueError(f"only one class ({cname(int(yfit[0]))!r}) is labeled: label at least one item "
                                 "of another class before fitting")
        X = self.X
        n = len(y)
        rnd = len(getattr(self, "rounds_", []))

        self._setup(X, y)

        # 1. search: only the newly labeled items (SEALS); nothing for a full scan
        t0 = time.perf_counter()
        if not self.full_scan:
            self.pool_.update(labeled)
            n_cand = len(self.pool_)
            n_searched = self.pool_.n_searched_last_
        else:
            cand = np.flatnonzero(y == MISSING)
            n_cand, n_searched = len(cand), 0
        t1 = time.perf_counter()
        if n_cand == 0 and (y == MISSING).any() and not len(self._explore(y)):
            raise ValueError(f"the candidate pool is empty: all k={self.k} neighbours of the {len(labeled)} labeled "
                             "items are labeled already; increase k, or use full_scan=True")

        # 2. train on the labeled items (+ weak background negatives in search mode)
        est = clone(self.estimator) if self.estimator is not None else default_estimator()
        Xfit, yfit_all, wfit = X[labeled], yfit, None
        bg = self._background(y)
        bg = bg[~out[bg]]
        if len(bg):
            Xfit = np.concatenate([Xfit, X[bg]])
            yfit_all = np.concatenate([yfit, np.zeros(len(bg), dtype=np.int64)])
            wfit = np.concatenate([np.ones(len(labeled)), np.full(len(bg), float(self.background_weight))])
        # a few thousand rows train faster on one BLAS thread (no spin-waiting on a busy machine)
        with _blas_limit(1 if len(yfit_all) <= 20_000 else None):
            if wfit is not None and _takes_sample_weight(est):
                est.fit(Xfit, yfit_all, sample_weight=wfit)
            else:
                est.fit(Xfit, yfit_all)
        t2 = time.perf_counter()

        # 3. score the candidates (labeled rows ride along for strategies that need them)
        if self.full_scan:
            Xr, yr = X, np.full(n, MISSING, dtype=np.int64)
            yr[labeled] = yfit
            row_ids = None
        else:
            row_ids, Xr, yr = self._pool_rows(X, y)
            cand = row_ids[:self._rows.m]     # the unlabeled rows come first, in the buffer's order
        m = max(int(self.batch), 1)
        n_rows = len(cand)    # rows scored this round (the report's n_scored)
        keep = ~out[cand]     # excluded items are scored with the rest (rows are shared) but never offered
        with _blas_limit(_scoring_threads(est, len(Xr))):
            if isinstance(self.strategy_, ScoreStrategy):
                scores = np.asarray(self.strategy_.score(Xr, yr, est), dtype=np.float64)
                exo = None if self.full_scan else self._rows.exo[:len(cand)][keep]
                cand, scores = cand[keep], scores[keep]
                self.scores_, self.candidates_pool_ = scores, cand
                self._outside = None if exo is None else np.flatnonzero(exo)
                ranking = cand[self._order(m)]
            else:
                rows = np.asarray(self.strategy_.query(Xr, yr, est, m + int((~keep).sum())), dtype=np.int64)
                ranking = rows if row_ids is None else row_ids[rows]
                ranking = ranking[~out[ranking]][:m]
                cand = cand[keep]
                self.scores_ = None
        t3 = time.perf_counter()

        self.estimator_ = est
        knn_pool = len(self.pool_) if not self.full_scan else n_rows
        self.candidates_pool_ = cand
        self.ranking_ = ranking
        self._y = y
        self._Xr, self._yr, self._row_ids = Xr, yr, row_ids
        self._out = out
        ever = self._fraction_scored(y) if not self.full_scan else float((y == MISSING).mean())
        if self.full_scan:
            self.ever_full_ = max(getattr(self, "ever_full_", 0.0), ever)
            ever = self.ever_full_
        pos = int((y[labeled] == self.target_).sum()) if self.target_ is not None else None
        self.rounds_ = getattr(self, "rounds_", []) + [dict(
            round=rnd, n_labeled=len(labeled), pool_size=knn_pool, n_explore=n_rows - knn_pool,
            n_scored=n_rows, fraction_scored=ever,
            positives_found=pos, n_searched=n_searched, search_s=t1 - t0, train_s=t2 - t1, score_s=t3 - t2,
            select_s=(t1 - t0) + (t3 - t2))]
        return self

    def _setup(self, X: np.ndarray, y: np.ndarray) -> None:
        """One-time work before the first round, kept out of the rounds' seconds (``setup_s_`` has it):
        the pool (and its kNN table), the background and exploration draws, the exploration rows, the
        BLAS thread controller."""
        n = len(y)
        if getattr(self, "_setup_n", None) == n:
            return
        t = time.perf_counter()
        if not self.full_scan and not hasattr(self, "pool_"):
            graph = self._knn_table() if self.neighbors == "graph" else None
            self.pool_ = CandidatePool(X, None if graph is not None else self.index, k=int(self.k), graph=graph)
        self._background_ids(n)
        if not self.full_scan:
            self._explore(y)
            self._reset_rows(X, y)     # the exploration sample's rows, gathered once
        _controller()
        self.setup_s_ = time.perf_counter() - t
        self._setup_n = n

    def _knn_table(self) -> np.ndarray:
        """The precomputed kNN table for ``neighbors="graph"``: given, the Session's (cached on disk), or
        computed from the index (not counted in any round's seconds: it is built once, like the index)."""
        k = int(self.k)
        if self._graph is not None:
            return self._graph
        if self.session is not None and hasattr(self.session, "knn_table"):
            return self.session.knn_table(k)
        if not hasattr(self.index, "knn_table"):
            raise TypeError(f"neighbors='graph' needs a NeighborIndex (it has knn_table) or a graph= table; "
                            f"got {type(self.index).__name__}")
        self._graph = self.index.knn_table(k)
        return self._graph

    def _order(self, n: int) -> np.ndarray:
        """Positions in the scored candidates of the ``n`` to ask, best score first: the best of everything
        scored, except that ``explore_quota`` of them are the best exploration items outside the pool."""
        scores = self.scores_
        q = min(int(round(float(self.explore_quota) * n)), n)
        outside = getattr(self, "_outside", None)    # positions of unlabeled exploration items not in the pool
        if self.full_scan or self.target_ is None or q <= 0 or not len(scores) or outside is None:
            return _top(scores, n)
        first = outside[_top(scores[outside], q)]
        # the best n - |first| of the rest are among the best n overall (ties: lower position first)
        top = _top(scores, n)
        rest = top[~(top[:, None] == first[None, :]).any(axis=1)][:n - len(first)]     # n x q: tiny
        pick = np.concatenate([first, rest])
        return pick[np.argsort(-scores[pick], kind="stable")]

    def _pool_rows(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows to score, as (ids, vectors, strategy labels): every unlabeled pool member and exploration
        item, then the labeled items when the strategy reads them (k-center, modAL/skactiveml, custom).

        The unlabeled rows are kept in a :class:`RowBuffer` across rounds and updated only where the pool
        changed (``CandidatePool.take_changes``): a round gathers from X just the items new to the pool
        (random rows of a large X cost ~0.4 us each) and moves a buffer row only for each item that left it.
        """
        buf = getattr(self, "_rows", None)
        changed = self.pool_.take_changes() if buf is not None else None
        if buf is None or buf.key != (len(X), getattr(self, "_explore_n", None)) or changed is None:
            self._reset_rows(X, y)
            buf = self._rows
        elif len(changed):
            in_pool = self.pool_.mask()[changed]
            is_ex = self._in_explore(changed)[0]
            want = (y[changed] == MISSING) & (in_pool | is_ex)
            have = buf.holds(changed)
            buf.drop(changed[have & ~want])
            self._add_rows(X, changed[want & ~have])
            at = buf.pos[changed[want]]     # rows that stay or came: an exploration item may have joined the pool
            buf.exo[at] = (is_ex & ~in_pool)[want]
        m = buf.m
        ids, Xr = buf.ids[:m].copy(), buf.X[:m]
        yr = np.full(m, MISSING, dtype=np.int64)
        if not _reads_labeled_rows(self.strategy_):
            return ids, Xr, yr
        lab = self.pool_.labeled_ids()
        yl = y[lab]
        if self.target_ is not None:
            yl = (yl == self.target_).astype(np.int64)
        return np.concatenate([ids, lab]), np.concatenate([Xr, X[lab]]), np.concatenate([yr, yl])

    def _reset_rows(self, X: np.ndarray, y: np.ndarray) -> None:
        """Start the row buffer over with every unlabeled pool member and exploration item, sized to
        them with room to grow (``ROW_RESERVE`` of N, at most ``ROW_RESERVE_MAX`` rows, or twice the rows
        now)."""
        n, d = X.shape
        self.pool_.take_changes()
        rows = np.union1d(self.pool_.ids(), self._explore(y))
        cap = min(n, max(2 * len(rows), min(int(ROW_RESERVE * n), ROW_RESERVE_MAX), 1))
        self._rows = RowBuffer(n, d, cap, key=(n, getattr(self, "_explore_n", None)))
        self._add_rows(X, rows)

    def _add_rows(self, X: np.ndarray, new: np.ndarray) -> None:
        """Add the rows of ``new`` (distinct ids not in the buffer), noting exploration items as scored."""
        if not len(new):
            return
        new = np.sort(new)                       # ascending reads of X
        is_ex, at = self._in_explore(new)
        self._rows.add(X, new, is_ex, is_ex & ~self.pool_.mask()[new])
        if len(at):
            self._explore_ever[at[is_ex]] = True  # scored from this round on

    def _check_fitted(self) -> None:
        if not hasattr(self, "ranking_"):
            raise RuntimeError("Seals is not fitted yet; call fit() first")

    # -- results -----------------------------------------------------------------------------------
    def candidates(self, n: int | None = None) -> list[int]:
        """The ``n`` (default ``batch``) unlabeled ids to ask next, best first; in search mode
        ``explore_quota`` of them are exploration items from outside the pool (``scores()`` keeps the
        strategy's own order)."""
        self._check_fitted()
        n = int(self.batch if n is None else n)
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        if n <= len(self.ranking_) or len(self.ranking_) == len(self.candidates_pool_):
            return [int(i) for i in self.ranking_[:n]]
        if self.scores_ is not None:
            return [int(i) for i in self.candidates_pool_[self._order(n)]]
        out = self._out
        rows = np.asarray(self.strategy_.query(self._Xr, self._yr, self.estimator_, n + int(out.sum())),
                          dtype=np.int64)
        ids = rows if self._row_ids is None else self._row_ids[rows]
        return [int(i) for i in ids[~out[ids]][:n]]

    @property
    def pool_size(self) -> int:
        """Items in the current candidate pool (all unlabeled items for a full scan)."""
        self._check_fitted()
        return len(self.candidates_pool_)

    @property
    def pool_fraction(self) -> float:
        """Fraction of all items ever scored (ever in the pool)."""
        self._check_fitted()
        return float(self.rounds_[-1]["fraction_scored"])

    def report(self) -> pd.DataFrame:
        """One row per fit: pool size, fraction ever scored, positives found, seconds per phase."""
        return pd.DataFrame(getattr(self, "rounds_", []), columns=REPORT_COLUMNS)

    def scores(self) -> pd.DataFrame:
        """Every candidate, best first, with its rank and strategy score (NaN for strategies without scores)."""
        self._check_fitted()
        if self.scores_ is None:
            ids = np.asarray(self.candidates(len(self.candidates_pool_)), dtype=np.int64)
            score = np.full(len(ids), np.nan)
        else:
            order = np.argsort(-self.scores_, kind="stable")
            ids, score = self.candidates_pool_[order], self.scores_[order]
        return pd.DataFrame({"id": ids, "rank": np.arange(len(ids)), "score": score})

    def proba(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Predicted probability of the target (search mode) or of every class, for these ids."""
        self._check_fitted()
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self._n_items()):
            raise ValueError(f"ids must lie in 0..{self._n_items() - 1}")
        if ids.size == 0:     # nothing asked: an empty answer of the right shape (sklearn refuses 0 rows)
            return np.zeros(0) if self.target_ is not None else np.zeros((0, len(self.estimator_.classes_)))
        p = self.estimator_.predict_proba(self.X[ids])
        if self.target_ is not None:
            return p[:, list(self.estimator_.classes_).index(1)]
        return p

    def similar(self, ids: Sequence[int] | None = None, vectors: np.ndarray | None = None, k: int = 10,
                exclude: Sequence[int] | None = None) -> pd.DataFrame:
        """"More like these": neighbours of items (by id) or query vectors, merged, nearest first
        (:func:`~dcai_widgets.seals.similar.similar_items` over this engine's vectors and index)."""
        return similar_items(self.X, self.index, ids=ids, vectors=vectors, k=k, exclude=exclude)

    def __repr__(self) -> str:
        mode = "full scan" if self.full_scan else f"k={self.k}"
        tgt = f", target={self.target!r}" if self.target is not None else ""
        return f"Seals({mode}, strategy={self.strategy_!r}{tgt})"
