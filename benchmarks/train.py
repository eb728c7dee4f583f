"""Selection via Proxy and AutoSampling on MNIST-10k and CIFAR10_0 embeddings (dcai_widgets.train).

Data. MNIST-10k (/work/shared/data/mnist-test): target inputs = the 784 raw pixels in [0, 1]; the
session-style embeddings = PCA-32 of the pixels. CIFAR10_0 (/work/shared/data/adbench/CIFAR10_0.npz, 5,263
ResNet-18 embeddings): its y is binary (5% rare), so the task here is an honest stand-in: the 10 k-means
clusters of the standardized embeddings (seed 0) are the classes; target inputs = the 512 standardized
embeddings, proxy inputs = their PCA-32. Each set is split once (seed 0) into 70% train (the "labeled
set"), 10% validation, 20% test.

(1) SVP (Coleman et al., ICLR 2020). Target = on MNIST the small CNN on the 28x28 pixels (the Trainer's
image model), on CIFAR10_0 an MLP (hidden 256) on the 512-d embeddings, trained TARGET_EPOCHS epochs
(Adam 1e-3); proxy = a small MLP (hidden 64) on the PCA-32 embeddings trained PROXY_EPOCHS epochs (a
linear proxy trained 2 epochs was tried first: 31.6x faster on MNIST but its 50% scored 1.85 points
below the target's, no better than a random 50%). Each ranks the train set by predictive entropy and keeps 50%. Selection time = training the selector + scoring (the embedding PCA is
the session's embedding, computed before and not counted). Then the target is trained (early stopping on
the validation set, same seed) on the proxy's 50%, the target's 50% and all the train set; test accuracy
of each. Spearman = rank correlation of the proxy's and the target's entropy scores.

(2) AutoSampling (Sun et al., ICML 2021) vs uniform / class-balanced / loss-based importance sampling, all
at the same number of gradient steps (CYCLES x STEPS), MLP (hidden 128) on the PCA-32 embeddings (the
Trainer's default model), 3 seeds. Baselines keep their best-validation epoch (epoch = STEPS steps), AutoSampling
picks winners on the same validation set. Cost ratio = AutoSampling's wall time / one uniform run's.

Run: nice -n 10 .venv/bin/python benchmarks/train.py   (ends with one JSON line; MNIST figures are the
headline keys, CIFAR10_0's carry a cifar_ prefix)
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
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from dcai_widgets.metastore.models import MLP, SmallCNN
from dcai_widgets.train import AutoSampling, ClassSampler, LossSampler, SelectionViaProxy, UniformSampler, spearman
from dcai_widgets.train.loop import fit_loop, predict_logits

DATA = Path(os.environ.get("DCAI_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TARGET_EPOCHS, PROXY_EPOCHS, FINAL_EPOCHS = 10, 3, 15
CYCLES, STEPS, WORKERS = 10, 100, 3
SEEDS = (0, 1, 2)


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


def svp(name, Xt, E, y):
    Xt, E, y = torch.from_numpy(Xt), torch.from_numpy(standardize(E)), torch.as_tensor(y)
    tr, va, te = split(len(y))
    target = SelectionViaProxy(lambda: target_model(Xt), epochs=TARGET_EPOCHS).fit(Xt[tr], y[tr])
    proxy = SelectionViaProxy(lambda: MLP(E.shape[1], 10, hidden=64), epochs=PROXY_EPOCHS).fit(E[tr], y[tr])
    out = {"target_select_s": target.seconds_, "proxy_select_s": proxy.seconds_,
           "speedup": target.seconds_ / proxy.seconds_,
           "spearman": spearman(proxy.scores_, target.scores_),
           "overlap": len(np.intersect1d(proxy.selected_, target.selected_)) / len(target.selected_)}
    out["acc_all"] = train_target(Xt, y, tr, va, te)
    out["acc_target_sel"] = train_target(Xt, y, tr[target.selected_], va, te)
    out["acc_proxy_sel"] = train_target(Xt, y, tr[proxy.selected_], va, te)
    rng = np.random.default_rng(0)
    out["acc_random_sel"] = train_target(Xt, y, tr[rng.choice(len(tr), len(target.selected_), replace=False)], va, te)
    out["acc_gap"] = out["acc_target_sel"] - out["acc_proxy_sel"]
    print(f"[{name}] SVP " + ", ".join(f"{k}={v:.4f}" for k, v in out.items()), flush=True)
    return out


def sampling(name, E, y):
    E, y = torch.from_numpy(standardize(E)), torch.as_tensor(y)
    tr, va, te = split(len(y))
    make = lambda: MLP(E.shape[1], 10, hidden=128)  # noqa: E731
    res = {k: [] for k in ("uniform", "balanced", "loss", "autosampling")}
    secs = {k: [] for k in res}
    for seed in SEEDS:
        for key, sampler in (("uniform", UniformSampler()), ("balanced", ClassSampler()), ("loss", LossSampler())):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                m = make()
            t0 = time.perf_counter()
            fit_loop(m, E[tr], y[tr], torch.ones(len(tr)), (E[va], y[va]), epochs=CYCLES, steps_per_epoch=STEPS,
                     sampler=sampler, patience=CYCLES, seed=seed)
            secs[key].append(time.perf_counter() - t0)
            res[key].append(accuracy(m, E[te], y[te]))
        a = AutoSampling(make, workers=WORKERS, cycles=CYCLES, steps_per_cycle=STEPS, seed=seed).fit(
            E[tr], y[tr], (E[va], y[va]))
        secs["autosampling"].append(a.seconds_)
        res["autosampling"].append(accuracy(a.model_, E[te], y[te]))
    out = {}
    for k in res:
        out[f"{k}_acc"] = float(np.mean(res[k]))
        out[f"{k}_spread"] = float(np.max(res[k]) - np.min(res[k]))
    out["cost_ratio"] = float(np.mean(secs["autosampling"]) / np.mean(secs["uniform"]))
    out["margin_vs_uniform"] = out["autosampling_acc"] - out["uniform_acc"]
    print(f"[{name}] sampling " + ", ".join(f"{k}={v:.4f}" for k, v in out.items())
          + f" per-seed autosampling={res['autosampling']} uniform={res['uniform']}", flush=True)
    return out


def main() -> int:
    if not (DATA / "mnist-test").exists() or not (DATA / "adbench" / "CIFAR10_0.npz").exists():
        print(f"shared data absent under {DATA}; nothing to benchmark", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    figs = {}
    for name, load in (("mnist", mnist), ("cifar", cifar)):
        Xt, E, y = load()
        s, a = svp(name, Xt, E, y), sampling(name, E, y)
        p = "" if name == "mnist" else "cifar_"
        figs.update({f"{p}svp_selection_speedup": round(s["speedup"], 2), f"{p}svp_acc_gap": round(s["acc_gap"], 4),
                     f"{p}svp_spearman": round(s["spearman"], 3), f"{p}svp_acc_all": round(s["acc_all"], 4),
                     f"{p}svp_acc_target_sel": round(s["acc_target_sel"], 4),
                     f"{p}svp_acc_proxy_sel": round(s["acc_proxy_sel"], 4),
                     f"{p}svp_acc_random_sel": round(s["acc_random_sel"], 4),
                     f"{p}autosampling_acc": round(a["autosampling_acc"], 4), f"{p}uniform_acc": round(a["uniform_acc"], 4),
                     f"{p}balanced_acc": round(a["balanced_acc"], 4), f"{p}loss_acc": round(a["loss_acc"], 4),
                     f"{p}autosampling_spread": round(a["autosampling_spread"], 4),
                     f"{p}uniform_spread": round(a["uniform_spread"], 4),
                     f"{p}autosampling_cost_ratio": round(a["cost_ratio"], 2)})
    figs["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(figs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
