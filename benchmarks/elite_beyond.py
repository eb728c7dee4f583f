"""Beyond-the-paper ELITE variants against the labels-only logistic regression (issue 16's open goal).

Same settings as benchmarks/elite.py (5 ADBench sets x r_p {0.1, 0.3} x seeds, pools <= --pool, 20 oracle
labels half anomalous, ROC-AUC on the pool's unlabeled items), one fixed configuration per variant chosen
before the run (no per-dataset tuning):

- ``lr``: scikit-learn logistic regression on the 20 standardised labeled items (the baseline to beat).
- ``cotrain_<elite>``: the same LR trained on the labels plus ELITE's confident pseudo labels from the
  pool: the top 5% of the pool by ELITE's score as anomalous, the bottom 50% as normal; each pseudo class
  weighs in total as much as the labeled class (10 items).
- ``cotrain_mix``: as above, pseudo labels ranked by the mean rank of ELITE-AE and LR.
- ``selftrain_lr`` (control: is it ELITE that helps?): pseudo labels ranked by LR's own probability.
- ``pu_lr`` (control): labeled normals plus the whole pool as normal (total weight 10) vs labeled anomalies.
- ``elite_plus_lr``: mean rank of ELITE-SVDD and LR (as in elite.py).
- ``semi_<backbone>`` (with --semi): ``Elite(mode="semi")``, the expert labels also train the model,
  ALICE validates on cross-fitted held-out folds of the labels.
- ``--only-graph`` (controls, no ELITE): does the pool's neighbourhood graph add to the labels at all?
  ``spread`` = scikit-learn LabelSpreading (10-NN kernel) from the 20 labels; ``lr_smooth`` = LR's
  probability averaged with its 10-NN neighbours' (10 rounds, half own); ``lr_featsmooth`` = LR on features
  averaged half with their 10-NN mean; ``lr_plus_spread`` = mean rank of LR and spread.
- ``--only-ceiling`` (controls, no ELITE): how far above LR-on-20-labels can *any* use of the pool go?
  The same classifiers given the true label of every pool item, 5-fold cross-fitted (each item scored by a
  model that never saw it): ``full_lr`` (the baseline's LR), ``full_svm`` (RBF SVM), ``full_knn``
  (15-NN), ``full_hgb`` (gradient-boosted trees); and LR given 40 / 80 oracle labels (half anomalous,
  where the pool has that many anomalies) instead of 20. All scored on the same unlabeled items.
- ``oracle_choice``: per run the best of lr / ELITE / elite_plus_lr as if chosen knowing the test labels,
  the ceiling of any "choose ELITE or LR on the labels" rule (variant c).

Run: nice -n 10 .venv/bin/python benchmarks/elite_beyond.py [--semi]; ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from elite import DATASETS, settings

from dcai_widgets.elite import Elite

TOP, BOTTOM = 0.05, 0.5


def _lr(Xs, idx, yy, w):
    return LogisticRegression(max_iter=2000).fit(Xs[idx], yy, sample_weight=w).predict_proba(Xs)[:, 1]


def cotrain(Xs, labels, rank_score) -> np.ndarray:
    """LR on the labels plus the pool's top TOP (anomalous) / bottom BOTTOM (normal) by ``rank_score``."""
    lab = np.flatnonzero(labels >= 0)
    pool = np.flatnonzero(labels < 0)
    order = pool[np.argsort(-np.asarray(rank_score)[pool], kind="stable")]
    top, bottom = order[: max(1, int(TOP * len(pool)))], order[len(pool) - int(BOTTOM * len(pool)):]
    n_cls = len(lab) / 2
    idx = np.concatenate([lab, top, bottom])
    yy = np.concatenate([labels[lab], np.ones(len(top), int), np.zeros(len(bottom), int)])
    w = np.concatenate([np.ones(len(lab)), np.full(len(top), n_cls / len(top)),
                        np.full(len(bottom), n_cls / len(bottom))])
    return _lr(Xs, idx, yy, w)


def graph_controls(X, labels) -> dict[str, np.ndarray]:
    """Graph-based semi-supervised controls on the standardised pool (no ELITE): see ``--only-graph``."""
    from sklearn.neighbors import kneighbors_graph
    from sklearn.semi_supervised import LabelSpreading
    Xs = StandardScaler().fit_transform(X)
    lab = np.flatnonzero(labels >= 0)
    p = _lr(Xs, lab, labels[lab], None)
    spread = LabelSpreading(kernel="knn", n_neighbors=10, max_iter=100).fit(Xs, labels)
    f = spread.label_distributions_[:, list(spread.classes_).index(1)]
    W = kneighbors_graph(Xs, 10, include_self=False)
    W = W + W.T
    P = W.multiply(1.0 / np.asarray(W.sum(1))).tocsr()
    g = p.copy()
    for _ in range(10):
        g = 0.5 * (P @ g) + 0.5 * p
    Xg = 0.5 * Xs + 0.5 * (P @ Xs)
    return {"lr": p, "spread": f, "lr_smooth": g, "lr_featsmooth": _lr(Xg, lab, labels[lab], None),
            "lr_plus_spread": rankdata(p) + rankdata(f)}


def ceiling_controls(X, y, labels, seed: int) -> dict[str, np.ndarray]:
    """Upper references (see ``--only-ceiling``): classifiers that know far more labels than the 20."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC
    Xs = StandardScaler().fit_transform(X)
    lab = np.flatnonzero(labels >= 0)
    out = {"lr": _lr(Xs, lab, labels[lab], None)}
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    full = {"full_lr": LogisticRegression(max_iter=2000), "full_svm": SVC(),
            "full_knn": KNeighborsClassifier(15), "full_hgb": HistGradientBoostingClassifier(random_state=seed)}
    for name, clf in full.items():
        method = "predict_proba" if name in ("full_knn", "full_hgb") else "decision_function"
        p = cross_val_predict(clf, Xs, y, cv=cv, method=method)
        out[name] = p[:, 1] if p.ndim == 2 else p
    rng = np.random.default_rng(seed + 1000)
    pool_a = np.flatnonzero((labels < 0) & (y == 1))
    pool_n = np.flatnonzero((labels < 0) & (y == 0))
    for n in (40, 80):
        extra = (n - len(lab)) // 2
        if extra > len(pool_a):
            continue
        more = np.concatenate([lab, rng.choice(pool_a, extra, replace=False), rng.choice(pool_n, extra, replace=False)])
        yy = np.where(np.isin(more, lab), labels[more], y[more])
        out[f"lr_{n}"] = _lr(Xs, more, yy, None)
    return out


def run(X, y, labels, seed, epochs, semi: bool, only_semi: bool = False,
        backbones=("svdd", "ae"), only_graph: bool = False, only_ceiling: bool = False) -> dict[str, float]:
    test = labels < 0
    auc = lambda s: float(roc_auc_score(y[test], np.asarray(s)[test]))
    sc = {}
    if only_graph:
        return {k: auc(v) for k, v in graph_controls(X, labels).items()}
    if only_ceiling:
        return {k: auc(v) for k, v in ceiling_controls(X, y, labels, seed).items()}
    if only_semi:
        return {f"semi_{b}": auc(Elite.from_arrays(X, labels, backbone=b, epochs=epochs, seed=seed,
                                                   mode="semi").fit().scores_) for b in backbones}
    for b in ("svdd", "ae"):
        sc[f"elite_{b}"] = Elite.from_arrays(X, labels, backbone=b, epochs=epochs, seed=seed).fit().scores_
        if semi:
            sc[f"semi_{b}"] = Elite.from_arrays(X, labels, backbone=b, epochs=epochs, seed=seed,
                                                mode="semi").fit().scores_
    Xs = StandardScaler().fit_transform(X)
    lab = np.flatnonzero(labels >= 0)
    p = _lr(Xs, lab, labels[lab], None)
    sc["lr"] = p
    sc["elite_plus_lr"] = rankdata(sc["elite_svdd"]) + rankdata(p)
    for b in ("svdd", "ae"):
        sc[f"cotrain_{b}"] = cotrain(Xs, labels, sc[f"elite_{b}"])
    sc["cotrain_mix"] = cotrain(Xs, labels, rankdata(sc["elite_ae"]) + rankdata(p))
    sc["selftrain_lr"] = cotrain(Xs, labels, p)
    pool = np.flatnonzero(labels < 0)
    idx = np.concatenate([lab, pool])
    yy = np.concatenate([labels[lab], np.zeros(len(pool), int)])
    w = np.concatenate([np.ones(len(lab)), np.full(len(pool), len(lab) / 2 / len(pool))])
    sc["pu_lr"] = _lr(Xs, idx, yy, w)
    out = {k: auc(v) for k, v in sc.items()}
    out["oracle_choice"] = max(out[k] for k in ("lr", "elite_svdd", "elite_ae", "elite_plus_lr"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--semi", action="store_true", help="also fit Elite(mode='semi')")
    ap.add_argument("--only-semi", action="store_true", help="fit only Elite(mode='semi') (the other "
                    "variants are deterministic: merge with a run without it)")
    ap.add_argument("--only-graph", action="store_true", help="only the graph-based controls (no ELITE)")
    ap.add_argument("--only-ceiling", action="store_true", help="only the many-label ceilings (no ELITE)")
    ap.add_argument("--semi-backbones", nargs="*", default=["svdd", "ae"], help="with --only-semi")
    ap.add_argument("--datasets", nargs="*", default=DATASETS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows, t0 = [], time.perf_counter()
    for ds, rp, seed, Xp, yp, labels in settings(args.datasets, args.seeds, args.pool):
        r = run(Xp, yp, labels, seed, args.epochs, args.semi, args.only_semi, args.semi_backbones,
                args.only_graph, args.only_ceiling)
        rows.append({"dataset": ds, "rp": rp, "seed": seed, **r})
        print(f"{ds:13s} rp={rp} seed={seed} " + " ".join(f"{k}={v:.3f}" for k, v in r.items()), flush=True)
    methods = list(dict.fromkeys(k for r in rows for k in r if k not in ("dataset", "rp", "seed")))
    print("\nper dataset (mean over r_p and seeds):")
    for ds in args.datasets:
        sub = [r for r in rows if r["dataset"] == ds]
        print(f"  {ds:13s} " + " ".join(f"{m}={np.mean([r[m] for r in sub if m in r]):.3f}" for m in methods
                                        if any(m in r for r in sub)))
    mean = {m: round(float(np.mean([r[m] for r in rows if m in r])), 4) for m in methods}
    by_rp = {m: [round(float(np.mean([r[m] for r in rows if r["rp"] == rp and m in r])), 4) for rp in (0.1, 0.3)]
             for m in methods}
    per_ds = {m: {ds: round(float(np.mean([r[m] for r in rows if r["dataset"] == ds and m in r])), 4)
                  for ds in args.datasets if any(r["dataset"] == ds and m in r for r in rows)} for m in methods}
    print(json.dumps({"roc_auc": mean, "roc_auc_rp01_rp03": by_rp, "per_dataset": per_ds, "runs": len(rows),
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
