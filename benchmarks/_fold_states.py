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

Fifth pass: the weighting ships for the propagated labels (``Lancet(calibration_weights="trust")``; the
suggestions keep the unweighted calibrator: ``SHIPPED``), and the panels print "uncertain" for a fit whose
pairs leave the accuracy's standard error above ``calibration.MAX_ACCURACY_SE`` ("shown" per state). Beside
each propagated cell, a reference: the calibrator fit on as many labels drawn at random from the pool
(``random_label_bound``), what that many labels can do without any selection.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dcai_widgets.calibration import (MAX_ACCURACY_SE, TopLabelCalibrator, accuracy_se, ece, ece_floor, fold_ids,
                                     nn_distance, padded_log_proba)
from dcai_widgets.calibration_shift import heldout_trust, label_distances, trust_weights

FOLDS = 5
SHOWN = 500
# name -> weighting of the out-of-fold pairs of the labels the calibrator is fit on
CANDIDATES: dict[str, str | None] = {
    "coverage": None,      # unweighted: the shipped suggestions' calibrator (and the propagated labels' before)
    "trust_w": "trust",    # pairs weighted toward the unlabeled pool's trust scores: the shipped propagated one
}
SHIPPED = {"lancet_propagated": "trust_w", "lancet_suggest": "coverage"}   # Lancet(calibration_weights="trust")
BOUND_DRAWS = 60   # random label sets per state for the "random_labels" reference


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


def random_label_bound(lp: np.ndarray, d: np.ndarray, ok: np.ndarray, n: int, draws: int = BOUND_DRAWS) -> dict:
    """A reference, not a candidate: the "coverage" calibrator fit on ``n`` pool items drawn at random (the
    full model's own predictions on them, which it was not trained on: no selection, no cross-fitting) and
    scored on the whole pool. Mean and 6/7 quantile (about the worst of 6 seeds) of its ECE over ``draws``
    draws: what ``n`` labels can do when they are a representative sample."""
    rng = np.random.default_rng(1)
    e = []
    for _ in range(draws):
        s = rng.choice(len(ok), min(n, len(ok)), replace=False)
        e.append(ece(TopLabelCalibrator("coverage").fit(lp[s], ok[s], d[s]).predict(lp, distance=d), ok))
    return {"mean": round(float(np.mean(e)), 4), "q86": round(float(np.quantile(e, 6 / 7)), 4)}


def score_state(st: dict, F_in: np.ndarray, seed: int, bound: bool = True) -> dict:
    """Every candidate's ECE (and floor, mean confidence, accuracy) on one fold state, both sources; with
    ``bound`` the random-label reference on the propagated source."""
    y, lab, f = st["y"], st["labeled"], st["fold"]
    K = st["logp"].shape[1]
    unl = np.setdiff1d(np.arange(len(y)), lab)
    oof_lp = np.zeros((len(lab), K))
    oof_d = np.zeros(len(lab))
    for k in range(FOLDS):
        m = f == k
        oof_lp[m] = st["fold_logp"][k][lab[m]]
        oof_d[m] = st["fold_dist"][k][lab[m]]
    ok = oof_lp.argmax(1) == y[lab]
    pool_lp, pool_d = st["logp"][unl], st["dist"][unl]
    pool_ok = pool_lp.argmax(1) == y[unl]
    if not np.array_equal(fold_ids(y[lab], FOLDS, seed), f):
        raise ValueError(f"the state's folds are not the engine's for seed {seed}")
    t_lab = heldout_trust(F_in, lab, y[lab], oof_lp.argmax(1), FOLDS, seed)   # as Lancet._calibrate does
    t_pool = label_distances(F_in, lab, y[lab], pool_lp.argmax(1), rows=unl)[1]
    order = np.searchsorted(unl, np.asarray(st["order"], np.int64)[:SHOWN])
    out: dict = {"oof_accuracy": round(float(ok.mean()), 4)}
    for name, weighting in CANDIDATES.items():
        w = trust_weights(t_lab, t_pool) if weighting == "trust" else None
        conf = TopLabelCalibrator("coverage").fit(oof_lp, ok, oof_d, sample_weight=w).predict(pool_lp, distance=pool_d)
        se = accuracy_se(ok, w)   # the panels print "uncertain" above MAX_ACCURACY_SE (model version "-imprecise")
        for src, ids in (("lancet_propagated", slice(None)), ("lancet_suggest", order)):
            c, o = conf[ids], pool_ok[ids]
            out.setdefault(src, {})[name] = {"ece": round(ece(c, o), 4), "floor": round(ece_floor(c), 4),
                                             "mean_conf": round(float(c.mean()), 4),
                                             "accuracy": round(float(o.mean()), 4), "n": int(len(c)),
                                             "se": round(se, 4), "shown": bool(se <= MAX_ACCURACY_SE)}
    if bound:
        out["random_labels"] = random_label_bound(pool_lp, pool_d, pool_ok, len(lab))
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
        rows.append({"dataset": name, "seed": int(seed), "labels": int(labels), **score_state(st, F_in, int(seed))})
    cells: dict = {}
    for r in rows:
        for src in ("lancet_propagated", "lancet_suggest"):
            for cand, v in r[src].items():
                cells.setdefault(f"{r['dataset']}/{src}@{r['labels']}", {}).setdefault(cand, []).append(v)
    summary = {cell: {cand: {"worst": max(v["ece"] for v in vs), "mean": round(float(np.mean([v["ece"] for v in vs])), 4),
                             "floor_mean": round(float(np.mean([v["floor"] for v in vs])), 4), "seeds": len(vs),
                             "shown": sum(v["shown"] for v in vs),
                             "worst_shown": max([v["ece"] for v in vs if v["shown"]], default=None)}
                      for cand, vs in d.items()} for cell, d in sorted(cells.items())}
    head = {}
    for cand in CANDIDATES:
        for at in (50, 100):
            vals = [d[cand]["worst"] for cell, d in summary.items() if cell.endswith(f"@{at}")]
            head[f"{cand}_ece_at_{at}"] = max(vals) if vals else None
    for at in (50, 100):   # the shipped pair: trust-weighted for propagated labels, unweighted for suggestions
        vals = [d[SHIPPED[cell.split("/")[1].split("@")[0]]]["worst"] for cell, d in summary.items()
                if cell.endswith(f"@{at}")]
        head[f"shipped_ece_at_{at}"] = max(vals) if vals else None
        # the propagated labels as the panels print them: states whose calibration is too loose say "uncertain"
        prop = [d[SHIPPED["lancet_propagated"]] for cell, d in summary.items()
                if cell.endswith(f"@{at}") and "/lancet_propagated@" in cell]
        shown = [v["worst_shown"] for v in prop if v["worst_shown"] is not None]
        head[f"propagated_shown_ece_at_{at}"] = max(shown) if shown else None
        head[f"propagated_share_shown_at_{at}"] = round(sum(v["shown"] for v in prop) / max(1, sum(v["seeds"] for v in prop)), 3)
    for r in rows:   # the random-label reference, beside the propagated cells
        if "random_labels" in r:
            cell = summary[f"{r['dataset']}/lancet_propagated@{r['labels']}"]
            cell.setdefault("random_labels", {"mean": [], "q86": []})
            for k in ("mean", "q86"):
                cell["random_labels"][k].append(r["random_labels"][k])
    for d in summary.values():
        if "random_labels" in d:
            d["random_labels"] = {k: round(float(np.mean(v)), 4) for k, v in d["random_labels"].items()}
    acc = [r["lancet_propagated"]["coverage"]["accuracy"] for r in rows if r["labels"] == 100]
    return {"rows": rows, "cells": summary, "headline": head,
            "accuracy_at_100": round(min(acc), 4) if acc else None}


def print_table(res: dict) -> None:
    for cell, d in res["cells"].items():
        cands = {c: v for c, v in d.items() if c in CANDIDATES}
        first = next(iter(cands.values()))
        ref = d.get("random_labels")
        gated = "/lancet_propagated@" in cell   # the "-imprecise" gate is the propagated labels' only
        print(f"{cell:32s} " + "  ".join(f"{c} worst {v['worst']:.3f} mean {v['mean']:.3f}"
                                           + (f" shown {v['shown']}/{v['seeds']}" if gated else "")
                                           for c, v in cands.items())
              + f"  (floor {first['floor_mean']:.3f}, {first['seeds']} seeds)"
              + (f"  random labels: mean {ref['mean']:.3f}, q86 {ref['q86']:.3f}" if ref else ""))
    print(json.dumps(res["headline"]))
