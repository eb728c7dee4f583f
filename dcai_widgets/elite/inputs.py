"""What ELITE trains and validates on, from a Session or from plain arrays, checked with clear errors.

The pool (training set) is every item that is neither labeled by the expert nor excluded; the expert's
normal/anomaly labels are the validation set. An excluded item may carry an "anomaly" label (the Clean
panel excludes confirmed anomalies; they stay in the validation set), but an excluded item labeled
"normal" is a contradiction and an error.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class Inputs:
    X: np.ndarray            # (N, d) standardised features, or (N, C, H, W) standardised images
    train_ids: np.ndarray    # the unlabeled, not excluded pool
    val_ids: np.ndarray      # expert-labeled items
    val_labels: np.ndarray   # 1 anomalous, 0 normal
    excluded: np.ndarray


def _standardise(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Z-score each feature with the pool's mean and spread (constant features are left centred)."""
    ref = X[rows] if len(rows) else X
    mu = ref.mean(0)
    sd = ref.std(0)
    sd[sd < 1e-8] = 1.0
    return ((X - mu) / sd).astype(np.float32)


def _images(arr: np.ndarray) -> np.ndarray:
    """(N, H, W[, C]) pixels -> (N, C, H, W) float32, each image standardised (global contrast
    normalisation, as Ruff et al. preprocess CIFAR-10)."""
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        a = np.moveaxis(a, -1, 1)
    else:
        raise ValueError(f"backbone='conv' needs images of shape (N, H, W) or (N, H, W, C), got {a.shape}")
    if a.shape[2] < 4 or a.shape[3] < 4:
        raise ValueError(f"images of {a.shape[2]}x{a.shape[3]} pixels are too small for the conv backbone (>= 4x4)")
    flat = a.reshape(len(a), -1)
    mu = flat.mean(1)[:, None, None, None]
    sd = flat.std(1)[:, None, None, None]
    return ((a - mu) / np.where(sd < 1e-8, 1.0, sd)).astype(np.float32)


def _check_finite(X: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(~np.isfinite(X.reshape(len(X), -1)).all(1))
    if len(bad):
        raise ValueError(f"{what} has NaN or infinite values in {len(bad)} item(s) (first: {bad[:5].tolist()}); "
                         "ELITE cannot score them: clean or exclude those items first")


def _codes(labels: Any, n: int, normal: str, anomaly: str) -> np.ndarray:
    """(n,) int: 1 anomalous, 0 normal, -1 unlabeled, from 1/0/-1 numbers or the two class names."""
    if labels is None:
        return np.full(n, -1, dtype=np.int64)
    arr = np.asarray(labels, dtype=object).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"labels has {len(arr)} entries but X has {n} rows; give one per row (-1 = unlabeled)")
    out = np.full(n, -1, dtype=np.int64)
    for i, v in enumerate(arr):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, str):
            if v == anomaly:
                out[i] = 1
            elif v == normal:
                out[i] = 0
            else:
                raise ValueError(f"label {v!r} at row {i} is neither {normal!r} nor {anomaly!r}")
        elif v in (1, 0, -1) and not isinstance(v, bool):
            out[i] = int(v)
        else:
            raise ValueError(f"label {v!r} at row {i}: use 1 (anomalous), 0 (normal) or -1 (unlabeled)")
    return out


def _assemble(X: np.ndarray, codes: np.ndarray, excluded: np.ndarray, normal: str, anomaly: str,
              images: bool, need_labels: bool, where: str) -> Inputs:
    n = len(X)
    excl = np.zeros(n, dtype=bool)
    excl[excluded] = True
    clash = np.flatnonzero(excl & (codes == 0))
    if len(clash):
        raise ValueError(f"items {clash[:5].tolist()} are labeled {normal!r} but excluded from training; "
                         f"bring them back (session.exclude(ids, excluded=False)) or relabel them")
    val = np.flatnonzero(codes >= 0)
    n_a, n_n = int((codes == 1).sum()), int((codes == 0).sum())
    if need_labels and (n_a == 0 or n_n == 0):
        if n_a == 0 and n_n == 0:
            raise ValueError(f"ELITE needs the expert's labels as its validation set, and {where} has none: "
                             f"label at least one item {normal!r} and one {anomaly!r}")
        missing = anomaly if n_a == 0 else normal
        raise ValueError(f"ELITE needs both classes in its validation set; {where} has {n_n} {normal!r} and "
                         f"{n_a} {anomaly!r} label(s): label at least one item {missing!r}")
    train = np.flatnonzero((codes < 0) & ~excl)
    if len(train) < 2:
        raise ValueError(f"only {len(train)} unlabeled, not excluded item(s) are left to train on; ELITE needs a pool")
    _check_finite(X, "the input")
    Xs = _images(X) if images else _standardise(np.asarray(X, dtype=np.float64), train)
    return Inputs(Xs, train.astype(np.int64), val.astype(np.int64), codes[val].astype(np.int64),
                  np.flatnonzero(excl).astype(np.int64))


def arrays_inputs(X: Any, labels: Any, excluded: Any, normal: str, anomaly: str, *, images: bool,
                  need_labels: bool) -> Inputs:
    """Inputs from plain arrays (see ``Elite.from_arrays``)."""
    X = np.asarray(X)
    if X.dtype == object or X.dtype.kind not in "biuf":
        raise TypeError(f"X must be a numeric array, got dtype {X.dtype}")
    if not images and X.ndim != 2:
        raise ValueError(f"X must have shape (N, d) (or images with backbone='conv'), got {X.shape}")
    if len(X) == 0:
        raise ValueError("X is empty")
    ex = np.asarray([] if excluded is None else excluded).reshape(-1)
    if len(ex) and (ex.dtype.kind not in "iu" or ex.min() < 0 or ex.max() >= len(X)):
        raise ValueError(f"excluded must be item ids in 0..{len(X) - 1}")
    return _assemble(X, _codes(labels, len(X), normal, anomaly), ex.astype(np.int64), normal, anomaly,
                     images, need_labels, "the labels given")


def session_codes(session: Any, normal: str, anomaly: str) -> np.ndarray:
    """(N,) int from the session's current human labels: 1 ``anomaly``, 0 ``normal``, -1 otherwise."""
    codes = np.full(len(session), -1, dtype=np.int64)
    lab = session.labeled()
    if len(lab):
        ids = lab["id"].to_numpy()
        names = lab["label"].astype(str).to_numpy()
        codes[ids[names == anomaly]] = 1
        codes[ids[names == normal]] = 0
    return codes


def session_inputs(session: Any, normal: str, anomaly: str, *, images: bool, need_labels: bool) -> Inputs:
    """Inputs from a Session: its embeddings (or raw images), current human labels of the two classes
    (others ignored) and exclusions."""
    classes = [str(c) for c in session.classes]
    missing = [c for c in (normal, anomaly) if c not in classes]
    if missing:
        raise ValueError(f"this session's classes {classes[:10]} lack {missing}; ELITE needs a {normal!r} and an "
                         f"{anomaly!r} class (pass normal=/anomaly= to name yours)")
    codes = session_codes(session, normal, anomaly)
    if images:
        items = session.items
        if getattr(items, "kind", None) != "image":
            raise ValueError(f"backbone='conv' needs an image session; this one holds {items.kind} items "
                             "(use backbone='svdd' or 'ae' on its embeddings)")
        X = items.images
    else:
        X = session.embeddings
    return _assemble(X, codes, session.excluded(), normal, anomaly, images, need_labels, "the session")
