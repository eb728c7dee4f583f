"""Are the confidences shown to people calibrated? ECE (15 bins) and accuracy of the shown confidence
against held-out truth along the label curve, before (the model's own top probability) and after
(calibrators fit on cross-fitted predictions of the human labels, dcai_widgets.calibration).

    python benchmarks/calibration.py                       # digits, MNIST-10k, docstrings text set
    python benchmarks/calibration.py --datasets digits --checkpoints 20,50,100

Sources (what a person sees):
  lancet_propagated  LANCET's propagated labels: every item no person labeled.
  lancet_suggest     LANCET as the Label tab's queue: the suggestion shown with each of the next
                     ``--shown`` items it would ask (candidates(n)).
  queue_suggest      the default UncertaintyQueue (logistic regression, entropy): its next ``--shown`` items.
  queue_all          the same queue's suggestion on every item no person labeled.
The label curve: each engine picks its own candidates, labeled from the oracle, ``--batch`` per round.
Calibration does not change which items are picked, so one run per engine gives every method: the
out-of-fold predictions are computed at each checkpoint and each calibrator is fit on them.
Datasets: digits (1,797, pixels), MNIST-10k (/work/shared/data/mnist-test), and docstrings of numpy,
pandas, torch, scikit-learn and bokeh classed by library, embedded with the packaged MiniLM
(benchmarks/_docstrings.py; cached under $DCAI_BENCH_CACHE). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import dcai_widgets as dw
from dcai_widgets.calibration import METHODS, SHOW_PERCENT_FROM, TopLabelCalibrator, ece
from dcai_widgets.queue import UncertaintyQueue

ALL = ("raw",) + METHODS


def session_for(name: str):
    if name == "digits":
        return dw.Session.demo()
    if name == "mnist":
        d = Path(os.environ.get("DCAI_SHARED_DATA", ROOT / ".." / "shared" / "data")) / "mnist-test"
        X, y = dw.data.load_mnist(d)
        return dw.Session.from_images(X, [str(i) for i in range(10)], y_true=y)
    if name == "text":
        import _docstrings  # the docstrings text set (shared with benchmarks/mislabel.py)

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        E, y, libs = _docstrings.load()
        return dw.Session.from_embeddings(E, list(libs), y_true=y)
    raise ValueError(f"unknown dataset {name!r}")


def scores(engine, oof, ids: np.ndarray, truth: np.ndarray) -> dict:
    """ECE and accuracy of each method's confidence on the items ``ids``."""
    logp = engine.log_proba_[ids]
    dist = engine.distance_[ids]
    ok = logp.argmax(1) == truth[ids]
    out = {"accuracy": float(ok.mean()), "n": len(ids)}
    rng = np.random.default_rng(0)
    for m in ALL:
        conf = np.exp(logp.max(1)) if m == "raw" else TopLabelCalibrator(m).fit(*oof).predict(logp, distance=dist)
        # sampling floor: the ECE a perfectly calibrated predictor with these confidences would get on
        # this many items (outcomes drawn from the confidences themselves), mean of 20 draws
        floor = np.mean([ece(conf, rng.random(len(conf)) < conf) for _ in range(20)])
        out[m] = {"ece": round(ece(conf, ok), 4), "mean_conf": round(float(conf.mean()), 4),
                  "floor": round(float(floor), 4)}
    return out


def run_engine(name: str, make, engine_name: str, checkpoints: list[int], batch: int, shown: int) -> list[dict]:
    s = session_for(name)
    s.embeddings
    y = s.y_true
    eng = make(s)
    rows = []
    t0 = time.perf_counter()
    while True:
        eng.fit()
        n = int((s.label_vector() >= 0).sum())
        if n in checkpoints:
            t = time.perf_counter()
            oof = eng.out_of_fold() if hasattr(eng, "out_of_fold") else eng.oof_
            unl = np.flatnonzero(s.label_vector() < 0)
            nxt = np.asarray(eng.candidates(shown), np.int64)
            if engine_name == "lancet":
                rows.append({"dataset": name, "source": "lancet_propagated", "labels": n, **scores(eng, oof, unl, y)})
            else:  # the queue's confidence on every unlabeled item (its calibration beyond the next few)
                rows.append({"dataset": name, "source": "queue_all", "labels": n, **scores(eng, oof, unl, y)})
            rows.append({"dataset": name, "source": f"{engine_name}_suggest", "labels": n, **scores(eng, oof, nxt, y)})
            for r in rows[-2:]:
                print(f"{name:6s} {r['source']:18s} {n:4d} labels: accuracy {r['accuracy']:.3f}  ECE (mean conf) " +
                      "  ".join(f"{m} {r[m]['ece']:.3f} ({r[m]['mean_conf']:.2f})" for m in ALL) +
                      f"  floor {r[METHODS[0]]['floor']:.3f}  (cross-fit {time.perf_counter() - t:.0f} s)", flush=True)
        if n >= max(checkpoints):
            break
        ask = eng.candidates(batch)
        s.label(ask, y[np.asarray(ask, np.int64)], annotator="oracle")
    print(f"{name} {engine_name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def summary(rows: list[dict], method: str, at: int) -> float:
    vals = [r[method]["ece"] for r in rows if r["labels"] == at]
    return max(vals) if vals else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="digits,text,mnist")
    ap.add_argument("--checkpoints", default="20,50,100,200")
    ap.add_argument("--lancet-max", type=int, default=100, help="LANCET's curve stops here (its rounds are slow)")
    ap.add_argument("--engines", default="queue,lancet")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--shown", type=int, default=500,
                    help="next items whose suggestions are scored (fewer: ECE is mostly sampling noise)")
    ap.add_argument("--out", default="", help="also write every row as JSON lines here")
    ap.add_argument("--merge", nargs="*", default=None,
                    help="summarise rows written by earlier runs (--out files; runs can go in parallel)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    cps = sorted(int(c) for c in args.checkpoints.split(","))
    rows: list[dict] = []
    if args.merge is not None:
        rows = [json.loads(line) for f in args.merge for line in Path(f).read_text().splitlines() if line.strip()]
        cps = sorted({r["labels"] for r in rows})
        args.datasets = ",".join(sorted({r["dataset"] for r in rows}))
    for name in ([] if args.merge is not None else args.datasets.split(",")):
        if "queue" in args.engines:
            rows += run_engine(name, lambda s: UncertaintyQueue(s, cold_start=args.batch), "queue", cps,
                               args.batch, args.shown)
        if "lancet" in args.engines:
            lcp = [c for c in cps if c <= args.lancet_max]
            rows += run_engine(name, lambda s: dw.Lancet(s, batch=args.batch, progress=False, warn=False,
                                                         calibration=None), "lancet", lcp, args.batch, args.shown)
        if args.out:
            Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    at = [c for c in cps if c >= SHOW_PERCENT_FROM]
    # per engine, the method whose ECE, worst over datasets and sources at each checkpoint from 50 labels,
    # is lowest on average over those checkpoints (each engine ships one default for every kind of data)
    best, worst = {}, {}
    for eng in ("lancet", "queue"):
        part = [r for r in rows if r["source"].startswith(eng)]
        if not part:
            continue
        worst[eng] = {m: {c: summary(part, m, c) for c in at} for m in ALL}
        best[eng] = min(METHODS, key=lambda m: float(np.mean([v for v in worst[eng][m].values() if v is not None])))
        print(f"{eng}: worst ECE over datasets and sources: " + "; ".join(
            f"{m}: " + ", ".join(f"{c}: {worst[eng][m][c]:.3f}" for c in at if worst[eng][m][c] is not None)
            for m in ALL) + f" -> {best[eng]}")

    def overall(method_of, c):
        vals = [worst[e][method_of(e)].get(c) for e in worst]
        vals = [v for v in vals if v is not None]
        return max(vals) if vals else None

    acc100 = [r["accuracy"] for r in rows if r["labels"] == 100 and r["source"] == "lancet_propagated"]
    out = {"methods": best, "ece_at_50": overall(best.get, 50), "ece_at_100": overall(best.get, 100),
           "ece_at_50_before": overall(lambda e: "raw", 50), "ece_at_100_before": overall(lambda e: "raw", 100),
           "accuracy_at_100": min(acc100) if acc100 else None, "per_engine_method_worst": worst,
           "datasets": args.datasets, "checkpoints": cps,
           "lancet_checkpoints": sorted({r["labels"] for r in rows if r["source"].startswith("lancet")}),
           "rows": len(rows)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
