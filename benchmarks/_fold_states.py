"""LANCET's propagated-label calibration, scored offline on saved fold states (issue 14, fourth pass).

``benchmarks/calibration.py --fold-states DIR`` runs LANCET's label curve (``calibration=None``: the same
picks) and saves at each checkpoint what scoring any calibrator of the propagated labels needs: the full
model's log-probabilities and distance to the nearest label on *every* item, the labeled ids, the fold of
each label, the 5 fold models' log-probabilities and distances on every item, and the next 500 items asked.
``--fold-states-from DIR`` scores the calibrators of ``CANDIDATES`` on them, each fit on the cross-fitted
(out-of-fold) pairs of the labeled items, on two sources: ``lancet_propagated`` (every unlabeled item) and
``lancet_suggest`` (the next 500 items LANCET asks, its suggestions in the Label tab).

Why: the items LANCET asks are harder than the pool at the same score and distance on the text set, so the
"coverage" calibrator learns their accuracy and under-states the pool's (third pass: 72% said for 83% right).
The candidate here is covariate-shift correction by importance weighting (Shimodaira 2000; the weight
p(pool | x) / p(labeled | x) from a probabilistic classifier, Bickel, Brueckner & Scheffer, ICML 2007) on one
feature that separates the asked items from the pool, the trust score (Jiang, Kim, Guan & Gupta, NeurIPS 2018:
log of the distance to the nearest label of another class over the distance to the nearest label of the
predicted class, in LANCET's label-free input). Held-out items are scored against their fold's training
labels, pool items against all labels, as the distance of the "coverage" calibrator is.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dcai_widgets.calibration import TopLabelCalibrator, ece, fold_ids, nn_distance, padded_log_proba

FOLDS = 5
SHOWN = 500
# name -> (importance-weight target or None, weight clip): fit on the out-of-fold pairs of the labels
CANDIDATES: dict[str, tuple[str | None, float]] = {
    "coverage": (None, 0.0),          # the shipped calibrator (unweighted)
    "trust_w": ("pool", 10.0),        # pairs weighted toward the unlabeled pool's trust scores
    "trust_w_sqrt": ("pool_sqrt", 3.0),
}


def save(session, engine, name: str, seed: int, checkpoints: list[int], folder: str, batch: int = 10) -> list[str]:
    """Run ``engine`` (a ``Lancet`` with ``calibration=None``) along its label curve on ``session`` (oracle
    labels from ``session.y_true``, ``batch`` per round) and save a fold state at each checkpoint."""
    from dcai_widgets.lancet._threads import torch_threads

    y = np.asarray(session.y_true, np.int64)
    out, written = Path(folder), []
    out.mkdir(parents=True, exist_ok=True)
    while True:
        engine.fit()
        n = int((session.label_vector() >= 0).sum())
        if n in checkpoints:
            F_in, yl, Model, kw, _ = engine._snapshot
            labeled = np.flatnonzero(yl >= 0)
            K = len(session.classes)
            f = fold_ids(yl[labeled], FOLDS, seed)   # the folds Lancet.out_of_fold uses (seed = engine seed)
            fl, fd = [], []
            with torch_threads(1):
                for k in range(FOLDS):
                    tr = labeled[f != k]
                    seen = np.unique(yl[tr])
                    yf = np.full(len(yl), -1, np.int64)
                    yf[tr] = np.searchsorted(seen, yl[tr])
                    net = Model(F_in.shape[1], len(seen), **kw).fit(F_in, yf)
                    fl.append(padded_log_proba(net.log_proba(F_in), seen, K).astype(np.float32))
                    fd.append(nn_distance(F_in, tr).astype(np.float32))
            p = out / f"{name}_{seed}_{n}.npz"
            np.savez(p, logp=engine.log_proba_, dist=engine.distance_, y=y, labeled=labeled, fold=f,
                     fold_logp=np.stack(fl), fold_dist=np.stack(fd), F_in=F_in.astype(np.float32),
                     order=np.asarray(engine.candidates(SHOWN), np.int64))
            written.append(str(p))
        if n >= max(checkpoints):
            return written
        ask = engine.candidates(batch)
        session.label(ask, y[np.asarray(ask, np.int64)], annotator="oracle")


def class_distances(X: np.ndarray, rows: np.ndarray, train: np.ndarray, y_train: np.ndarray,
                    n_classes: int) -> np.ndarray:
    """(len(rows), n_classes): distance from each row of ``X[rows]`` to the nearest ``train`` item of each
    class (inf for a class without one)."""
    out = np.full((len(rows), int(n_classes)), np.inf)
    for c in np.unique(y_train):
        out[:, c] = nn_distance(X, train[y_train == c], rows=rows)
    return out


def trust_score(D: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Jiang et al. (2018): log(distance to the nearest label of another class / to the nearest label of the
    predicted class) per row of ``D`` (n, K) class distances; > 0 when the prediction agrees with the nearest
    label. Clipped to [-10, 10] (a class without labels is infinitely far)."""
    idx = np.arange(len(D))
    same = D[idx, pred]
    other = D.copy()
    other[idx, pred] = np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.log(np.maximum(other.min(1), 1e-9)) - np.log(np.maximum(same, 1e-9))
    return np.clip(np.nan_to_num(t, nan=0.0, posinf=10.0, neginf=-10.0), -10.0, 10.0)


def shift_weights(source: np.ndarray, target: np.ndarray, clip: float = 10.0, power: float = 1.0) -> np.ndarray:
    """Importance weights p(target | x) / p(source | x) for the ``source`` rows (n, d) or (n,), from a
    logistic regression between the two samples (balanced classes), raised to ``power``, normalised to mean 1
    and clipped to [1/clip, clip] (Bickel et al. 2007)."""
    from sklearn.linear_model import LogisticRegression

    a = np.asarray(source, float).reshape(len(source), -1)
    b = np.asarray(target, float).reshape(len(target), -1)
    X = np.vstack([a, b])
    z = np.r_[np.ones(len(a)), np.zeros(len(b))]
    mu, sd = X.mean(0), X.std(0) + 1e-12
    clf = LogisticRegression(class_weight="balanced", max_iter=1000).fit((X - mu) / sd, z)
    p = np.clip(clf.predict_proba((a - mu) / sd)[:, 1], 1e-9, 1 - 1e-9)
    w = ((1 - p) / p) ** power
    return np.clip(w / w.mean(), 1.0 / clip, clip)


def _floor(conf: np.ndarray, draws: int = 20) -> float:
    rng = np.random.default_rng(0)
    return float(np.mean([ece(conf, rng.random(len(conf)) < conf) for _ in range(draws)]))


def score_state(st: dict, F_in: np.ndarray) -> dict:
    """Every candidate's ECE (and floor, mean confidence, accuracy) on one fold state, both sources."""
    y, lab, f = st["y"], st["labeled"], st["fold"]
    K = st["logp"].shape[1]
    unl = np.setdiff1d(np.arange(len(y)), lab)
    oof_lp = np.zeros((len(lab), K))
    oof_d = np.zeros(len(lab))
    D_lab = np.zeros((len(lab), K))
    for k in range(FOLDS):
        m = f == k
        oof_lp[m] = st["fold_logp"][k][lab[m]]
        oof_d[m] = st["fold_dist"][k][lab[m]]
        D_lab[m] = class_distances(F_in, lab[m], lab[~m], y[lab[~m]], K)
    ok = oof_lp.argmax(1) == y[lab]
    pool_lp, pool_d = st["logp"][unl], st["dist"][unl]
    pool_ok = pool_lp.argmax(1) == y[unl]
    t_lab = trust_score(D_lab, oof_lp.argmax(1))
    t_pool = trust_score(class_distances(F_in, unl, lab, y[lab], K), pool_lp.argmax(1))
    order = np.searchsorted(unl, np.asarray(st["order"], np.int64)[:SHOWN])
    out: dict = {"oof_accuracy": round(float(ok.mean()), 4)}
    for name, (target, clip) in CANDIDATES.items():
        w = None
        if target is not None:
            w = shift_weights(t_lab, t_pool, clip, power=0.5 if target.endswith("sqrt") else 1.0)
        conf = TopLabelCalibrator("coverage").fit(oof_lp, ok, oof_d, sample_weight=w).predict(pool_lp, distance=pool_d)
        for src, ids in (("lancet_propagated", slice(None)), ("lancet_suggest", order)):
            c, o = conf[ids], pool_ok[ids]
            out.setdefault(src, {})[name] = {"ece": round(ece(c, o), 4), "floor": round(_floor(c), 4),
                                             "mean_conf": round(float(c.mean()), 4),
                                             "accuracy": round(float(o.mean()), 4), "n": int(len(c))}
    return out


def compare(folder: str, session_for=None) -> dict:
    """Score every ``{dataset}_{seed}_{labels}.npz`` in ``folder``: per state, and per dataset x source x
    checkpoint the worst and mean over seeds; the headline ``ece_at_50`` / ``ece_at_100`` per candidate (worst
    over datasets and both sources). States saved without ``F_in`` get it from ``session_for(dataset)``."""
    inputs: dict[str, np.ndarray] = {}
    rows = []
    for p in sorted(Path(folder).glob("*_*_*.npz")):
        name, seed, labels = p.stem.rsplit("_", 2)
        with np.load(p) as z:
            st = {k: z[k] for k in z.files}
        if "F_in" in st:
            F_in = st["F_in"]
        else:
            if name not in inputs:
                import dcai_widgets as dw

                inputs[name] = dw.Lancet(session_for(name), progress=False, warn=False).encoder_input()
            F_in = inputs[name]
        rows.append({"dataset": name, "seed": int(seed), "labels": int(labels), **score_state(st, F_in)})
    cells: dict = {}
    for r in rows:
        for src in ("lancet_propagated", "lancet_suggest"):
            for cand, v in r[src].items():
                cells.setdefault(f"{r['dataset']}/{src}@{r['labels']}", {}).setdefault(cand, []).append(v)
    summary = {cell: {cand: {"worst": max(v["ece"] for v in vs), "mean": round(float(np.mean([v["ece"] for v in vs])), 4),
                             "floor_mean": round(float(np.mean([v["floor"] for v in vs])), 4), "seeds": len(vs)}
                      for cand, vs in d.items()} for cell, d in sorted(cells.items())}
    head = {}
    for cand in CANDIDATES:
        for at in (50, 100):
            vals = [d[cand]["worst"] for cell, d in summary.items() if cell.endswith(f"@{at}")]
            head[f"{cand}_ece_at_{at}"] = max(vals) if vals else None
    acc = [r["lancet_propagated"]["coverage"]["accuracy"] for r in rows if r["labels"] == 100]
    return {"rows": rows, "cells": summary, "headline": head,
            "accuracy_at_100": round(min(acc), 4) if acc else None}


def print_table(res: dict) -> None:
    for cell, d in res["cells"].items():
        print(f"{cell:32s} " + "  ".join(f"{c} worst {v['worst']:.3f} mean {v['mean']:.3f}" for c, v in d.items())
              + f"  (floor {next(iter(d.values()))['floor_mean']:.3f}, {next(iter(d.values()))['seeds']} seeds)")
    print(json.dumps(res["headline"]))
