"""Calibrating for the pool when the labels were chosen by an active learner: trust-score importance weights.

An active learner (LANCET's DMN candidates) asks about the items its model finds hard, so the cross-fitted
pairs a calibrator learns from are harder than the unlabeled pool at the same score and distance: on the
text set the calibrator learned the asked items' accuracy (72%) and said it for pool labels right 83% of the
time (benchmarks/RESULTS.md, issue 14). What separates the asked items from the pool is the trust score
(Jiang, Kim, Guan & Gupta, "To Trust or Not to Trust a Classifier", NeurIPS 2018): the log of the distance to
the nearest label of another class over the distance to the nearest label of the predicted class, in the
model's label-free input. Weighting each pair by p(pool | trust) / p(labeled | trust), from a logistic
regression between the two samples (covariate-shift correction, Shimodaira 2000; Bickel, Brueckner &
Scheffer, ICML 2007), makes the pairs look like the pool. The weights are for confidences shown on the
pool (propagated labels); a suggestion is shown for an item the learner asks, which is like the pairs
themselves, so its calibrator stays unweighted.
"""
from __future__ import annotations

import numpy as np

from .calibration import fold_ids, sq_distance_chunks

__all__ = ["TRUST_CLIP", "label_distances", "trust_score", "heldout_trust", "trust_weights"]

TRUST_CLIP = 10.0       # |trust score| at most this (a class without labels is infinitely far)
WEIGHT_CLIP = 10.0      # importance weights in [1/WEIGHT_CLIP, WEIGHT_CLIP] after normalising to mean 1
MAX_POOL = 50_000       # pool items the weighting regression sees (a fixed random sample beyond that)


def label_distances(X: np.ndarray, labeled: np.ndarray, y_labeled: np.ndarray, pred: np.ndarray,
                    rows: np.ndarray | None = None, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(distance to the nearest labeled item, trust score) for each row of ``X`` (or of ``X[rows]``).

    ``labeled`` (m,) item ids with classes ``y_labeled`` (m,); ``pred`` (len(rows),) each row's predicted
    class. The same chunked pass over the labels as :func:`calibration.nn_distance`
    (:func:`calibration.sq_distance_chunks`): the nearest distance comes free."""
    X = np.asarray(X, np.float32)
    labeled, yl = np.asarray(labeled, np.int64), np.asarray(y_labeled, np.int64)
    rows = np.arange(len(X)) if rows is None else np.asarray(rows, np.int64)
    pred = np.asarray(pred, np.int64).reshape(-1)
    if len(pred) != len(rows):
        raise ValueError(f"pred has {len(pred)} classes for {len(rows)} rows")
    if not len(labeled):
        return np.full(len(rows), np.inf), np.zeros(len(rows))
    order = np.argsort(yl, kind="stable")
    Y, ys = X[labeled[order]], yl[order]
    classes, starts = np.unique(ys, return_index=True)
    near, trust = np.empty(len(rows)), np.empty(len(rows))
    for sl, d2 in sq_distance_chunks(X, Y, rows, chunk):
        D = np.sqrt(np.maximum(np.minimum.reduceat(d2, starts, axis=1), 0.0))   # (chunk, classes seen)
        near[sl] = D.min(1)
        trust[sl] = trust_score(D, np.searchsorted(classes, pred[sl]), known=np.isin(pred[sl], classes))
    return near, trust


def trust_score(D: np.ndarray, col: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Jiang et al. (2018) from class distances ``D`` (n, C) and the column ``col`` (n,) of each row's
    predicted class: log(nearest other class / nearest predicted class), in [-TRUST_CLIP, TRUST_CLIP]; > 0
    when the nearest label agrees with the prediction. ``known`` False: the predicted class has no label
    (the score is then -TRUST_CLIP)."""
    D = np.asarray(D, np.float64)
    idx = np.arange(len(D))
    col = np.clip(np.asarray(col, np.int64), 0, max(D.shape[1] - 1, 0))
    same = D[idx, col]
    other = D.copy()
    other[idx, col] = np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.log(np.maximum(other.min(1), 1e-9)) - np.log(np.maximum(same, 1e-9))
    t = np.clip(np.nan_to_num(t, nan=0.0, posinf=TRUST_CLIP, neginf=-TRUST_CLIP), -TRUST_CLIP, TRUST_CLIP)
    if known is not None:
        t = np.where(np.asarray(known, bool), t, -TRUST_CLIP)
    return t


def heldout_trust(X: np.ndarray, labeled: np.ndarray, y: np.ndarray, pred: np.ndarray, folds: int,
                  seed: int) -> np.ndarray:
    """Trust score of each labeled item against the labels its cross-fitting fold's model was trained on
    (the folds of :func:`calibration.cross_fit` with the same ``folds`` and ``seed``), as the "coverage"
    calibrator's distance is; ``pred`` (m,) the fold model's predicted class of each."""
    labeled, y, pred = np.asarray(labeled, np.int64), np.asarray(y, np.int64), np.asarray(pred, np.int64)
    f = fold_ids(y, folds, seed)
    out = np.zeros(len(labeled))
    for k in range(int(folds)):
        test = np.flatnonzero(f == k)
        if len(test):
            train = f != k
            out[test] = label_distances(X, labeled[train], y[train], pred[test], rows=labeled[test])[1]
    return out


def trust_weights(source: np.ndarray, target: np.ndarray, clip: float = WEIGHT_CLIP, seed: int = 0) -> np.ndarray:
    """Importance weights p(target | t) / p(source | t) for the ``source`` trust scores (n,), from a balanced
    logistic regression between the two samples (at most ``MAX_POOL`` target items, a fixed random sample),
    normalised to mean 1 and clipped to [1/clip, clip]. Equal weights when either sample is empty or the
    scores do not vary."""
    a = np.asarray(source, np.float64).reshape(-1)
    b = np.asarray(target, np.float64).reshape(-1)
    if not len(a) or not len(b) or np.ptp(np.r_[a, b]) == 0:
        return np.ones(len(a))
    if len(b) > MAX_POOL:
        b = np.random.default_rng(seed).choice(b, MAX_POOL, replace=False)
    from sklearn.linear_model import LogisticRegression

    x = np.r_[a, b]
    mu, sd = x.mean(), x.std() + 1e-12
    z = np.r_[np.ones(len(a)), np.zeros(len(b))]
    clf = LogisticRegression(class_weight="balanced", max_iter=1000).fit(((x - mu) / sd)[:, None], z)
    p = np.clip(clf.predict_proba(((a - mu) / sd)[:, None])[:, 1], 1e-9, 1 - 1e-9)
    w = (1 - p) / p
    return np.clip(w / w.mean(), 1.0 / clip, clip)
