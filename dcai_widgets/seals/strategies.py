"""Query strategies behind one scikit-learn-style protocol: ``query(X, y, clf, n) -> row indices``.

``X`` holds every row the strategy may look at (labeled and unlabeled), ``y`` the class index of each
row or ``-1`` (``MISSING``) for unlabeled rows, ``clf`` a fitted estimator with ``predict_proba``.
``query`` returns the positions (rows of ``X``) of at most ``n`` unlabeled rows, best first.  The same
call runs over the SEALS candidate pool (rows = labeled + pool) or over everything (full scan), so a
strategy never knows which one it serves.  Strategies from modAL (``f(classifier, X, n_instances)``)
or scikit-activeml (``qs.query(X, y, clf, batch_size=n)``) plug in through :func:`as_strategy`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

MISSING = -1

__all__ = [
    "MISSING",
    "STRATEGIES",
    "CallableStrategy",
    "Entropy",
    "InformationDensity",
    "KCenterGreedy",
    "LeastConfidence",
    "Margin",
    "MostLikelyPositive",
    "QueryStrategy",
    "RandomSampling",
    "ScoreStrategy",
    "SkactivemlStrategy",
    "as_strategy",
    "strategy_names",
]


@runtime_checkable
class QueryStrategy(Protocol):
    """Anything with ``query(X, y, clf, n)`` returning row indices of unlabeled rows, best first."""

    def query(self, X: np.ndarray, y: np.ndarray, clf: Any, n: int) -> np.ndarray: ...


def _unlabeled_rows(y: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.asarray(y) == MISSING)


def _check_query_args(X: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows, features); got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have one entry per row of X ({X.shape[0]}); got shape {y.shape}")
    if int(n) < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    return X, y


def _binary_logreg_proba(clf: Any, X: np.ndarray) -> np.ndarray | None:
    """``predict_proba`` of a fitted binary scikit-learn ``LogisticRegression`` on float32 rows, with the
    product in float32: scikit-learn casts X to float64 (a copy as large as X, twice its bytes) and scans
    it for NaN first, which costs more than the product itself.  None when it does not apply (another
    estimator or dtype, more than two classes) or when a decision value is not finite: a NaN or inf in X
    always reaches its row's decision value, and scikit-learn's own call then raises its clear error."""
    if (type(clf) is not LogisticRegression or not isinstance(X, np.ndarray) or X.dtype != np.float32
            or X.ndim != 2 or getattr(clf, "coef_", None) is None or np.size(clf.classes_) != 2
            or X.shape[1] != clf.coef_.shape[1] or getattr(clf, "multi_class", None) == "multinomial"):
        return None     # (older scikit-learn gives a binary "multinomial" model sigmoid(2d), not sigmoid(d))
    d = X @ clf.coef_[0].astype(np.float32)
    d = d.astype(np.float64) + float(clf.intercept_[0])
    if not np.isfinite(d).all():
        return None
    p1 = expit(d, out=d)
    return np.stack([1.0 - p1, p1], axis=1)


def _proba(clf: Any, X: np.ndarray) -> np.ndarray:
    p = _binary_logreg_proba(clf, X)
    return clf.predict_proba(X) if p is None else p


def _predict_proba(clf: Any, X: np.ndarray, rows: np.ndarray, chunk: int = 131_072) -> np.ndarray:
    """Probabilities for ``X[rows]``; when most rows are asked, predicts on contiguous slices of X (views,
    no copy of a full-scan X) and keeps the rows asked."""
    if not hasattr(clf, "predict_proba"):
        raise TypeError(f"{type(clf).__name__} has no predict_proba; use a probabilistic classifier")
    n = len(X)
    if len(rows) == 0:
        return np.zeros((0, len(getattr(clf, "classes_", [0, 1]))))
    if len(rows) >= 0.5 * n:
        p = _proba(clf, X) if n <= chunk else np.vstack([_proba(clf, X[i:i + chunk]) for i in range(0, n, chunk)])
        return p if len(rows) == n else p[rows]
    return np.vstack([_proba(clf, X[rows[i:i + chunk]]) for i in range(0, len(rows), chunk)])


class ScoreStrategy:
    """Base for strategies that give every unlabeled row a score; higher is asked first."""

    name = "score"
    # False where score() looks at the unlabeled rows only: SEALS then hands over no labeled rows
    reads_labeled_rows = True

    def score(self, X: np.ndarray, y: np.ndarray, clf: Any) -> np.ndarray:
        """Scores of the unlabeled rows, in the order of ``np.flatnonzero(y == MISSING)``."""
        raise NotImplementedError

    def query(self, X: np.ndarray, y: np.ndarray, clf: Any, n: int) -> np.ndarray:
        """Top-``n`` unlabeled rows by score (stable: ties keep row order)."""
        X, y = _check_query_args(X, y, n)
        rows = _unlabeled_rows(y)
        if len(rows) == 0 or n == 0:
            return np.zeros(0, dtype=np.int64)
        s = np.asarray(self.score(X, y, clf), dtype=np.float64)
        return rows[_top(s, int(n))]

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` highest scores, best first, ties broken by position."""
    n = min(n, len(scores))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    neg = -np.asarray(scores, dtype=np.float64)
    if np.isnan(neg).any():     # NaN ranks last, as -inf (the common case skips nan_to_num's copy)
        neg = -np.nan_to_num(scores, nan=-np.inf)
    if n < len(scores):
        part = np.argpartition(neg, n - 1)[:n]
        # keep ties deterministic: include every row tied with the n-th score, then stable-sort
        cut = neg[part].max()
        part = np.flatnonzero(neg <= cut)
    else:
        part = np.arange(len(scores))
    order = part[np.argsort(neg[part], kind="stable")]
    return order[:n]


class Entropy(ScoreStrategy):
    """Max entropy of the predicted class distribution (uncertainty sampling, Settles 2009)."""

    name = "entropy"
    reads_labeled_rows = False

    def score(self, X, y, clf):
        p = _predict_proba(clf, X, _unlabeled_rows(y))
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)


class Margin(ScoreStrategy):
    """Smallest gap between the two most probable classes (margin sampling)."""

    name = "margin"
    reads_labeled_rows = False

    def score(self, X, y, clf):
        p = _predict_proba(clf, X, _unlabeled_rows(y))
        if p.shape[1] < 2:
            return np.zeros(len(p))
        top2 = -np.partition(-p, 1, axis=1)[:, :2]
        return -(top2[:, 0] - top2[:, 1])


class LeastConfidence(ScoreStrategy):
    """Lowest probability of the predicted class (least-confidence sampling)."""

    name = "least_confidence"
    reads_labeled_rows = False

    def score(self, X, y, clf):
        p = _predict_proba(clf, X, _unlabeled_rows(y))
        return 1.0 - p.max(axis=1)


class RandomSampling(ScoreStrategy):
    """Uniformly random order; the baseline every other strategy must beat."""

    name = "random"
    reads_labeled_rows = False

    def __init__(self, random_state: int | None = 0):
        self.random_state = random_state
        self._rng = np.random.default_rng(random_state)

    def score(self, X, y, clf):
        return self._rng.random(len(_unlabeled_rows(y)))


class MostLikelyPositive(ScoreStrategy):
    """Highest probability of the target class (active search for a rare concept, Jiang et al. 2017)."""

    name = "most_likely_positive"
    reads_labeled_rows = False

    def __init__(self, positive: int = 1):
        self.positive = positive

    def score(self, X, y, clf):
        classes = list(getattr(clf, "classes_", []))
        if self.positive not in classes:
            raise ValueError(
                f"the classifier never saw the target class {self.positive!r} (classes_={classes}); "
                "label at least one positive seed before asking for most-likely positives")
        p = _predict_proba(clf, X, _unlabeled_rows(y))
        return p[:, classes.index(self.positive)]


def _similarity_mean(A: np.ndarray, B: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Mean over rows b of B of ``1 / (1 + ||a - b||)`` for each row a of A (modAL's euclidean form)."""
    A = np.ascontiguousarray(A, dtype=np.float32)
    B = np.ascontiguousarray(B, dtype=np.float32)
    out = np.empty(len(A), dtype=np.float64)
    if len(B) == 0:
        out[:] = 0.0
        return out
    bb = np.einsum("ij,ij->i", B, B)
    for i in range(0, len(A), chunk):
        a = A[i:i + chunk]
        d2 = np.einsum("ij,ij->i", a, a)[:, None] + bb[None, :] - 2.0 * (a @ B.T)
        np.maximum(d2, 0.0, out=d2)
        out[i:i + chunk] = (1.0 / (1.0 + np.sqrt(d2))).mean(axis=1)
    return out


class InformationDensity(ScoreStrategy):
    """Uncertainty times mean similarity to the other unlabeled rows, to the power beta (Settles & Craven 2008).

    Quadratic in the number of unlabeled rows: over a SEALS pool it stays small; over a full scan it
    is the cost SEALS avoids.  ``max_reference`` caps the rows the mean is taken over (a uniform sample,
    an unbiased estimate of the same mean) when even the pool is too large; ``None`` means exact.
    """

    name = "information_density"

    @property
    def reads_labeled_rows(self) -> bool:
        return bool(getattr(self.base, "reads_labeled_rows", True))

    def __init__(self, beta: float = 1.0, base: ScoreStrategy | None = None, max_reference: int | None = None,
                 random_state: int | None = 0):
        if beta < 0:
            raise ValueError(f"beta must be >= 0; got {beta}")
        self.beta = beta
        self.base = base if base is not None else Entropy()
        self.max_reference = max_reference
        self.random_state = random_state

    def score(self, X, y, clf):
        rows = _unlabeled_rows(y)
        u = self.base.score(X, y, clf)
        ref = rows
        if self.max_reference is not None and len(rows) > self.max_reference:
            rng = np.random.default_rng(self.random_state)
            ref = np.sort(rng.choice(rows, self.max_reference, replace=False))
        dens = _similarity_mean(X[rows], X[ref])
        return u * dens ** self.beta


class KCenterGreedy:
    """Core-set selection: repeatedly take the unlabeled row farthest from every labeled or chosen row
    (Sener & Savarese 2018; used as a SEALS strategy in Coleman et al. 2020, Selection via Proxy)."""

    name = "kcenter"

    def query(self, X: np.ndarray, y: np.ndarray, clf: Any, n: int) -> np.ndarray:
        X, y = _check_query_args(X, y, n)
        rows = _unlabeled_rows(y)
        centers = np.flatnonzero(y != MISSING)
        n = min(int(n), len(rows))
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        U = np.ascontiguousarray(X[rows], dtype=np.float32)
        uu = np.einsum("ij,ij->i", U, U)
        if len(centers):
            mind = np.full(len(rows), np.inf)
            C = np.ascontiguousarray(X[centers], dtype=np.float32)
            cc = np.einsum("ij,ij->i", C, C)
            for i in range(0, len(C), 1024):
                d2 = uu[:, None] + cc[None, i:i + 1024] - 2.0 * (U @ C[i:i + 1024].T)
                mind = np.minimum(mind, d2.min(axis=1))
        else:
            mind = np.full(len(rows), np.inf)
        chosen = np.empty(n, dtype=np.int64)
        for j in range(n):
            # first pick with no labeled centre: the row farthest from the mean (deterministic)
            if not np.isfinite(mind).any():
                mind = uu + U.mean(0) @ U.mean(0) - 2.0 * (U @ U.mean(0))
            pick = int(np.argmax(mind))
            chosen[j] = pick
            d2 = uu + uu[pick] - 2.0 * (U @ U[pick])
            mind = np.minimum(mind, d2)
            mind[pick] = -np.inf
        return rows[chosen]

    def __repr__(self) -> str:
        return "KCenterGreedy()"


class CallableStrategy:
    """Wraps a modAL-style function ``f(classifier, X_unlabeled, n_instances=n)`` as a QueryStrategy."""

    def __init__(self, func: Callable[..., Any]):
        if not callable(func):
            raise TypeError(f"expected a callable query function; got {type(func).__name__}")
        self.func = func
        self.name = getattr(func, "__name__", "callable")

    def query(self, X: np.ndarray, y: np.ndarray, clf: Any, n: int) -> np.ndarray:
        X, y = _check_query_args(X, y, n)
        rows = _unlabeled_rows(y)
        if len(rows) == 0 or n == 0:
            return np.zeros(0, dtype=np.int64)
        out = self.func(clf, X[rows], n_instances=min(int(n), len(rows)))
        idx = out[0] if isinstance(out, tuple) else out
        idx = np.asarray(idx, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= len(rows)):
            raise ValueError(f"query function {self.name} returned positions outside 0..{len(rows) - 1}")
        return rows[idx]

    def __repr__(self) -> str:
        return f"CallableStrategy({self.name})"


class SkactivemlStrategy:
    """Wraps a scikit-activeml pool strategy (``qs.query(X, y, clf, batch_size=n)``, NaN = unlabeled):
    the estimator is wrapped in ``skactiveml.classifier.SklearnClassifier`` and refit by the strategy."""

    def __init__(self, qs: Any):
        if not callable(getattr(qs, "query", None)):
            raise TypeError(f"expected a scikit-activeml query strategy; got {type(qs).__name__}")
        self.qs = qs
        self.name = type(qs).__name__

    def query(self, X: np.ndarray, y: np.ndarray, clf: Any, n: int) -> np.ndarray:
        from sklearn.base import clone
        from skactiveml.classifier import SklearnClassifier

        X, y = _check_query_args(X, y, n)
        rows = _unlabeled_rows(y)
        if len(rows) == 0 or n == 0:
            return np.zeros(0, dtype=np.int64)
        y_nan = np.where(y == MISSING, np.nan, y).astype(np.float64)
        classes = getattr(clf, "classes_", None)
        if classes is None:
            classes = np.unique(y[y != MISSING])
        wrapped = SklearnClassifier(clone(clf), classes=np.asarray(classes), missing_label=np.nan)
        idx = self.qs.query(X, y_nan, wrapped, fit_clf=True, batch_size=min(int(n), len(rows)))
        return np.asarray(idx, dtype=np.int64).ravel()

    def __repr__(self) -> str:
        return f"SkactivemlStrategy({self.qs!r})"


STRATEGIES: dict[str, Callable[..., Any]] = {
    "entropy": Entropy,
    "max_entropy": Entropy,
    "margin": Margin,
    "least_confidence": LeastConfidence,
    "random": RandomSampling,
    "most_likely_positive": MostLikelyPositive,
    "mlp": MostLikelyPositive,
    "information_density": InformationDensity,
    "density": InformationDensity,
    "kcenter": KCenterGreedy,
    "k_center": KCenterGreedy,
    "coreset": KCenterGreedy,
}


def strategy_names() -> list[str]:
    """The built-in strategy names (aliases included)."""
    return sorted(STRATEGIES)


def as_strategy(strategy: Any, **params: Any) -> Any:
    """A QueryStrategy from a name, an object with ``.query``, or a modAL-style function; fails fast."""
    if isinstance(strategy, str):
        key = strategy.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(strategy_names())}, "
                             "or pass an object with query(X, y, clf, n)")
        return STRATEGIES[key](**params)
    if params:
        raise TypeError("strategy parameters are only accepted with a strategy name")
    if hasattr(strategy, "query") and callable(strategy.query):
        if type(strategy).__module__.startswith("skactiveml"):
            return SkactivemlStrategy(strategy)
        return strategy
    if callable(strategy):
        return CallableStrategy(strategy)
    raise TypeError(f"strategy must be a name, an object with query(X, y, clf, n) or a function; "
                    f"got {type(strategy).__name__}")
