"""A classical, label-free anomaly score for the Clean tab's first ranking, before any expert label.

ELITE needs a few expert labels of both kinds; the items the expert labels first are the top of an
unsupervised ranking, so that ranking decides how soon the validation set holds anomalies at all.
HBOS (Goldstein & Dengel, "Histogram-based Outlier Score", KI 2012; PyOD's implementation) sums each
feature's negative log histogram density. Over ADBench's CIFAR10_0, 20news_3, optdigits, cardio and
thyroid at pollutions 2-30%, and over digits / MNIST pixels and two scikit-learn tables with one class
made rare, it ranked anomalies higher on average than Isolation Forest, ECOD, COPOD, kNN, LOF and the
unsupervised Deep SVDD / autoencoder (``benchmarks/clean_start.py``; RESULTS.md, "Clean: the first
ranking").
"""
from __future__ import annotations

import numpy as np

CLASSICAL = ("hbos",)


def classical_scores(X: np.ndarray, train: np.ndarray, method: str = "hbos") -> np.ndarray:
    """(N,) float64 anomaly scores (higher = more anomalous) of every row of ``X`` from a ``method``
    detector fit on the rows ``train`` (the unlabeled pool)."""
    if method not in CLASSICAL:
        raise ValueError(f"unknown classical detector {method!r}; use one of {CLASSICAL}")
    if len(train) < 2:
        raise ValueError(f"the pool has {len(train)} item(s): a detector needs at least 2 unlabeled, "
                         "not excluded items")
    from pyod.models.hbos import HBOS  # numba-backed: imported when first needed, not with the package

    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    det = HBOS().fit(X[train])
    return np.asarray(det.decision_function(X), dtype=np.float64)
