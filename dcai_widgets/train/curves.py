"""Accuracy vs. number of labels across the label history: would more labels still help?

The labeled items are replayed in the order people labeled them (the store's timestamps); a seeded
``holdout`` fraction of them is set aside once as the fixed test set, and the model is trained on the first
k of the remaining labels for ``points`` values of k up to all of them (fixed epochs, no early stopping:
the holdout is only measured on). A curve still rising at its end says labeling more pays. No widget imports.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .trainer import Trainer

__all__ = ["accuracy_vs_labels"]


def accuracy_vs_labels(session: Any, points: int = 5, sources: Sequence[str] = ("human", "review"),
                       holdout: float = 0.2, seed: int = 0, epochs: int = 20,
                       on_point: Callable[[dict], None] | None = None,
                       check: Callable[[], None] | None = None, **trainer_kw: Any) -> pd.DataFrame:
    """DataFrame(labels, accuracy, holdout) with one row per point; ``on_point(row)`` after each one."""
    lab = session.labeled(tuple(sources))
    lab = lab[~lab["id"].isin(session.excluded())].sort_values(["ts", "id"], kind="stable")
    ids = lab["id"].to_numpy()
    if len(ids) < 10:
        raise ValueError(f"accuracy vs labels needs at least 10 labels (not excluded), found {len(ids)}")
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_test = max(2, int(round(holdout * len(ids))))
    test = ids[np.sort(perm[:n_test])]
    pool = ids[np.isin(ids, test, invert=True)]            # in labeling order
    ks = np.unique(np.linspace(min(len(pool), max(5, len(pool) // points)), len(pool), int(points)).astype(int))
    rows = []
    for k in ks:
        if check is not None:
            check()
        t = Trainer(session, epochs=epochs, sources=sources, holdout=0.0, patience=None, seed=seed,
                    ids=pool[:k], name=None, progress=False, **trainer_kw).fit(check=check)
        row = {"labels": int(k), "accuracy": t.evaluate(test)["accuracy"], "holdout": int(len(test))}
        rows.append(row)
        if on_point is not None:
            on_point(row)
    return pd.DataFrame(rows, columns=["labels", "accuracy", "holdout"])
