"""Are the confidences shown to people calibrated? ECE (15 bins) and accuracy of the shown confidence
against held-out truth along the label curve: raw (the model's own top probability), each calibrator of
dcai_widgets.calibration fit on cross-fitted predictions of the human labels, and before/after (each
engine's old and current default method and number of folds, scored on the same checkpoints).

    python benchmarks/calibration.py                       # digits, MNIST-10k, docstrings text set
    python benchmarks/calibration.py --datasets digits --checkpoints 20,50,100
    python benchmarks/calibration.py --seeds 0,1,2 --checkpoints 50,100 --states /tmp/cal-states
    python benchmarks/calibration.py --from-states /tmp/cal-states     # re-score saved checkpoints
    python benchmarks/calibration.py --gate --seeds 0,1,2             # the Label panel's live audit gate
    python benchmarks/calibration.py --gate --seeds 0 --states DIR    # ... and save each curve's record
    python benchmarks/calibration.py --gate-from DIR [--partial]      # replay audit rules on saved curves
    python benchmarks/calibration.py --fold-states DIR --datasets text --seeds 0,1   # LANCET fold states
    python benchmarks/calibration.py --fold-states-from DIR          # score propagated-label calibrators

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
(benchmarks/_docstrings.py; cached under $DCAI_BENCH_CACHE). ``--seeds``: each engine's curve per seed
(the queue's random_state, LANCET's seed). ``--states DIR`` saves what each checkpoint needs to score any
calibrator (out-of-fold pairs, the full model's log-probabilities and distances, labeled ids, the next
items) so ``--from-states DIR`` re-scores them without re-running the engines (LANCET's curves take
15-30 min each on the shared box). "before" = each engine's default before issue 14's second pass
(``BEFORE``), "after" = its current default, both scored on the same checkpoints. Last line: one JSON object.

``--gate``: the Label panel's live audit (calibration.SuggestionAudit), prequential as the panel applies
it: along each engine's curve every suggestion asked is recorded (its shown, calibrated confidence; whether
the simulated person's label equalled it) after it is labeled; at every round from 50 labels the gate's
verdict is taken before the next round and scored on the next items the engine asks (``--shown``): the
share of checkpoints showing a percentage, the ECE of the shown percentages when shown (and of all, as
if ungated), and how far the "recent suggestions right k/n" figure is from the next items' accuracy.
"""
from __future__ import annotations

import argparse
import inspect
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
from dcai_widgets.calibration import (
    METHODS,
    SHOW_PERCENT_FROM,
    SuggestionAudit,
    TopLabelCalibrator,
    ece,
    ece_floor,
    wilson,
)
from dcai_widgets.calibration_shift import heldout_trust, trust_weights
from dcai_widgets.lancet.engine import version_precise
from dcai_widgets.queue import UncertaintyQueue

ALL = ("raw",) + METHODS
# each engine's default before issue 14's second pass (the "before" of the last line)
BEFORE = {"lancet": ("coverage", 3), "queue": ("temperature", 5)}   # (method, folds)
DEFAULT_SHOWN = 500   # --shown: next items whose suggestions are scored


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


def scores(state: dict, ids: np.ndarray, pool: bool = False) -> dict:
    """ECE and accuracy of each method's confidence on the items ``ids`` of a saved checkpoint ``state``;
    "shipped": the engine's default as the app shows it (for LANCET's propagated labels, ``pool``, the
    default method on pairs weighted toward the pool's trust scores, ``Lancet(calibration_weights="trust")``)."""
    logp, dist, truth = state["logp"][ids], state["dist"][ids], state["y"][ids]
    oof = (state["oof_logp"], state["oof_ok"], state["oof_dist"])
    ok = logp.argmax(1) == truth
    out = {"accuracy": float(ok.mean()), "n": len(ids)}
    rng = np.random.default_rng(0)

    def cell(conf: np.ndarray) -> dict:
        return {"ece": round(ece(conf, ok), 4), "mean_conf": round(float(conf.mean()), 4),
                "floor": round(ece_floor(conf, 20, rng), 4)}

    # "before": the engine's old default method on out-of-fold pairs from its old number of folds
    old = tuple(state[f"before_{k}"] for k in ("oof_logp", "oof_ok", "oof_dist")) if "before_oof_ok" in state else oof
    for m in ALL + ("before",):
        if m == "raw":
            conf = np.exp(logp.max(1))
        elif m == "before":
            conf = TopLabelCalibrator(BEFORE[str(state["engine"])][0]).fit(*old).predict(logp, distance=dist)
        else:
            conf = TopLabelCalibrator(m).fit(*oof).predict(logp, distance=dist)
        out[m] = cell(conf)
    shipped = default_method(str(state["engine"])) or "raw"
    out["shipped"] = dict(out[shipped])
    if pool and "oof_trust" in state and shipped != "raw":
        w = trust_weights(state["oof_trust"], state["trust"][ids])
        out["shipped"] = cell(TopLabelCalibrator(shipped).fit(*oof, sample_weight=w).predict(logp, distance=dist))
    return out


def score_state(state: dict) -> list[dict]:
    """Rows for one checkpoint: the engine's confidence on every unlabeled item (LANCET: its propagated
    labels; the queue: its suggestion beyond the next few) and on the next items it asks."""
    name, engine, n, seed = (str(state["dataset"]), str(state["engine"]), int(state["labels"]), int(state["seed"]))
    unl = np.setdiff1d(np.arange(len(state["y"])), state["labeled"])
    head = {"dataset": name, "labels": n, "seed": seed}
    first = "lancet_propagated" if engine == "lancet" else "queue_all"
    rows = [{**head, "source": first, **scores(state, unl, pool=engine == "lancet")},
            {**head, "source": f"{engine}_suggest", **scores(state, np.asarray(state["order"], np.int64))}]
    for r in rows:
        print(f"{name:6s} s{seed} {r['source']:18s} {n:4d} labels: accuracy {r['accuracy']:.3f}  ECE (mean conf) " +
              "  ".join(f"{m} {r[m]['ece']:.3f} ({r[m]['mean_conf']:.2f})" for m in ALL + ("shipped",)) +
              f"  floor {r[METHODS[0]]['floor']:.3f}", flush=True)
    return rows


def run_engine(name: str, make, engine_name: str, checkpoints: list[int], batch: int, shown: int,
               seed: int = 0, states: str = "") -> list[dict]:
    s = session_for(name)
    _ = s.embeddings   # encode (and cache) before the curve starts
    y = s.y_true
    eng = make(s, seed)
    rows = []
    t0 = time.perf_counter()
    while True:
        eng.fit()
        n = int((s.label_vector() >= 0).sum())
        if n in checkpoints:
            t = time.perf_counter()
            oof = eng.out_of_fold() if hasattr(eng, "out_of_fold") else eng.oof_
            state = {"dataset": name, "engine": engine_name, "labels": n, "seed": seed,
                     "oof_logp": oof[0], "oof_ok": oof[1], "oof_dist": oof[2], "logp": eng.log_proba_,
                     "dist": eng.distance_, "y": y, "labeled": np.flatnonzero(s.label_vector() >= 0),
                     "order": np.asarray(eng.candidates(shown), np.int64)}
            if hasattr(eng, "trust_"):   # LANCET: trust scores for its propagated labels' weighted calibrator
                lab = state["labeled"]
                state.update(trust=eng.trust_, oof_trust=heldout_trust(
                    eng._snapshot[0], lab, y[lab], oof[0].argmax(1), eng.calibration_folds, eng.seed))
            folds, old_folds = eng.calibration_folds, BEFORE[engine_name][1]
            if old_folds != folds and hasattr(eng, "out_of_fold"):  # the old default's pairs, same checkpoint
                eng.calibration_folds = old_folds
                try:
                    before = eng.out_of_fold()
                finally:
                    eng.calibration_folds = folds
                state.update(before_oof_logp=before[0], before_oof_ok=before[1], before_oof_dist=before[2])
            print(f"{name} {engine_name} seed {seed} at {n} labels: cross-fit {time.perf_counter() - t:.0f} s",
                  flush=True)
            if states:
                Path(states).mkdir(parents=True, exist_ok=True)
                np.savez(Path(states) / f"{name}_{engine_name}_{seed}_{n}.npz", **state)
            rows += score_state(state)
        if n >= max(checkpoints):
            break
        ask = eng.candidates(batch)
        s.label(ask, y[np.asarray(ask, np.int64)], annotator="oracle")
    print(f"{name} {engine_name} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def summary(rows: list[dict], method: str, at: int) -> float | None:
    """ECE of ``method``, worst over datasets, sources and seeds, at ``at`` labels."""
    vals = [r[method]["ece"] for r in rows if r["labels"] == at]
    return max(vals) if vals else None


def seed_worst(rows: list[dict], method: str, at: int) -> float | None:
    """Per seed the worst over datasets and sources, averaged over seeds (the typical worst case)."""
    per = {}
    for r in rows:
        if r["labels"] == at:
            per[r.get("seed", 0)] = max(per.get(r.get("seed", 0), 0.0), r[method]["ece"])
    return round(float(np.mean(list(per.values()))), 4) if per else None


def default_method(engine: str) -> str | None:
    """The calibration each engine ships with now (its constructor's default)."""
    cls = dw.Lancet if engine == "lancet" else UncertaintyQueue
    return inspect.signature(cls).parameters["calibration"].default


def folds_of(engine: str) -> int:
    cls = dw.Lancet if engine == "lancet" else UncertaintyQueue
    return inspect.signature(cls).parameters["calibration_folds"].default


def run_gate(name: str, make, engine_name: str, upto: int, batch: int, shown: int, seed: int, window: int,
             states: str = "") -> list[dict]:
    """The audit gate along one curve (module docstring, ``--gate``): one row per round from 50 to ``upto``
    labels. "future": the next ``window`` suggestions the person is actually shown after the verdict (the
    curve runs on until they are known), each with the confidence shown then; "next": the suggestions of
    the next ``shown`` items the current fit would ask (the figure of the section before). With ``states``
    the whole record (every suggestion shown: labels at its fit, shown confidence, right) and the per-round
    "next" figures are saved after each round as ``{dataset}_{engine}_{seed}_gate.json``, so other audit
    rules can be scored on the same curve without re-running it (``--gate-from``)."""
    s = session_for(name)
    _ = s.embeddings
    y, classes = np.asarray(s.y_true, np.int64), [str(c) for c in s.classes]
    eng, audit, t0 = make(s, seed), SuggestionAudit(window=window), time.perf_counter()
    log: list[tuple] = []      # (labels when shown, shown confidence, right, the fit's calibration precise)
    checks: list[dict] = []

    def suggestions(ids):
        sug = [eng.suggest(int(i)) for i in ids]
        keep = [(float(g[1]), g[0] == classes[y[int(i)]]) for i, g in zip(ids, sug)
                if g is not None and np.isfinite(g[1])]
        return np.array([c for c, _ in keep]), np.array([o for _, o in keep], bool)

    while True:
        eng.fit()
        n = int((s.label_vector() >= 0).sum())
        if states:
            _save_gate_log(states, name, engine_name, seed, batch, shown, log, checks)
        if SHOW_PERCENT_FROM <= n <= upto:
            v = audit.verdict()
            conf, ok = suggestions(eng.candidates(shown))
            checks.append({"dataset": name, "engine": engine_name, "seed": seed, "labels": n, "open": bool(v.open),
                           "audit_k": v.k, "audit_n": v.n, "audit_mean_conf": round(v.mean_conf, 4),
                           "next_ece": round(ece(conf, ok), 4), "next_accuracy": round(float(ok.mean()), 4),
                           "next_mean_conf": round(float(conf.mean()), 4)})
        if sum(1 for m, *_ in log if m >= upto) >= window or len(log) >= len(y):
            break
        ask = [int(i) for i in eng.candidates(batch)]
        if not ask:
            break
        conf, ok = suggestions(ask)          # shown with each asked item; the person's label is its truth
        precise = version_precise(getattr(eng, "model_version_", None))   # else the panel says "uncertain"
        s.label(ask, [classes[y[i]] for i in ask], annotator="oracle")
        for c, o in zip(conf, ok):
            audit.record(c, o)
            log.append((n, c, o, precise))
    for r in checks:
        fut = [(c, o) for m, c, o, *_ in log if m >= r["labels"]][:window]
        fc, fo = np.array([c for c, _ in fut]), np.array([o for _, o in fut], bool)
        rate = r["audit_k"] / r["audit_n"] if r["audit_n"] else float("nan")
        lo, hi = wilson(r["audit_k"], r["audit_n"])
        r.update(future_conf=fc.round(4).tolist(), future_ok=fo.astype(int).tolist(), n_future=len(fo),
                 future_accuracy=round(float(fo.mean()), 4), future_mean_conf=round(float(fc.mean()), 4),
                 future_ece=round(ece(fc, fo), 4), recent_rate=round(rate, 4),
                 rate_err_future=round(abs(rate - float(fo.mean())), 4),
                 future_in_wilson=bool(lo <= fo.mean() <= hi))
        print(f"{name:6s} {engine_name:6s} s{seed} {r['labels']:4d} labels: gate {'OPEN  ' if r['open'] else 'closed'} "
              f"audit {r['audit_k']}/{r['audit_n']} (mean shown {r['audit_mean_conf']:.2f}) | next {len(fo)} shown: "
              f"acc {r['future_accuracy']:.2f} mean conf {r['future_mean_conf']:.2f} ECE {r['future_ece']:.3f} | "
              f"next {shown} asked by this fit: acc {r['next_accuracy']:.3f} conf {r['next_mean_conf']:.3f} "
              f"ECE {r['next_ece']:.3f}", flush=True)
    if states:
        _save_gate_log(states, name, engine_name, seed, batch, shown, log, checks, done=True)
    print(f"{name} {engine_name} seed {seed} gate curve: {time.perf_counter() - t0:.0f} s", flush=True)
    return checks


def _save_gate_log(folder: str, name: str, engine: str, seed: int, batch: int, shown: int,
                   log: list, checks: list, done: bool = False) -> None:
    """One gate curve's record as JSON (see ``run_gate``); written atomically after each round."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    f = Path(folder) / f"{name}_{engine}_{seed}_gate.json"
    keep = ("labels", "next_ece", "next_accuracy", "next_mean_conf")
    doc = {"dataset": name, "engine": engine, "seed": seed, "batch": batch, "shown": shown, "done": done,
           "log": [[int(m), round(float(c), 6), int(o), int(p)] for m, c, o, p in log],
           "checks": [{k: r[k] for k in keep} for r in checks]}
    tmp = f.with_name(f.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, f)


def _pooled(part: list[dict]) -> float | None:
    """ECE of the future shown suggestions of several checkpoints together (50 items each is mostly noise)."""
    if not part:
        return None
    c = np.concatenate([r["future_conf"] for r in part])
    o = np.concatenate([r["future_ok"] for r in part]).astype(bool)
    return round(ece(c, o), 4)


def _floor(part: list[dict]) -> float | None:
    """The ECE a perfectly calibrated predictor with these confidences would get on this many items."""
    if not part:
        return None
    return round(ece_floor(np.concatenate([r["future_conf"] for r in part]), 50), 4)


def gate_summary(rows: list[dict], checkpoints: list[int]) -> dict:
    """Per checkpoint (and over every round from 50 to 100): share shown; the ECE of the shown percentage
    on the next suggestions shown, pooled over the cells where the gate was open / closed / all; the
    recent-figure's error against those suggestions' accuracy."""
    out: dict = {}
    groups = {str(c): [r for r in rows if r["labels"] == c] for c in checkpoints}
    groups["50to100"] = [r for r in rows if SHOW_PERCENT_FROM <= r["labels"] <= 100]
    for key, part in groups.items():
        if not part:
            continue
        op, cl = [r for r in part if r["open"]], [r for r in part if not r["open"]]
        out[key] = {
            "cells": len(part), "share_shown": round(len(op) / len(part), 3),
            "ece_shown_pooled": _pooled(op), "floor_shown": _floor(op),
            "ece_closed_pooled": _pooled(cl), "ece_ungated_pooled": _pooled(part), "floor_ungated": _floor(part),
            "ece_shown_cell_worst": max((r["future_ece"] for r in op), default=None),
            "ece_ungated_cell_worst": max(r["future_ece"] for r in part),
            "next_ece_shown_worst": max((r["next_ece"] for r in op), default=None),
            "next_ece_ungated_worst": max(r["next_ece"] for r in part),
            "rate_err_mean": round(float(np.mean([r["rate_err_future"] for r in part])), 4),
            "rate_err_worst": max(r["rate_err_future"] for r in part),
            "future_in_wilson_share": round(float(np.mean([r["future_in_wilson"] for r in part])), 3),
        }
    return out


def main_gate(args) -> None:
    rows: list[dict] = []
    upto = max(int(c) for c in args.checkpoints.split(","))
    for name in args.datasets.split(","):
        for seed in (int(x) for x in args.seeds.split(",")):
            if "queue" in args.engines:
                rows += run_gate(name, lambda s, sd: UncertaintyQueue(s, cold_start=args.batch, random_state=sd),
                                 "queue", upto, args.batch, args.shown, seed, args.window, args.states)
            if "lancet" in args.engines:
                rows += run_gate(name, lambda s, sd: dw.Lancet(s, batch=args.batch, progress=False, warn=False, seed=sd),
                                 "lancet", min(upto, args.lancet_max), args.batch, args.shown, seed, args.window,
                                 args.states)
            if args.out:
                Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cps = sorted(int(c) for c in args.checkpoints.split(",") if int(c) >= SHOW_PERCENT_FROM)
    summ = {e: gate_summary([r for r in rows if r["engine"] == e], cps) for e in sorted({r["engine"] for r in rows})}
    for e, d in summ.items():
        for k, v in d.items():
            print(f"{e} @ {k}: {v}", flush=True)
    out = {"mode": "gate", "window": args.window, "shown": args.shown, "datasets": args.datasets,
           "seeds": args.seeds, "engines": sorted(summ), "rows": len(rows), "gate": summ}
    for c in ("50", "100"):
        part = [r for r in rows if str(r["labels"]) == c]
        op = [r for r in part if r["open"]]
        out[f"gate_share_shown_at_{c}"] = round(len(op) / len(part), 3) if part else None
        out[f"gate_ece_shown_at_{c}"] = _pooled(op)
        out[f"ungated_ece_at_{c}"] = _pooled(part)
        out[f"recent_rate_err_at_{c}"] = round(float(np.mean([r["rate_err_future"] for r in part])), 4) if part else None
    print(json.dumps(out))


def main_gate_from(folder: str, partial: bool = False) -> None:
    """Every rule of ``_gate_rules.RULES`` replayed on the saved gate curves (``_gate_rules`` docstring)."""
    import _gate_rules

    res = _gate_rules.compare(folder, partial=partial)
    for eng, d in res.items():
        print(f"{eng}: {len(d['curves'])} curves: {', '.join(d['curves'])}")
        for name, v in d.items():
            if name == "curves":
                continue
            at = "  ".join(f"@{k[3:]} open {x['open']} ECE next 50 {x['ece_next50_shown']} (floor {x['floor']})"
                           for k, x in v.items() if k.startswith("at_"))
            print(f"  {name:12s} shown {v['share_shown']:.3f}  ECE shown {v['ece_shown']} (floor {v['floor_shown']})"
                  f"  ungated {v['ece_ungated']} (floor {v['floor_ungated']})  worst curve {v['ece_shown_cell_worst']}"
                  f"  |k/n - next 50| {v['rate_err_mean']}  {at}", flush=True)
            x = v["next"]
            print(f"  {'':12s} next-{DEFAULT_SHOWN} ECE per round: open {x['open']:.3f} of {x['rounds']}, mean when open "
                  f"{x['ece_open_mean']} (worst {x['ece_open_worst']}), when closed {x['ece_closed_mean']}; "
                  f"open with ECE > 0.05: {x['open_over_0.05']}, closed with <= 0.05: {x['closed_under_0.05']}")
    slim = {e: {r: {k: v for k, v in x.items() if k != "cells"} for r, x in d.items() if r != "curves"}
            for e, d in res.items()}
    out = {"mode": "gate-from", "rules": _gate_rules.RULES, "shipped": _gate_rules.shipped(),
           "curves": {e: d["curves"] for e, d in res.items()}, "result": slim,
           "shipped_cells": {e: d["shipped"]["cells"] for e, d in res.items()}}
    for e, d in res.items():   # headline: the shipped rule against the rule before (w50), suggestions at 50-100 labels
        for r, tag in (("shipped", ""), ("w50", "_before")):
            out[f"{e}_share_shown{tag}"] = d[r]["share_shown"]
            out[f"{e}_ece_shown{tag}"] = d[r]["ece_shown"]
            out[f"{e}_floor_shown{tag}"] = d[r]["floor_shown"]
        out[f"{e}_ece_ungated"] = d["shipped"]["ece_ungated"]
    print(json.dumps(out))


def main_fold_states(args) -> None:
    """``--fold-states DIR``: LANCET curves saving fold states; ``--fold-states-from DIR``: score them
    (``_fold_states`` docstring). Last line: per candidate calibrator the worst ECE over datasets, both
    sources and seeds at 50 and 100 labels; ``ece_at_50`` / ``ece_at_100`` are the shipped pair's (trust-weighted
    for propagated labels, unweighted for suggestions)."""
    import _fold_states

    if args.fold_states:
        cps = sorted(int(c) for c in args.checkpoints.split(","))
        for name in args.datasets.split(","):
            for seed in (int(x) for x in args.seeds.split(",")):
                s, t = session_for(name), time.perf_counter()
                eng = dw.Lancet(s, batch=args.batch, progress=False, warn=False, calibration=None, seed=seed)
                for p in _fold_states.save(s, eng, name, seed, cps, args.fold_states, args.batch):
                    print(f"saved {p}", flush=True)
                print(f"{name} seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
    res = _fold_states.compare(args.fold_states or args.fold_states_from, session_for)
    _fold_states.print_table(res)
    head = res["headline"]
    out = {"mode": "fold-states", "shipped": _fold_states.SHIPPED, "ece_at_50": head["shipped_ece_at_50"],
           "ece_at_100": head["shipped_ece_at_100"], "accuracy_at_100": res["accuracy_at_100"], **head,
           "states": [f"{r['dataset']}/s{r['seed']}@{r['labels']}" for r in res["rows"]], "cells": res["cells"]}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="digits,text,mnist")
    ap.add_argument("--checkpoints", default="20,50,100,200")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds: one curve per engine, dataset and seed")
    ap.add_argument("--lancet-max", type=int, default=100, help="LANCET's curve stops here (its rounds are slow)")
    ap.add_argument("--engines", default="queue,lancet")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--shown", type=int, default=DEFAULT_SHOWN,
                    help="next items whose suggestions are scored (fewer: ECE is mostly sampling noise)")
    ap.add_argument("--out", default="", help="also write every row as JSON lines here")
    ap.add_argument("--states", default="", help="save each checkpoint's state (npz) in this folder")
    ap.add_argument("--from-states", nargs="*", default=None,
                    help="score checkpoint states saved by earlier runs (folders or .npz files) instead of running")
    ap.add_argument("--merge", nargs="*", default=None,
                    help="summarise rows written by earlier runs (--out files; runs can go in parallel)")
    ap.add_argument("--gate", action="store_true", help="measure the Label panel's live audit gate (docstring)")
    ap.add_argument("--window", type=int, default=50, help="--gate: the audit's window (SuggestionAudit)")
    ap.add_argument("--gate-from", default="", help="replay audit rules on gate curves saved with --gate --states")
    ap.add_argument("--partial", action="store_true", help="--gate-from: also score curves that did not finish")
    ap.add_argument("--fold-states", default="", help="LANCET curves saving fold states here (_fold_states.py)")
    ap.add_argument("--fold-states-from", default="", help="score propagated-label calibrators on saved fold states")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.fold_states or args.fold_states_from:
        if args.checkpoints == ap.get_default("checkpoints"):
            args.checkpoints = "50,100"
        return main_fold_states(args)
    if args.gate_from:
        return main_gate_from(args.gate_from, args.partial)
    if args.gate:
        if args.checkpoints == ap.get_default("checkpoints"):
            args.checkpoints = "50,100"
        return main_gate(args)
    cps = sorted(int(c) for c in args.checkpoints.split(","))
    seeds = [int(x) for x in args.seeds.split(",")]
    rows: list[dict] = []
    if args.merge is not None:
        rows = [json.loads(line) for f in args.merge for line in Path(f).read_text().splitlines() if line.strip()]
    elif args.from_states is not None:
        files = sorted(f for a in args.from_states for f in (Path(a).glob("*.npz") if Path(a).is_dir() else [Path(a)]))
        for f in files:
            with np.load(f, allow_pickle=False) as z:
                st = {k: z[k] for k in z.files}
            if str(st["engine"]) in args.engines:
                rows += score_state(st)
    else:
        for name in args.datasets.split(","):
            for seed in seeds:
                if "queue" in args.engines:
                    rows += run_engine(name, lambda s, sd: UncertaintyQueue(s, cold_start=args.batch, random_state=sd),
                                       "queue", cps, args.batch, args.shown, seed, args.states)
                if "lancet" in args.engines:
                    lcp = [c for c in cps if c <= args.lancet_max]
                    rows += run_engine(name, lambda s, sd: dw.Lancet(s, batch=args.batch, progress=False, warn=False,
                                                                     calibration=None, seed=sd),
                                       "lancet", lcp, args.batch, args.shown, seed, args.states)
                if args.out:
                    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    if args.merge is not None or args.from_states is not None:
        cps = sorted({r["labels"] for r in rows})
        args.datasets = ",".join(sorted({r["dataset"] for r in rows}))
        seeds = sorted({r.get("seed", 0) for r in rows})
    at = [c for c in cps if c >= SHOW_PERCENT_FROM]
    # per engine and method: the ECE worst over datasets, sources and seeds at each checkpoint from 50
    # labels; "best" = lowest on average over those checkpoints (one default per engine for every kind of data)
    best, worst, typical, cells = {}, {}, {}, {}
    for eng in ("lancet", "queue"):
        part = [r for r in rows if r["source"].startswith(eng)]
        if not part:
            continue
        worst[eng] = {m: {c: summary(part, m, c) for c in at} for m in ALL + ("shipped",)}
        typical[eng] = {m: {c: seed_worst(part, m, c) for c in at} for m in ALL + ("shipped",)}
        best[eng] = min(METHODS, key=lambda m: float(np.mean([v for v in worst[eng][m].values() if v is not None])))
        print(f"{eng}: worst ECE over datasets, sources and seeds: " + "; ".join(
            f"{m}: " + ", ".join(f"{c}: {worst[eng][m][c]:.3f}" for c in at if worst[eng][m][c] is not None)
            for m in ALL) + f" -> lowest: {best[eng]}; shipped: {default_method(eng)}")
        cells[eng] = {f"{r['dataset']}/{r['source']}/s{r.get('seed', 0)}@{r['labels']}":
                      {"before": r["before"]["ece"], "after": r["shipped"]["ece"],
                       "raw": r["raw"]["ece"], "accuracy": round(r["accuracy"], 4)} for r in part if r["labels"] in at}

    def overall(method_of, c):
        vals = [worst[e][method_of(e)].get(c) for e in worst]
        vals = [v for v in vals if v is not None]
        return max(vals) if vals else None

    acc100 = [r["accuracy"] for r in rows if r["labels"] == 100 and r["source"] == "lancet_propagated"]
    qacc100 = [r["accuracy"] for r in rows if r["labels"] == 100 and r["source"] == "queue_all"]
    after = {e: default_method(e) or "raw" for e in worst}
    shipped = {e: "shipped" for e in worst}

    def before_worst(c, eng=""):
        vals = [r["before"]["ece"] for r in rows if r["labels"] == c and "before" in r and r["source"].startswith(eng)]
        return max(vals) if vals else None

    per_engine = {f"{e}_ece_at_{c}{tag}": (before_worst(c, e) if tag else worst[e]["shipped"].get(c))
                  for e in worst for c in (50, 100) for tag in ("", "_before")}

    out = {"methods": after, "folds": {e: folds_of(e) for e in worst},
           "methods_before": {e: list(BEFORE[e]) for e in worst}, "lowest_worst": best,
           "ece_at_50": overall(shipped.get, 50), "ece_at_100": overall(shipped.get, 100),
           "ece_at_50_before": before_worst(50), "ece_at_100_before": before_worst(100),
           "ece_at_50_raw": overall(lambda e: "raw", 50), "ece_at_100_raw": overall(lambda e: "raw", 100),
           # calibration changes no label and no pick: accuracy is the same before and after
           "accuracy_at_100": round(min(acc100), 4) if acc100 else None,
           "queue_accuracy_at_100": round(min(qacc100), 4) if qacc100 else None,
           **per_engine, "per_engine_method_worst": worst, "per_engine_method_seed_worst": typical, "cells": cells,
           "datasets": args.datasets, "seeds": seeds, "checkpoints": cps,
           "lancet_checkpoints": sorted({r["labels"] for r in rows if r["source"].startswith("lancet")}),
           "rows": len(rows)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
