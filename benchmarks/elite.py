"""ELITE against its unsupervised models, Isolation Forest, DeepSAD and logistic regression on the labels.

For each ADBench dataset in /work/shared/data/adbench, pollution r_p in {0.1, 0.3} (anomalies or normals
subsampled to reach it, pools of at most --pool items) and 3 seeds, 20 items are labeled by the oracle
(half anomalous). Every method gets the same labels: ELITE as its validation set, DeepSAD (the `deepod`
package) as its semi-supervised labels (deepod's DeepSAD uses the labeled anomalies; labeled normals
count as unlabeled), logistic regression trained on the 20 standardised embeddings alone, and the
unsupervised models (Deep SVDD, autoencoder, Isolation Forest) none. ROC-AUC is measured on the pool's
unlabeled items (the task: find the anomalies hiding in the pool). "ELITE+LR" is our step beyond the
paper, reported as such: the mean of the ELITE-SVDD score's rank and the label-trained model's rank.

A second part compares query rules (score, meta, margin, random): ELITE-SVDD fitted on 10 labels (5/5),
10 more items chosen by each rule and labeled by the oracle, refitted; ROC-AUC on the items no rule
labeled, and anomalies found among the queried items.

Ends with one JSON line. Run: nice -n 10 .venv/bin/python benchmarks/elite.py
Needs `deepod` (DeepSAD): `pip install --no-deps deepod==0.4.1` — its metadata pins torch<1.13.1, so a
plain install would try to replace the project's torch; it runs on torch 2.x as is.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from dcai_widgets.elite import Elite

DATA = Path("/work/shared/data/adbench")
DATASETS = ["CIFAR10_0", "20news_3", "26_optdigits", "6_cardio", "38_thyroid"]
RULES = ("score", "meta", "margin", "random")
METHODS = ["elite_svdd", "elite_ae", "deepsvdd", "ae", "iforest", "deepsad", "lr_labels", "elite_plus_lr"]


def make_setting(X, y, rp: float, seed: int, cap: int, n_labels: int):
    """A pool of at most `cap` items with a share `rp` of anomalies (subsampling either class), and
    `n_labels` oracle labels, half anomalous (-1 = unlabeled)."""
    rng = np.random.default_rng(seed)
    a, n = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    total = min(cap, len(a) / rp, len(n) / (1 - rp))
    na = int(round(total * rp))
    idx = np.concatenate([rng.choice(a, na, replace=False), rng.choice(n, int(round(total)) - na, replace=False)])
    idx = rng.permutation(idx)
    Xp, yp = X[idx], y[idx]
    labels = np.full(len(yp), -1)
    half = n_labels // 2
    labels[rng.choice(np.flatnonzero(yp == 1), half, replace=False)] = 1
    labels[rng.choice(np.flatnonzero(yp == 0), n_labels - half, replace=False)] = 0
    return Xp, yp, labels


def settings(datasets, seeds: int, cap: int, n_labels: int = 20):
    """Yield (dataset, r_p, seed, X, y, labels) for every dataset x r_p in {0.1, 0.3} x seed."""
    for ds in datasets:
        z = np.load(DATA / f"{ds}.npz")
        X, y = z["X"].astype(np.float32), z["y"].astype(int)
        for rp in (0.1, 0.3):
            for seed in range(seeds):
                yield (ds, rp, seed, *make_setting(X, y, rp, seed, cap, n_labels))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run_methods(X, y, labels, seed: int, epochs: int) -> dict[str, tuple[float, float]]:
    """{method: (roc_auc on unlabeled items, seconds)}."""
    test = labels < 0
    auc = lambda s: float(roc_auc_score(y[test], np.asarray(s)[test]))  # noqa: E731
    out, scores = {}, {}
    for name, kw in [("elite_svdd", dict(backbone="svdd")), ("elite_ae", dict(backbone="ae")),
                     ("deepsvdd", dict(backbone="svdd", alice=False)), ("ae", dict(backbone="ae", alice=False))]:
        e, sec = timed(lambda: Elite.from_arrays(X, labels, epochs=epochs, seed=seed, **kw).fit())
        scores[name] = e.scores_
        out[name] = (auc(e.scores_), sec)
    Xs = StandardScaler().fit_transform(X)
    f, sec = timed(lambda: IsolationForest(random_state=seed).fit(Xs))
    out["iforest"] = (auc(-f.score_samples(Xs)), sec)
    from deepod.models.tabular import DeepSAD

    semi = (labels == 1).astype(int)
    d, sec = timed(lambda: DeepSAD(epochs=epochs, device="cpu", verbose=0, random_state=seed).fit(Xs, semi))
    out["deepsad"] = (auc(d.decision_function(Xs)), sec)
    lab = labels >= 0
    m, sec = timed(lambda: LogisticRegression(max_iter=2000).fit(Xs[lab], labels[lab]))
    p = m.predict_proba(Xs)[:, 1]
    out["lr_labels"] = (auc(p), sec)
    out["elite_plus_lr"] = (auc(rankdata(scores["elite_svdd"]) + rankdata(p)), out["elite_svdd"][1] + sec)
    return out


def query_rules(X, y, seed: int, epochs: int, cap: int, rp: float) -> dict[str, dict]:
    """ELITE-SVDD from 10 labels, 10 more chosen by each rule; ROC-AUC on items no rule labeled, and
    how many of the 10 queried items were anomalies (each one found is one the expert can exclude)."""
    Xp, yp, labels = make_setting(X, y, rp, seed, cap, 10)
    base = Elite.from_arrays(Xp, labels, epochs=epochs, seed=seed).fit()
    picks = {r: base.query(10, rule=r, seed=seed) for r in RULES}
    touched = np.zeros(len(yp), bool)
    touched[labels >= 0] = True
    for ids in picks.values():
        touched[ids] = True
    res = {}
    for rule, ids in picks.items():
        lab = labels.copy()
        lab[ids] = yp[ids]
        if lab.max() < 1 or (lab == 0).sum() == 0:
            lab = labels.copy()
        e = Elite.from_arrays(Xp, lab, epochs=epochs, seed=seed).fit()
        res[rule] = {"roc_auc": float(roc_auc_score(yp[~touched], e.scores_[~touched])),
                     "anomalies_found": int(yp[ids].sum())}
    res["before"] = {"roc_auc": float(roc_auc_score(yp[~touched], base.scores_[~touched]))}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=int, default=1500, help="largest pool per setting")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--query-pool", type=int, default=1000, help="largest pool in the query-rule part")
    ap.add_argument("--datasets", nargs="*", default=DATASETS)
    args = ap.parse_args()
    try:
        import deepod  # noqa: F401
    except ImportError:
        raise SystemExit("benchmarks/elite.py needs deepod for DeepSAD: pip install --no-deps deepod==0.4.1 "
                         "(--no-deps: its metadata pins torch<1.13.1)") from None
    torch.set_num_threads(1)
    warm = np.random.default_rng(0).normal(size=(64, 4))   # first-call costs (autograd, imports) out of the timings
    for kw in (dict(backbone="svdd"), dict(backbone="ae"), dict(alice=False)):
        Elite.from_arrays(warm, [1, 0] + [-1] * 62, epochs=1, **kw).fit()
    rows = []
    t_all = time.perf_counter()
    for ds, rp, seed, Xp, yp, labels in settings(args.datasets, args.seeds, args.pool):
        res = run_methods(Xp, yp, labels, seed, args.epochs)
        rows.append({"dataset": ds, "rp": rp, "seed": seed, "n": len(yp), **res})
        print(f"{ds:13s} rp={rp} seed={seed} n={len(yp):5d}  " + "  ".join(
            f"{k}={v[0]:.3f}/{v[1]:.1f}s" for k, v in res.items()), flush=True)
    mean = lambda m, rp=None: float(np.mean([r[m][0] for r in rows if rp is None or r["rp"] == rp]))  # noqa: E731
    secs = lambda m: float(np.mean([r[m][1] for r in rows]))  # noqa: E731
    print("\nmethod          ROC-AUC  (r_p 0.1 / 0.3)   s/fit")
    for m in METHODS:
        print(f"{m:14s}  {mean(m):.3f}   ({mean(m, 0.1):.3f} / {mean(m, 0.3):.3f})   {secs(m):.2f}")
    print("\nper dataset (mean over r_p and seeds):")
    for ds in args.datasets:
        sub = [r for r in rows if r["dataset"] == ds]
        print(f"  {ds:13s} " + "  ".join(f"{m}={np.mean([r[m][0] for r in sub]):.3f}" for m in METHODS))
    # ELITE's seconds over its unsupervised model's, summed over all runs (one stalled fit on this shared
    # box weighs less than in a mean of per-run ratios, which is reported too)
    pairs = (("svdd", "deepsvdd"), ("ae", "ae"))
    ratio = {b: sum(r[f"elite_{b}"][1] for r in rows) / sum(r[u][1] for r in rows) for b, u in pairs}
    ratio_runs = {b: float(np.median([r[f"elite_{b}"][1] / r[u][1] for r in rows])) for b, u in pairs}
    print(f"\nquery rules (ELITE-SVDD, 10 labels + 10 queried, r_p 0.1, pools <= {args.query_pool}, "
          f"{args.seeds} seeds):")
    q = {}
    for ds in args.datasets:
        z = np.load(DATA / f"{ds}.npz")
        for seed in range(args.seeds):
            q[ds, seed] = query_rules(z["X"].astype(np.float32), z["y"].astype(int), seed, args.epochs,
                                      args.query_pool, 0.1)
        print(f"  {ds:13s} before={np.mean([q[ds, s]['before']['roc_auc'] for s in range(args.seeds)]):.3f}  "
              + "  ".join(f"{r}={np.mean([q[ds, s][r]['roc_auc'] for s in range(args.seeds)]):.3f} (found "
                          f"{sum(q[ds, s][r]['anomalies_found'] for s in range(args.seeds))})" for r in RULES),
              flush=True)
    qmean = {r: float(np.mean([v[r]["roc_auc"] for v in q.values()])) for r in (*RULES, "before")}
    found = {r: int(sum(v[r]["anomalies_found"] for v in q.values())) for r in RULES}
    elite = float(np.mean([r[m][0] for r in rows for m in ("elite_svdd", "elite_ae")]))
    elite01 = float(np.mean([r[m][0] for r in rows if r["rp"] == 0.1 for m in ("elite_svdd", "elite_ae")]))
    elite03 = float(np.mean([r[m][0] for r in rows if r["rp"] == 0.3 for m in ("elite_svdd", "elite_ae")]))
    out = {"roc_auc_elite": round(elite, 4), "roc_auc_elite_svdd": round(mean("elite_svdd"), 4),
           "roc_auc_elite_ae": round(mean("elite_ae"), 4), "roc_auc_elite_plus_lr": round(mean("elite_plus_lr"), 4),
           "roc_auc_deepsad": round(mean("deepsad"), 4), "roc_auc_iforest": round(mean("iforest"), 4),
           "roc_auc_deepsvdd": round(mean("deepsvdd"), 4), "roc_auc_ae": round(mean("ae"), 4),
           "roc_auc_lr_labels": round(mean("lr_labels"), 4),
           "elite_rp01": round(elite01, 4), "elite_rp03": round(elite03, 4),
           "cost_ratio": round(max(ratio.values()), 2), "cost_ratio_svdd": round(ratio["svdd"], 2),
           "cost_ratio_ae": round(ratio["ae"], 2),
           "cost_ratio_median_per_run": {b: round(v, 2) for b, v in ratio_runs.items()},
           "query_roc_auc": {k: round(v, 4) for k, v in qmean.items()}, "query_anomalies_found": found,
           "runs": len(rows), "seconds": round(time.perf_counter() - t_all, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
