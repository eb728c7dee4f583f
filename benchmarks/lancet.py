"""LANCET against its baselines on one embedding: accuracy of the labels every method gives the items
the oracle did not label, at the same number of human labels.

    python benchmarks/lancet.py --dataset digits --budget 90
    python benchmarks/lancet.py --dataset mnist --budget 100        # MNIST-10k from ../shared/data

Methods: LANCET (DMN candidates); LANCET with random candidates (ablation); scikit-learn LabelSpreading
(kNN kernel) on the session embedding with random labels (the baseline); entropy active learning with a
logistic regression on the session embedding. Also the stop-rule check (after the rule fires, one more
round yields a propagation efficiency below 0.5). Last line: one JSON object of the figures.
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

import dcai_widgets as dw  # noqa: E402
from dcai_widgets.queue import UncertaintyQueue  # noqa: E402


def shared_data() -> Path:
    env = os.environ.get("DCAI_SHARED_DATA")
    p = Path(env) if env else ROOT / ".." / "shared" / "data"
    if not p.is_dir():
        sys.exit(f"shared data not found at {p}; set DCAI_SHARED_DATA")
    return p


def make_session(dataset: str):
    if dataset == "digits":
        return lambda: dw.Session.demo()
    X, y = dw.data.load_mnist(shared_data() / "mnist-test")
    return lambda: dw.Session.from_images(X, [str(i) for i in range(10)], y_true=y)


def label_spreading(session, budget: int, seed: int) -> float:
    """LabelSpreading (kNN kernel) on the session embedding from ``budget`` random labels."""
    from sklearn.semi_supervised import LabelSpreading

    y = session.y_true
    ids = np.random.default_rng(seed).choice(len(y), budget, replace=False)
    yl = np.full(len(y), -1)
    yl[ids] = y[ids]
    ls = LabelSpreading(kernel="knn", n_neighbors=10, max_iter=100).fit(session.embeddings, yl)
    rest = yl < 0
    return float((ls.transduction_[rest] == y[rest]).mean())


def stop_check(df) -> dict:
    """First round where the stop rule fired and the propagation efficiency of the round after it."""
    fired = df.index[df["stop"].fillna(False).astype(bool)].tolist()
    if not fired:
        return {"stop_fired_at": None, "efficiency_after_stop": None, "stop_check": "rule did not fire"}
    r = fired[0]
    if r + 1 >= len(df):
        return {"stop_fired_at": int(df.loc[r, "human_labels"]), "efficiency_after_stop": None,
                "stop_check": "fired in the last round; no round after it"}
    eff = float(df.loc[r + 1, "efficiency"])
    return {"stop_fired_at": int(df.loc[r, "human_labels"]), "efficiency_after_stop": eff,
            "stop_check": "pass" if eff < 0.5 else "fail"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    ap.add_argument("--budget", type=int, default=90)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma list of methods to skip: ablation,al")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    new = make_session(args.dataset)
    skip = set(filter(None, args.skip.split(",")))
    out: dict = {"dataset": args.dataset, "budget": args.budget, "batch": args.batch, "seed": args.seed}

    def run(name, factory, batch=args.batch):
        s = new()
        s.embeddings  # encoder time is not a round
        t = time.perf_counter()
        df = dw.simulate(factory, s, budget=args.budget, batch=batch)
        wall = time.perf_counter() - t
        last = df.iloc[-1]
        print(f"{name:28s} accuracy {last['accuracy']:.4f} at {int(last['human_labels'])} labels; "
              f"{df['seconds'].iloc[1:].mean():.1f} s/round; {wall:.0f} s total", flush=True)
        print("   curve: " + " ".join(f"{int(h)}:{a:.3f}" for h, a in zip(df["human_labels"], df["accuracy"])),
              flush=True)
        return df

    lan = run("LANCET", lambda s: dw.Lancet(s, batch=args.batch, seed=args.seed, progress=False))
    out["accuracy"] = float(lan["accuracy"].iloc[-1])
    out["human_labels"] = int(lan["human_labels"].iloc[-1])
    out["seconds_per_round"] = float(lan["seconds"].iloc[1:].mean())
    out["max_seconds_per_round"] = float(lan["seconds"].max())
    out["curve"] = {int(h): round(float(a), 4) for h, a in zip(lan["human_labels"], lan["accuracy"])}
    out.update(stop_check(lan))
    out["dmn_stop_flags"] = lan["stop"].tolist()
    if "ablation" not in skip:
        rnd = run("LANCET, random candidates",
                  lambda s: dw.Lancet(s, batch=args.batch, selection="random", seed=args.seed, progress=False))
        out["random_candidates_accuracy"] = float(rnd["accuracy"].iloc[-1])
    if "al" not in skip:
        al = run("entropy AL, logistic reg.", lambda s: UncertaintyQueue(s, cold_start=args.batch))
        out["entropy_al_accuracy"] = float(al["accuracy"].iloc[-1])
    s = new()
    t = time.perf_counter()
    out["baseline_accuracy"] = label_spreading(s, out["human_labels"], args.seed)
    print(f"{'LabelSpreading, random':28s} accuracy {out['baseline_accuracy']:.4f} at {out['human_labels']} "
          f"labels; {time.perf_counter() - t:.1f} s", flush=True)
    out["ratio_vs_baseline"] = out["accuracy"] / out["baseline_accuracy"]
    print(f"LANCET / LabelSpreading accuracy ratio: {out['ratio_vs_baseline']:.3f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
