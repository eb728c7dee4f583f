"""Propagation: the linear head (softmax(W z + b)) gives every item a label and a confidence."""
from __future__ import annotations

import numpy as np
import pandas as pd


def propagate(proba: np.ndarray, classes_seen: np.ndarray, labeled: np.ndarray,
              confidence: np.ndarray | None = None) -> pd.DataFrame:
    """DataFrame id, label (class index), confidence for every unlabeled item.

    ``proba`` (n, K') are head probabilities over ``classes_seen`` (the K' class indices that have
    labels); ``labeled`` (n,) bool marks items a human already labeled (they are not propagated).
    ``confidence`` (n,): the calibrated probability that each item's label is right
    (:mod:`dcai_widgets.calibration`); without it the head's own top probability (overconfident: issue 14).
    """
    proba = np.asarray(proba)
    if proba.ndim != 2 or proba.shape[1] != len(classes_seen):
        raise ValueError(f"proba must be (n, {len(classes_seen)}); got {proba.shape}")
    ids = np.flatnonzero(~np.asarray(labeled, bool))
    p = proba[ids]
    return pd.DataFrame({
        "id": ids.astype(np.int64),
        "label": np.asarray(classes_seen, np.int64)[p.argmax(1)] if len(ids) else np.zeros(0, np.int64),
        "confidence": (p.max(1) if confidence is None else np.asarray(confidence)[ids]).astype(np.float64)
        if len(ids) else np.zeros(0),
    })


def efficiency(correct_before: int, correct_after: int, human_added: int) -> float:
    """Propagation efficiency: correct new propagated labels per human label added in a round."""
    if human_added <= 0:
        raise ValueError("efficiency needs at least one human label added in the round")
    return (correct_after - correct_before) / human_added
