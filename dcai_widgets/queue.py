"""UncertaintyQueue: the placeholder labeling queue (entropy of a logistic regression on the embeddings).

Until LANCET lands, the Label panel asks for the items a logistic regression on `session.embeddings` is
least sure about (highest predictive entropy; Settles 2009, "Active Learning Literature Survey", s. 3.1).
With fewer than two labeled classes it cold-starts on representative items (nearest to k-means centres).
Any object with `fit() -> self` and `candidates(n=None) -> list[int]` can replace it; an optional
`suggest(item_id) -> (label, confidence) | None` lets the panel offer a label to accept (`a`) or reject (`x`).
The confidence it returns is calibrated on cross-fitted predictions of the human labels
(:mod:`dcai_widgets.calibration`): a regression fit on 25 labels said 100% for wrong digits (issue 14).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ._validate import excluded_mask
from .calibration import TopLabelCalibrator, check_params, cross_fit, nn_distance, padded_log_proba


def representatives(X: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` representative row indices of X: the rows nearest to the centres of a k-means with n clusters.

    Centres of dense regions make a better first batch than random or farthest-point picks (which chase
    outliers); measured on digits, see tests/test_queue.py.
    """
    from sklearn.cluster import KMeans

    N = len(X)
    n = min(int(n), N)
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    X = np.asarray(X, dtype=np.float32)
    sample = X if N <= 20_000 else X[rng.choice(N, 20_000, replace=False)]
    km = KMeans(n_clusters=n, n_init=1, max_iter=100, random_state=int(rng.integers(2**31 - 1))).fit(sample)
    centres = km.cluster_centers_.astype(np.float32)
    d = (np.einsum("ij,ij->i", X, X)[:, None] - 2.0 * X @ centres.T
         + np.einsum("ij,ij->i", centres, centres)[None, :])
    picks = []
    for c in np.argsort(np.bincount(km.labels_, minlength=n))[::-1]:  # biggest clusters first
        for i in np.argsort(d[:, c]):
            if int(i) not in picks:
                picks.append(int(i))
                break
    return np.asarray(picks, dtype=np.int64)


class UncertaintyQueue:
    """Rank unlabeled items by the entropy of a LogisticRegression fit on the current human labels.

    Parameters: `session` (a dcai_widgets Session), `cold_start` (how many representative items to offer
    before two classes are labeled), `max_iter`/`C` (the regression), `random_state`, `calibration`
    ("temperature", the default: lowest worst-case ECE from 50 labels in benchmarks/calibration.py; "platt",
    "isotonic", "coverage", or None for the regression's own probability) and
    `calibration_folds` (folds of the human labels for the out-of-fold predictions the calibrator learns from),
    `scorer` (None: the regression; a scikit-learn classifier such as `train.ProxyClassifier`, or a key of
    `session.models`, scores and suggests instead, refit each round: `train.proxy.proxy_estimator`).
    Learned state after `fit()`: `order_` (ids, most uncertain first), `proba_` (N, n_classes) or None,
    `n_labeled_`, `classes_seen_`, `confidence_` (N,) calibrated top-label confidence or None,
    `log_proba_` (N, K over all classes), `oof_`, `calibrator_`.
    """

    def __init__(self, session: Any, cold_start: int = 30, C: float = 1.0, max_iter: int = 200,
                 random_state: int | None = 0, calibration: str | None = "temperature",
                 calibration_folds: int = 5, scorer: Any = None) -> None:
        if not isinstance(cold_start, (int, np.integer)) or cold_start < 1:
            raise ValueError(f"cold_start must be a positive int, got {cold_start!r}")
        if not (isinstance(C, (int, float)) and C > 0):
            raise ValueError(f"C must be a positive number, got {C!r}")
        self.calibration, self.calibration_folds = check_params(calibration, calibration_folds)
        self.confidence_: np.ndarray | None = None
        self.oof_: tuple | None = None
        self.classes_seen_ = np.zeros(0, np.int64)
        self.session = session
        self.cold_start = int(cold_start)
        self.C = float(C)
        self.max_iter = int(max_iter)
        self.random_state = random_state
        self.scorer = scorer
        self.order_: np.ndarray | None = None
        self.proba_: np.ndarray | None = None
        self.classes_: np.ndarray | None = None
        self.n_labeled_ = 0

    def fit(self) -> UncertaintyQueue:
        """Refit on the labels now in the store and re-rank the unlabeled items."""
        s = self.session
        y = np.asarray(s.label_vector())
        X = np.asarray(s.embeddings, dtype=np.float32)
        rng = np.random.default_rng(self.random_state)
        out = excluded_mask(s, len(y))   # excluded items: never asked, their labels not trained on
        labeled = (y >= 0) & ~out
        unlabeled = np.flatnonzero((y < 0) & ~out)
        self.n_labeled_ = int(labeled.sum())
        present = np.unique(y[labeled])
        self.classes_seen_ = present
        if len(present) < 2:
            self.proba_, self.classes_, self.confidence_, self.oof_ = None, None, None, None
            if len(unlabeled) == 0:
                self.order_ = unlabeled
                return self
            first = unlabeled[representatives(X[unlabeled], min(self.cold_start, len(unlabeled)), rng)]
            rest = np.setdiff1d(unlabeled, first)
            self.order_ = np.concatenate([first, rng.permutation(rest)]).astype(np.int64)
            return self
        clf = self._regression(X, y, np.flatnonzero(labeled))
        proba = clf.predict_proba(X).astype(np.float32)
        ent = -(proba * np.log(np.clip(proba, 1e-12, 1.0))).sum(axis=1)
        self.proba_, self.classes_ = proba, clf.classes_
        self.order_ = unlabeled[np.argsort(-ent[unlabeled], kind="stable")].astype(np.int64)
        K = len(s.classes)
        self.log_proba_ = padded_log_proba(clf.predict_log_proba(X), clf.classes_, K)
        self.raw_confidence_ = np.exp(self.log_proba_.max(1))
        self.distance_ = nn_distance(X, np.flatnonzero(labeled))
        if self.calibration is None:
            self.oof_, self.calibrator_, self.confidence_ = None, None, self.raw_confidence_
            return self
        ids = np.flatnonzero(labeled)
        if len(ids) >= 2 * self.calibration_folds:
            def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
                if len(np.unique(y[train])) < 2:
                    return padded_log_proba(np.zeros((len(test), 1)), np.unique(y[train]), K)
                m = self._regression(X, y, train)
                return padded_log_proba(m.predict_log_proba(X[test]), m.classes_, K)

            self.oof_ = cross_fit(ids, y[ids], fit_predict, folds=self.calibration_folds,
                                  seed=int(self.random_state or 0), X=X)
        else:
            self.oof_ = None
        oof = self.oof_ if self.oof_ is not None else (np.zeros((0, K)), np.zeros(0, bool), np.zeros(0))
        self.calibrator_ = TopLabelCalibrator(self.calibration).fit(*oof)
        self.confidence_ = self.calibrator_.predict(self.log_proba_, distance=self.distance_)
        return self

    def _regression(self, X: np.ndarray, y: np.ndarray, train: np.ndarray):
        from sklearn.linear_model import LogisticRegression

        if self.scorer is not None:     # a proxy model scores instead (train.proxy: SVP for active learning)
            from .train.proxy import proxy_estimator

            clf = proxy_estimator(self.session, self.scorer)
        else:
            clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings on tiny label sets are expected
            return clf.fit(X[train], y[train])

    def candidates(self, n: int | None = None) -> list[int]:
        """The next `n` item ids to label (all ranked unlabeled ids when n is None)."""
        if self.order_ is None:
            raise RuntimeError("UncertaintyQueue is not fitted; call fit() first")
        if n is not None and (not isinstance(n, (int, np.integer)) or n < 0):
            raise ValueError(f"n must be a non-negative int or None, got {n!r}")
        order = self.order_ if n is None else self.order_[: int(n)]
        return [int(i) for i in order]

    def suggest(self, item_id: int) -> tuple[str, float] | None:
        """The regression's label for `item_id` and its calibrated confidence, or None before it can predict
        (the panel shows "uncertain" instead of the figure before `calibration.SHOW_PERCENT_FROM` labels)."""
        if self.proba_ is None or self.confidence_ is None:
            return None
        k = int(np.argmax(self.proba_[int(item_id)]))
        return self.session.classes[int(self.classes_[k])], float(self.confidence_[int(item_id)])
