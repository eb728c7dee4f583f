"""Selection via Proxy and AutoSampling on MNIST-10k and CIFAR10_0 embeddings (dcai_widgets.train).

Data. MNIST-10k (/work/shared/data/mnist-test): target inputs = the 784 raw pixels in [0, 1]; the
session-style embeddings = PCA-32 of the pixels. CIFAR10_0 (/work/shared/data/adbench/CIFAR10_0.npz, 5,263
ResNet-18 embeddings): its y is binary (5% rare), so the task here is an honest stand-in: the 10 k-means
clusters of the standardized embeddings (seed 0) are the classes; target inputs = the 512 standardized
embeddings, proxy inputs = their PCA-32. Each set is split once (seed 0) into 70% train (the "labeled
set"), 10% validation, 20% test.

(1) SVP (Coleman et al., ICLR 2020). Target = on MNIST the small CNN on the 28x28 pixels (the Trainer's
image model), on CIFAR10_0 an MLP (hidden 256) on the 512-d embeddings, trained TARGET_EPOCHS epochs
(Adam 1e-3); proxy = a linear model on the target's own inputs (the pixels / the 512 embeddings) trained
PROXY_EPOCHS epochs. Each ranks the train set by predictive entropy and keeps 50%; selection time =
training the selector + scoring. Then the target is trained (early stopping on the validation set, same
seed) on the proxy's 50%, the target's 50%, a random 50% and all the train set; test accuracy of each.
Spearman = rank correlation of the proxy's and the target's entropy scores. SEEDS training seeds (the
split stays seed 0); accuracies are means over seeds, the speed-up is total target time / total proxy
time. Proxies compared on both sets before choosing this one (RESULTS.md, "Train, second pass"): a small MLP
or a linear model on PCA-32 of the inputs lost 1.5-3.7 points to target selection on CIFAR10_0; selection
by forgetting events or k-center and class-balanced selection did not do better across both sets.

(2) AutoSampling (Sun et al., ICML 2021) vs uniform / class-balanced / loss-based importance sampling, all
at the same number of gradient steps (CYCLES x STEPS), MLP (hidden 128) on the PCA-32 embeddings (the
Trainer's default model), 3 seeds (``--seeds`` for more); AutoSampling with its defaults (loss-exponent
space, one warm-up cycle, final model = the mean of the last cycle's workers), with the second pass's
setting ("autosampling_prev": no warm-up, the last winner as the final model) and in the paper's per-item
space ("autosampling_items"). Baselines keep their best-validation epoch (epoch = STEPS steps),
AutoSampling picks winners on the same validation set. Cost ratio = AutoSampling's CPU seconds / one
uniform run's (``_wall``: wall time; the box is shared). Spread = max - min over the seeds.

(3) ``--calibration``: ECE of the Inspect panel's shown confidence per calibrator (see ``inspect_calibration``).

Run: nice -n 10 .venv/bin/python benchmarks/train.py   (ends with one JSON line; MNIST figures are the
headline keys, CIFAR10_0's carry a cifar_ prefix), or the parts as separate processes
(``--part svp --data cifar`` etc.) merged with ``--merge LOG...``
"""
from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from dcai_widgets.metastore.models import MLP, SmallCNN
from dcai_widgets.train import AutoSampling, ClassSampler, LossSampler, SelectionViaProxy, UniformSampler, spearman
from dcai_widgets.train.loop import fit_loop, predict_logits

DATA = Path(os.environ.get("DCAI_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TARGET_EPOCHS, PROXY_EPOCHS, FINAL_EPOCHS = 10, 2, 15
CYCLES, STEPS, WORKERS = 10, 100, 3
SEEDS = (0, 1, 2)
AS_VARIANTS = (("autosampling", {}), ("autosampling_prev", {"final": "last", "warmup": 0}),
               ("autosampling_items", {"space": "items"}))


def mnist():
    d = DATA / "mnist-test"
    X = np.frombuffer(gzip.open(d / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 784)
    y = np.frombuffer(gzip.open(d / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8).astype(np.int64)
    Xt = X.astype(np.float32) / 255.0
    E = PCA(32, random_state=0).fit_transform(Xt).astype(np.float32)
    return Xt.reshape(-1, 1, 28, 28), E, y


def cifar():
    z = np.load(DATA / "adbench" / "CIFAR10_0.npz")
    X = z["X"].astype(np.float32)
    Xt = (X - X.mean(0)) / (X.std(0) + 1e-6)
    y = KMeans(10, n_init=3, random_state=0).fit_predict(Xt).astype(np.int64)
    E = PCA(32, random_state=0).fit_transform(Xt).astype(np.float32)
    return Xt, E, y


def standardize(E):
    return ((E - E.mean(0)) / (E.std(0) + 1e-6)).astype(np.float32)


def split(n, seed=0):
    p = np.random.default_rng(seed).permutation(n)
    a, b = int(0.7 * n), int(0.8 * n)
    return p[:a], p[a:b], p[b:]


def accuracy(model, X, y):
    return float((predict_logits(model, X).argmax(1) == y).float().mean())


def target_model(Xt):
    return SmallCNN((28, 28), 10) if Xt.ndim == 4 else MLP(Xt.shape[1], 10, hidden=256)


def train_target(Xt, y, tr, va, te, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = target_model(Xt)
    fit_loop(m, Xt[tr], y[tr], torch.ones(len(tr)), (Xt[va], y[va]), epochs=FINAL_EPOCHS, patience=3, seed=seed)
    return accuracy(m, Xt[te], y[te])


def timed(fn):
    """(result, wall seconds, CPU seconds of this process): CPU time is what a run costs on a shared box
    (other helpers' jobs stretch wall time, not this process's CPU time; torch runs on one thread)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def proxy_model(Xt):
    """The proxy: a linear model on the target's own inputs (pixels / the 512-d embeddings), PROXY_EPOCHS epochs."""
    d = int(np.prod(Xt.shape[1:]))
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 10)) if Xt.ndim > 2 else nn.Linear(d, 10)


def svp(name, Xt, E, y):
    Xt, y = torch.from_numpy(Xt), torch.as_tensor(y)
    tr, va, te = split(len(y))
    per = []
    for seed in SEEDS:
        target, tw, tc = timed(lambda: SelectionViaProxy(lambda: target_model(Xt), epochs=TARGET_EPOCHS,
                                                         seed=seed).fit(Xt[tr], y[tr]))
        proxy, pw, pc = timed(lambda: SelectionViaProxy(lambda: proxy_model(Xt), epochs=PROXY_EPOCHS,
                                                        seed=seed).fit(Xt[tr], y[tr]))
        r = {"target_select_cpu_s": tc, "proxy_select_cpu_s": pc, "target_select_s": tw, "proxy_select_s": pw,
             "spearman": spearman(proxy.scores_, target.scores_),
             "overlap": len(np.intersect1d(proxy.selected_, target.selected_)) / len(target.selected_)}
        r["acc_all"] = train_target(Xt, y, tr, va, te, seed=seed)
        r["acc_target_sel"] = train_target(Xt, y, tr[target.selected_], va, te, seed=seed)
        r["acc_proxy_sel"] = train_target(Xt, y, tr[proxy.selected_], va, te, seed=seed)
        rnd = np.random.default_rng(seed).choice(len(tr), len(target.selected_), replace=False)
        r["acc_random_sel"] = train_target(Xt, y, tr[rnd], va, te, seed=seed)
        r["acc_gap"] = r["acc_target_sel"] - r["acc_proxy_sel"]
        print(f"[{name}] SVP seed {seed}: " + ", ".join(f"{k}={v:.4f}" for k, v in r.items()), flush=True)
        per.append(r)
    out = {k: float(np.mean([r[k] for r in per])) for k in per[0]}
    out["speedup"] = sum(r["target_select_cpu_s"] for r in per) / sum(r["proxy_select_cpu_s"] for r in per)
    out["speedup_wall"] = sum(r["target_select_s"] for r in per) / sum(r["proxy_select_s"] for r in per)
    out["gap_spread"] = float(np.ptp([r["acc_gap"] for r in per]))
    print(f"[{name}] SVP mean of {len(per)} seeds: " + ", ".join(f"{k}={v:.4f}" for k, v in out.items()), flush=True)
    return out


def sampling(name, E, y):
    E, y = torch.from_numpy(standardize(E)), torch.as_tensor(y)
    tr, va, te = split(len(y))
    make = lambda: MLP(E.shape[1], 10, hidden=128)  # noqa: E731
    res = {k: [] for k in ("uniform", "balanced", "loss", *(v for v, _ in AS_VARIANTS))}
    wall, cpu = ({k: [] for k in res} for _ in range(2))
    for seed in SEEDS:
        for key, sampler in (("uniform", UniformSampler()), ("balanced", ClassSampler()), ("loss", LossSampler())):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                m = make()
            _, w, c = timed(lambda: fit_loop(m, E[tr], y[tr], torch.ones(len(tr)), (E[va], y[va]), epochs=CYCLES,
                                             steps_per_epoch=STEPS, sampler=sampler, patience=CYCLES, seed=seed))
            wall[key].append(w)
            cpu[key].append(c)
            res[key].append(accuracy(m, E[te], y[te]))
        for key, kw in AS_VARIANTS:
            a, w, c = timed(lambda: AutoSampling(make, workers=WORKERS, cycles=CYCLES, steps_per_cycle=STEPS,
                                                 seed=seed, **kw).fit(E[tr], y[tr], (E[va], y[va])))
            wall[key].append(w)
            cpu[key].append(c)
            res[key].append(accuracy(a.model_, E[te], y[te]))
            if a.space == "loss":
                h = a.history_.dropna(subset=["val_acc_0"])
                won = [round(float(r[f"alpha_{int(r['winner'])}"]), 2) for _, r in h.iterrows()]
                print(f"[{name}] seed {seed} {key}: test {res[key][-1]:.4f}, winning exponents per cycle "
                      f"{won}, last estimate {a.alpha_:.2f}, {c / cpu['uniform'][-1]:.2f}x uniform's CPU",
                      flush=True)
    out = {}
    for k in res:
        out[f"{k}_acc"] = float(np.mean(res[k]))
        out[f"{k}_spread"] = float(np.max(res[k]) - np.min(res[k]))
    out["cost_ratio"] = float(np.sum(cpu["autosampling"]) / np.sum(cpu["uniform"]))
    out["cost_ratio_wall"] = float(np.sum(wall["autosampling"]) / np.sum(wall["uniform"]))
    out["cost_ratio_items"] = float(np.sum(cpu["autosampling_items"]) / np.sum(cpu["uniform"]))
    out["cost_ratio_prev"] = float(np.sum(cpu["autosampling_prev"]) / np.sum(cpu["uniform"]))
    out["margin_vs_uniform"] = out["autosampling_acc"] - out["uniform_acc"]
    print(f"[{name}] sampling " + ", ".join(f"{k}={v:.4f}" for k, v in out.items())
          + "".join(f" per-seed {k}={[round(v, 4) for v in res[k]]}" for k in res), flush=True)
    return out


def inspect_calibration() -> None:
    """ECE of the Inspect panel's shown confidence on its validation items (issue 14), raw vs each
    calibrator, for its own model and a stored Trainer, on blobs with clean and 25%-noisy labels (500
    labels, 100 held out); prints one line per setting. Run with --calibration (not part of the JSON line)."""
    import tempfile

    import dcai_widgets as dw
    from dcai_widgets.calibration import ece
    from dcai_widgets.metastore.inspect_model import build_inspect_model, calibrate, inspect_model_from
    from dcai_widgets.train import Trainer

    for noise in (0.0, 0.25):
        for seed in (1, 2):
            rng = np.random.default_rng(seed)
            yy = np.arange(600) % 3
            X = (rng.normal(0, 2.0, (3, 6))[yy] + rng.normal(0, 1.3, (600, 6))).astype(np.float32)
            given = yy[:500].copy()
            flip = rng.random(500) < noise
            given[flip] = (given[flip] + rng.integers(1, 3, flip.sum())) % 3
            s = dw.Session.from_embeddings(X, ["c0", "c1", "c2"], store=Path(tempfile.mkdtemp()) / "l.db")
            s.label(np.arange(500), np.asarray(s.classes)[given], annotator="bench")
            for src in ("own", "trainer"):
                if src == "own":
                    im = build_inspect_model(s, epochs=60)
                else:
                    Trainer(s, epochs=60, progress=False, patience=None, lr=1e-2, hidden=256).fit()
                    im = inspect_model_from(s, "trainer")
                pred, raw = im.predict(im.val_ids)
                ok = pred == im.y[im.val_ids]
                row = [f"noise={noise} seed={seed} {src}: accuracy {ok.mean():.3f}, raw mean {raw.mean():.3f} "
                       f"ECE {ece(raw, ok):.3f}"]
                for m in ("temperature", "platt", "isotonic", "coverage"):
                    c = calibrate(im, method=m)
                    row.append(f"{m} mean {c.mean():.3f} ECE {ece(c, ok):.3f}")
                print("; ".join(row), flush=True)
                im.close()


def figures(name: str, s: dict | None, a: dict | None) -> dict:
    p = "" if name == "mnist" else "cifar_"
    figs = {}
    if s is not None:
        figs.update({f"{p}svp_selection_speedup": round(s["speedup"], 2), f"{p}svp_acc_gap": round(s["acc_gap"], 4),
                     f"{p}svp_spearman": round(s["spearman"], 3), f"{p}svp_acc_all": round(s["acc_all"], 4),
                     f"{p}svp_acc_target_sel": round(s["acc_target_sel"], 4),
                     f"{p}svp_acc_proxy_sel": round(s["acc_proxy_sel"], 4),
                     f"{p}svp_acc_random_sel": round(s["acc_random_sel"], 4),
                     f"{p}svp_selection_speedup_wall": round(s["speedup_wall"], 2),
                     f"{p}svp_gap_spread": round(s["gap_spread"], 4)})
    if a is not None:
        figs.update({f"{p}autosampling_acc": round(a["autosampling_acc"], 4), f"{p}uniform_acc": round(a["uniform_acc"], 4),
                     f"{p}balanced_acc": round(a["balanced_acc"], 4), f"{p}loss_acc": round(a["loss_acc"], 4),
                     f"{p}autosampling_spread": round(a["autosampling_spread"], 4),
                     f"{p}uniform_spread": round(a["uniform_spread"], 4),
                     f"{p}autosampling_cost_ratio": round(a["cost_ratio"], 2),
                     f"{p}autosampling_items_acc": round(a["autosampling_items_acc"], 4),
                     f"{p}autosampling_cost_ratio_wall": round(a["cost_ratio_wall"], 2),
                     f"{p}autosampling_items_cost_ratio": round(a["cost_ratio_items"], 2),
                     f"{p}autosampling_prev_acc": round(a["autosampling_prev_acc"], 4),
                     f"{p}autosampling_prev_spread": round(a["autosampling_prev_spread"], 4),
                     f"{p}autosampling_prev_cost_ratio": round(a["cost_ratio_prev"], 2),
                     f"{p}loss_spread": round(a["loss_spread"], 4),
                     f"{p}autosampling_seeds": len(SEEDS)})
    return figs


def main() -> int:
    """Run everything (default), or one part on one set (``--part svp|sampling --data mnist|cifar``, the
    parts' JSON lines merged with ``--merge FILE...``: the four parts can run as separate processes)."""
    global SEEDS
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", action="store_true")
    ap.add_argument("--part", choices=("svp", "sampling"))
    ap.add_argument("--data", choices=("mnist", "cifar"))
    ap.add_argument("--merge", nargs="+")
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="training seeds 0..N-1 (default 3)")
    args = ap.parse_args()
    SEEDS = tuple(range(args.seeds))
    torch.set_num_threads(1)
    if args.calibration:
        inspect_calibration()
        return 0
    if args.merge:
        figs = {}
        for f in args.merge:
            figs.update(json.loads(Path(f).read_text().strip().splitlines()[-1]))
        keys = ("svp_selection_speedup", "svp_acc_gap", "autosampling_acc", "uniform_acc", "autosampling_cost_ratio")
        print(json.dumps({**{k: figs[k] for k in keys if k in figs}, **figs}))
        return 0
    if not (DATA / "mnist-test").exists() or not (DATA / "adbench" / "CIFAR10_0.npz").exists():
        print(f"shared data absent under {DATA}; nothing to benchmark", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    figs = {}
    for name, load in (("mnist", mnist), ("cifar", cifar)):
        if args.data and name != args.data:
            continue
        Xt, E, y = load()
        _, w, c = timed(lambda: fit_loop(MLP(E.shape[1], 10), torch.from_numpy(standardize(E))[:640],
                                         torch.as_tensor(y)[:640], torch.ones(640), epochs=1))   # warm-up, not timed
        s = svp(name, Xt, E, y) if args.part in (None, "svp") else None
        a = sampling(name, E, y) if args.part in (None, "sampling") else None
        figs.update(figures(name, s, a))
    figs["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(figs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
