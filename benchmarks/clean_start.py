"""The Clean tab's first ranking, before any expert label: which label-free detector puts anomalies on top?

The expert's first labels are the top of this ranking, so it decides how soon ELITE's validation set
holds anomalies. Compared on the same items: the unsupervised Deep SVDD and autoencoder of
``dcai_widgets.elite`` (``alice=False``; Deep SVDD was the tab's first ranking), ``Elite(backbone="hbos",
alice=False)`` (HBOS through the engine; its scores equal PyOD's), and PyOD / scikit-learn's Isolation Forest, ECOD,
COPOD, kNN and LOF on the standardised features.

Settings (dissimilar on purpose): the 5 ADBench sets (ResNet-18 CIFAR-10 embeddings, BERT 20 Newsgroups
embeddings, optdigits, cardio, thyroid) at pollution r_p in {0.02, 0.05, 0.1, 0.3} x 3 seeds, pools <= 1,500;
and, with one class made rare (r_p 0.03 and 0.1, 2 seeds): scikit-learn digits pixels (class 0, class 8),
MNIST-4k pixels (class 1, class 7), breast cancer (malignant) and wine (class 0) tables.
Figures: ROC-AUC over the pool, and lift in the first 20 shown (share of anomalies among the 20 top-ranked
over the pool's share: 1 = no better than random order).

    nice -n 10 .venv/bin/python benchmarks/clean_start.py [--seeds 3]      # ends with one JSON line
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from elite import DATA, DATASETS, make_setting

from dcai_widgets.elite import Elite

MNIST = Path("/work/shared/data/mnist-test")
TOP = 20


def extra_sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One class made rare in image pixels and small tables (MNIST only where ../shared has it)."""
    d, bc, wn = load_digits(), load_breast_cancer(), load_wine()
    out = {f"digits{k}": (d.data.astype(np.float32), (d.target == k).astype(int)) for k in (0, 8)}
    img, lab = MNIST / "t10k-images-idx3-ubyte.gz", MNIST / "t10k-labels-idx1-ubyte.gz"
    if img.exists():
        X = np.frombuffer(gzip.open(img).read(), np.uint8, offset=16).reshape(-1, 784)[:4000] / 255.0
        y = np.frombuffer(gzip.open(lab).read(), np.uint8, offset=8)[:4000]
        out.update({f"mnist{k}": (X.astype(np.float32), (y == k).astype(int)) for k in (1, 7)})
    out["breast"] = (bc.data.astype(np.float32), (bc.target == 0).astype(int))
    out["wine0"] = (wn.data.astype(np.float32), (wn.target == 0).astype(int))
    return out


def detectors(X: np.ndarray, seed: int) -> dict:
    from pyod.models.copod import COPOD
    from pyod.models.ecod import ECOD
    from pyod.models.knn import KNN
    from pyod.models.lof import LOF
    Xs = StandardScaler().fit_transform(X)
    none = np.full(len(X), -1)
    engine = lambda b: Elite.from_arrays(X, none, backbone=b, alice=False, seed=seed).fit().scores_
    return {"deepsvdd": lambda: engine("svdd"), "ae": lambda: engine("ae"), "hbos": lambda: engine("hbos"),
            "iforest": lambda: -IsolationForest(random_state=seed).fit(Xs).score_samples(Xs),
            "ecod": lambda: ECOD().fit(Xs).decision_scores_, "copod": lambda: COPOD().fit(Xs).decision_scores_,
            "knn": lambda: KNN(n_neighbors=10).fit(Xs).decision_scores_,
            "lof": lambda: LOF(n_neighbors=20).fit(Xs).decision_scores_}


def settings(seeds: int):
    """(group, name, r_p, seed, X, y) for every setting (see the module docstring)."""
    for ds in DATASETS:
        z = np.load(DATA / f"{ds}.npz")
        X, y = z["X"].astype(np.float32), z["y"].astype(int)
        for rp in (0.02, 0.05, 0.1, 0.3):
            for seed in range(seeds):
                Xp, yp, _ = make_setting(X, y, rp, seed, 1500, 2)
                yield "adbench", ds, rp, seed, Xp, yp
    for name, (X, y) in extra_sets().items():
        for rp in (0.03, 0.1):
            for seed in range(min(seeds, 2)):
                Xp, yp, _ = make_setting(X, y, rp, seed, 1500, 2)
                yield "rare_class", name, rp, seed, Xp, yp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    auc: dict = defaultdict(lambda: defaultdict(list))
    lift: dict = defaultdict(lambda: defaultdict(list))
    secs: dict = defaultdict(float)
    t0 = time.perf_counter()
    for group, name, rp, seed, X, y in settings(args.seeds):
        for method, fn in detectors(X, seed).items():
            t = time.perf_counter()
            s = np.asarray(fn(), dtype=np.float64)
            secs[method] += time.perf_counter() - t
            auc[method][(group, name)].append(roc_auc_score(y, s))
            lift[method][(group, name)].append(y[np.argsort(-s, kind="stable")[:TOP]].mean() / y.mean())
        print(f"{group:10s} {name:13s} rp={rp} seed={seed} " + " ".join(
            f"{m}={auc[m][(group, name)][-1]:.3f}" for m in auc), flush=True)
    names = list(dict.fromkeys(k for m in auc for k in auc[m]))
    summary: dict = {}
    for group in ("adbench", "rare_class"):
        keys = [k for k in names if k[0] == group]
        print(f"\n{group}: ROC-AUC / lift in the first {TOP} (mean over r_p and seeds)")
        print(f"  {'method':9s} {'mean':>12s}  " + " ".join(f"{k[1]:>13s}" for k in keys))
        for m in auc:
            a = [np.mean(auc[m][k]) for k in keys]
            li = [np.mean(lift[m][k]) for k in keys]
            summary.setdefault(m, {})[group] = {"roc_auc": round(float(np.mean(a)), 4),
                                                "lift_top20": round(float(np.mean(li)), 2)}
            print(f"  {m:9s} {np.mean(a):.3f} / {np.mean(li):4.1f}  " +
                  " ".join(f"{x:.3f}/{v:5.1f}" for x, v in zip(a, li)))
    best = max(summary, key=lambda m: np.mean([summary[m][g]["roc_auc"] for g in summary[m]]))
    print(json.dumps({"first_ranking": summary, "best_mean_roc_auc": best,
                      "seconds": {m: round(v, 1) for m, v in secs.items()},
                      "total_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
