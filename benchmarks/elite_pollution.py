"""How far is each pollution estimate of the Clean tab from the true anomaly rate? (issue 16 follow-up)

Settings as benchmarks/elite.py builds them: every ADBench set in /work/shared/data/adbench, r_p in
{0.1, 0.3} (--rps; 0.059 is the served app's optdigits rate), pools of at most --pool items, 20 oracle labels (half anomalous: chosen, not random), seeds.
ELITE-SVDD is fitted on those labels. Compared, as absolute error against the true rate of the pool:
- ``threshold``: the old panel figure, the pool's share above the threshold that best separates the
  20 labels (balanced accuracy);
- ``pseudo``: the old panel's second figure, the share of pool items ALICE pseudo-labels anomalous;
- ``labels``: the share of anomalies among the expert's labels (the naive reading);
- ``random_n``: the new estimate, after the expert also labels the first n items of the random order
  (n = 10, 20, 50): share of anomalies in the fully labeled prefix (the 20 chosen labels count where
  they fall), with the 95% Wilson interval's coverage and width, over --reps random orders per setting
  (the estimate does not depend on the fit, only on the order).
The true rate is the anomaly share of the whole set the estimate describes (pool + labeled items).
Ends with one JSON line. Run: nice -n 10 .venv/bin/python benchmarks/elite_pollution.py
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from dcai_widgets.elite import Elite
from dcai_widgets.elite.pollution import audit_order, estimate_pollution

try:
    from elite import DATA, DATASETS, make_setting
except ImportError:  # run as a module from the repository root
    from benchmarks.elite import DATA, DATASETS, make_setting

SIZES = (10, 20, 50)


def settings(datasets, rps, seeds: int, cap: int, n_labels: int = 20):
    """benchmarks/elite.py's settings, at the pollutions ``rps`` (0.059: the served app's optdigits set)."""
    for ds in datasets:
        z = np.load(DATA / f"{ds}.npz")
        X, y = z["X"].astype(np.float32), z["y"].astype(int)
        for rp in rps:
            for seed in range(seeds):
                yield (ds, rp, seed, *make_setting(X, y, rp, seed, cap, n_labels))


def one(X, y, labels, seed: int, epochs: int, reps: int) -> dict:
    e = Elite.from_arrays(X, labels, epochs=epochs, seed=seed).fit()
    pool = e.train_ids_
    truth = float(y.mean())
    out = {"true": truth,
           "threshold": float((e.scores_[pool] > e.threshold_).mean()),
           "pseudo": float((e.pseudo_labels_[pool] == 1).mean()),
           "labels": float(labels[labels >= 0].mean())}
    # the new estimate needs no fit: it depends on the random order only, so average over `reps` orders
    # (settings of equal size share their label pattern per seed; one order each would repeat figures)
    for n in SIZES:
        est_, cov, wid, size = [], [], [], []
        for r in range(reps):
            order = audit_order(len(y), 1000 * seed + r)
            codes = labels.copy()
            first = order[codes[order] < 0][:n]          # the expert labels the next n of the random order
            codes[first] = y[first]
            est = estimate_pollution(codes, np.array([], dtype=np.int64), order)
            est_.append(est.estimate), cov.append(est.low <= truth <= est.high)
            wid.append(est.high - est.low), size.append(est.n)
        out[f"random_{n}"] = float(np.mean(est_))
        out[f"random_{n}_abs_error"] = float(np.mean(np.abs(np.asarray(est_) - truth)))
        out[f"random_{n}_n"] = float(np.mean(size))
        out[f"random_{n}_covered"] = float(np.mean(cov))
        out[f"random_{n}_width"] = float(np.mean(wid))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--pool", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--reps", type=int, default=200, help="random orders per setting for the new estimate")
    ap.add_argument("--rps", type=float, nargs="*", default=[0.1, 0.3])
    ap.add_argument("--datasets", nargs="*", default=DATASETS)
    a = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    for ds, rp, seed, X, y, labels in settings(a.datasets, a.rps, a.seeds, a.pool):
        r = one(X, y, labels, seed, a.epochs, a.reps)
        r.update(dataset=ds, rp=rp, seed=seed, n_pool=len(y))
        rows.append(r)
        print(f"{ds:12s} r_p {rp} seed {seed}: true {r['true']:.3f} threshold {r['threshold']:.3f} "
              f"pseudo {r['pseudo']:.3f} labels {r['labels']:.3f} | " +
              " ".join(f"rand{n}: mean {r[f'random_{n}']:.3f} |err| {r[f'random_{n}_abs_error']:.3f} "
                       f"cover {r[f'random_{n}_covered']:.2f}" for n in SIZES), flush=True)
    err = lambda k: round(float(np.mean([abs(r[k] - r["true"]) for r in rows])), 4)
    worst = lambda k: round(float(np.max([abs(r[k] - r["true"]) for r in rows])), 4)
    old = ["threshold", "pseudo", "labels"]
    mean = lambda k: round(float(np.mean([r[k] for r in rows])), 4)
    print(json.dumps({"mean_abs_error": {**{k: err(k) for k in old},
                                         **{f"random_{n}": mean(f"random_{n}_abs_error") for n in SIZES}},
                      "max_abs_error_old": {k: worst(k) for k in old},
                      "random_mean_bias": {n: round(float(np.mean([r[f"random_{n}"] - r["true"] for r in rows])), 4)
                                           for n in SIZES},
                      "wilson95_coverage": {n: mean(f"random_{n}_covered") for n in SIZES},
                      "wilson95_min_coverage": {n: round(float(np.min([r[f"random_{n}_covered"] for r in rows])), 3)
                                                for n in SIZES},
                      "wilson95_mean_width": {n: mean(f"random_{n}_width") for n in SIZES},
                      "reps": a.reps,
                      "runs": len(rows), "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
