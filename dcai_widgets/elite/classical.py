"""A classical, label-free anomaly score for the Clean tab's first ranking, before any expert label.

ELITE needs a few expert labels of both kinds; the items the expert labels first are the top of an
unsupervised ranking, so that ranking decides how soon the validation set holds anomalies at all.
HBOS (Goldstein & Dengel, "Histogram-based Outlier Score", KI 2012) sums each feature's negative log
histogram density. Over ADBench's CIFAR10_0, 20news_3, optdigits, cardio and thyroid at pollutions 2-30%,
and over digits / MNIST pixels and two scikit-learn tables with one class made rare, it ranked anomalies
higher on average than Isolation Forest, ECOD, COPOD, kNN, LOF and the unsupervised Deep SVDD /
autoencoder (``benchmarks/clean_start.py``; RESULTS.md, "Clean: the first ranking").

The scores equal PyOD's ``HBOS()`` (static bins; tests/elite check it), computed with NumPy per
feature: PyOD's numba kernel is compiled afresh in every kernel that imports it (6-7 s on the 2-core
box, for a ranking that takes milliseconds), which the Clean tab's first paint would pay.
"""
from __future__ import annotations

import numpy as np

CLASSICAL = ("hbos",)


def hbos(X_fit: np.ndarray, X: np.ndarray, n_bins: int = 10, alpha: float = 0.1, tol: float = 0.5) -> np.ndarray:
    """HBOS scores of the rows of ``X`` (higher = more anomalous) from histograms of ``X_fit``: per
    feature ``-log2(density + alpha)`` of the value's bin, summed; a value outside the histogram's range
    by at most ``tol`` of an edge bin's width counts in that bin, further out as the emptiest bin
    (PyOD's rules and defaults)."""
    X_fit = np.asarray(X_fit, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    score = np.zeros(len(X))
    for i in range(X.shape[1]):
        hist, edges = np.histogram(X_fit[:, i], bins=n_bins, density=True)
        logd = np.log2(hist + alpha)
        x = X[:, i]
        b = np.digitize(x, edges, right=True)          # 1..n_bins inside, 0 below, n_bins + 1 above
        s = logd[np.clip(b, 1, n_bins) - 1]
        lo, hi = b == 0, b == n_bins + 1
        s[lo] = np.where(edges[0] - x[lo] <= (edges[1] - edges[0]) * tol, logd[0], logd.min())
        s[hi] = np.where(x[hi] - edges[-1] <= (edges[-1] - edges[-2]) * tol, logd[-1], logd.min())
        score += s
    return -score


def classical_scores(X: np.ndarray, train: np.ndarray, method: str = "hbos") -> np.ndarray:
    """(N,) float64 anomaly scores (higher = more anomalous) of every row of ``X`` from a ``method``
    detector fit on the rows ``train`` (the unlabeled pool)."""
    if method not in CLASSICAL:
        raise ValueError(f"unknown classical detector {method!r}; use one of {CLASSICAL}")
    if len(train) < 2:
        raise ValueError(f"the pool has {len(train)} item(s): a detector needs at least 2 unlabeled, "
                         "not excluded items")
    X = np.asarray(X).reshape(len(X), -1)
    return hbos(X[train], X)
