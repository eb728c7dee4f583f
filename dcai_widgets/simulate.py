"""Oracle simulation: the learning curve of any labeling engine against known labels.

Each round fits the engine, asks for its candidates, labels them from the oracle through
``session.label(..., annotator="oracle")`` and records how good the engine's labels are on the items the
oracle has not labeled. Works for any object with ``fit()`` and ``candidates(n)``; accuracy comes from
``propagated()`` (LANCET) or, failing that, ``predict()`` / ``proba_`` if the engine offers them.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from ._validate import Positions

__all__ = ["simulate"]


def _engine_labels(engine: Any, session: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(N,) class index per item from the engine (-1 where it gives none) and (N,) confidence, or None."""
    n = len(session)
    if hasattr(engine, "propagated"):
        p = engine.propagated()
        out, conf = np.full(n, -1, np.int64), np.zeros(n)
        if len(p):
            lookup = {c: i for i, c in enumerate(session.classes)}
            lab = p["label"].map(lambda v: lookup.get(v, v) if isinstance(v, str) else int(v)).to_numpy(np.int64)
            out[p["id"].to_numpy(np.int64)] = lab
            conf[p["id"].to_numpy(np.int64)] = p["confidence"].to_numpy(float)
        return out, conf
    if hasattr(engine, "predict"):
        out = np.asarray(engine.predict(), np.int64)
        return out, np.ones(n)
    proba = getattr(engine, "proba_", None)
    if proba is not None:
        classes = getattr(engine, "classes_", None)
        idx = np.asarray(proba).argmax(1)
        out = np.asarray(classes)[idx] if classes is not None else idx
        return out.astype(np.int64), np.asarray(proba).max(1)
    return None


def simulate(engine_factory: Callable[[Any], Any], session: Any, oracle: np.ndarray | None = None,
             budget: int = 100, batch: int | None = None, rounds: int | None = None,
             progress: bool = False) -> pd.DataFrame:
    """Run ``engine_factory(session)`` against ``oracle`` (default ``session.y_true``) until ``budget``
    human labels; returns one row per round: round, human_labels, accuracy (engine labels on items the
    oracle did not label; an item the engine gives no label counts as wrong), coverage (share of those items with an engine label), seconds, stop, efficiency.

    ``batch`` (items labeled per round) defaults to the engine's ``batch`` attribute or 10. The
    factory is called once; the same engine is refit every round (so it may warm-start).
    """
    if not callable(engine_factory):
        raise TypeError("engine_factory must be a callable session -> engine, e.g. lambda s: dw.Lancet(s)")
    if oracle is None:
        oracle = getattr(session, "y_true", None)
    if oracle is None:
        raise ValueError("simulate needs an oracle: pass oracle=y_true (class indices) or a session with y_true")
    oracle = np.asarray(oracle)
    if oracle.shape != (len(session),):
        raise ValueError(f"oracle must have one label per item, shape ({len(session)},); got {oracle.shape}")
    if oracle.dtype.kind in "OUS":
        lookup = {c: i for i, c in enumerate(session.classes)}
        try:
            oracle = np.array([lookup[v] for v in oracle], np.int64)
        except KeyError as e:
            raise ValueError(f"oracle has a label {e.args[0]!r} that is not one of session.classes") from None
    oracle = oracle.astype(np.int64)
    if not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"budget must be a positive int (human labels to spend), got {budget!r}")
    engine = engine_factory(session)
    if not (hasattr(engine, "fit") and hasattr(engine, "candidates")):
        raise TypeError(f"the engine ({type(engine).__name__}) needs fit() and candidates(n)")
    batch = int(batch or getattr(engine, "batch", None) or 10)
    rows: list[dict] = []
    prev_correct = None
    r = 0
    while True:
        t0 = time.perf_counter()
        engine.fit()
        y_h = np.asarray(session.label_vector())
        labeled_by_oracle = y_h >= 0
        pred = _engine_labels(engine, session)
        rest = ~labeled_by_oracle
        if pred is not None and rest.any():
            lab, _ = pred
            covered = rest & (lab >= 0)
            correct = int((lab[covered] == oracle[covered]).sum())
            acc = correct / max(1, int(rest.sum()))
            coverage = covered.sum() / rest.sum()
        else:
            correct, acc, coverage = 0, float("nan"), 0.0
        n_h = int(labeled_by_oracle.sum())
        stop = None
        if hasattr(engine, "should_stop"):
            try:
                stop = bool(engine.should_stop()["stop"])
            except Exception:  # an engine without a stop verdict yet
                stop = None
        ask = [] if n_h >= budget or (rounds is not None and r >= rounds) else \
            engine.candidates(min(batch, budget - n_h))
        if len(ask):
            # explicit positions: a bare number is refused where class names look like numbers ('1', '2')
            session.label(ask, Positions(oracle[np.asarray(ask, np.int64)]), annotator="oracle")
        seconds = time.perf_counter() - t0
        eff = float("nan")
        if rows and prev_correct is not None and rows[-1]["asked"]:
            eff = (correct - prev_correct) / rows[-1]["asked"]
        rows.append({"round": r, "human_labels": n_h, "accuracy": acc, "correct": correct,
                     "coverage": float(coverage), "seconds": seconds, "stop": stop, "efficiency": eff,
                     "asked": len(ask)})
        if progress:
            print(f"round {r}: {n_h} labels, accuracy {acc:.4f}, {seconds:.1f}s", flush=True)
        prev_correct = correct
        r += 1
        if not len(ask):
            break
    return pd.DataFrame(rows)
