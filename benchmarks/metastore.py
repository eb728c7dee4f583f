"""MetaStore claims (issue 5; Zhang, WPI 2023, Part III): storage, P2P/P2B speed, exactness, collection
overhead, and mislabel detection against cleanlab, all in one process.

1. Storage of N (10,000) samples' gradients, factors vs full, measured on disk against the analytic ratio:
   a 1024x1024 linear layer, the last 3x3 conv of a VGG-style net on 32x32 inputs (and its first conv,
   where the cost model stores the full gradient), and an attention block (hidden 256, 16 tokens).
2. P2P of one test item against all N training items of the 1024x1024 layer over 3 checkpoints (TracIn-CP):
   MetaStore vs pre-computed full gradients vs recompute (torch.func) vs Captum TracInCPFast (same layer,
   same checkpoints). Full gradients are 4 MiB each (N x 3 checkpoints = 126 GB), so pre-compute and
   recompute are measured on a subset held in memory and scaled linearly to N (an optimistic bound for
   pre-compute: at full size it would stream from disk).
3. P2B against a 100-item test batch vs iterating P2P vs reconstructing each training gradient.
4. Collection overhead: a training epoch with ``ms.record`` vs the same plain epoch.
5. Mislabel detection on MNIST-test (10,000 images; 8,000 train with 5% flipped, 2,000 trusted val):
   precision of ``suspects(k = number flipped)`` vs cleanlab ``find_label_issues`` on the same model's
   out-of-sample (4-fold cross-validated) probabilities.

    python benchmarks/metastore.py              # full run (~4 min on the shared 2-core box)
    python benchmarks/metastore.py --quick      # small smoke run
    python benchmarks/metastore.py --overhead-only   # just the three collection-overhead figures (~1 min)
Ends with one JSON line of the figures.
"""
from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dcai_widgets.metastore import MetaStore, analytics
from dcai_widgets.metastore.models import SmallCNN, train

CE = nn.CrossEntropyLoss()
FIG: dict = {}
SKIP: set[str] = set()


def log(msg: str) -> None:
    print(msg, flush=True)


def timed(fn, repeats: int = 1):
    """(min seconds over repeats, last result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def rel_err(a, b) -> float:
    """max |a - b| / max |b| (relative to the score scale, robust to scores near zero); b in float64."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.abs(a - b).max() / np.abs(b).max())


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


# ---------------------------------------------------------------------------------------------
# 1. storage
class VGGish(nn.Module):
    """VGG-style: 3x3 convs with pools down to 2x2 at 32x32 input; the last conv is 512->512 3x3."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 64, 3, padding=1)
        self.mid = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
                                 nn.MaxPool2d(2), nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(),
                                 nn.MaxPool2d(2), nn.Conv2d(256, 512, 3, padding=1), nn.ReLU(),
                                 nn.MaxPool2d(2))
        self.last = nn.Conv2d(512, 512, 3, padding=1)
        self.head = nn.Linear(512, 10)

    def forward(self, x):
        h = F.relu(self.last(self.mid(self.first(x))))
        return self.head(F.max_pool2d(h, 2).flatten(1))


class AttnBlock(nn.Module):
    def __init__(self, d=256, heads=4):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        h, _ = self.attn(x, x, x)
        return self.head((x + h).mean(1))


def storage_case(name, model, layers, X, Y, tmp, bs):
    path = tmp / f"st-{name}"
    ms = MetaStore(model, layers, path=path, batch_size=bs)
    t, _ = timed(lambda: ms.collect((X, Y), CE, "c0", progress=False))
    rep = ms.storage_report()
    full = float(rep["full_bytes"].sum())
    disk = float(rep["bytes"].sum())
    # analytic: parameters per sample vs what the cost model stores per sample (all sub-layers together)
    stored = sum(min(s.full_size, int(r.positions) * (s.a + s.b)) for s, r in zip(ms.sublayers, rep.itertuples()))
    analytic = sum(s.full_size for s in ms.sublayers) / stored
    log(f"  {name:<18} modes={list(rep['mode'])} positions={list(rep['positions'])} "
        f"full={full / 2**30:8.2f} GiB  stored={disk / 2**20:8.1f} MiB  ratio={full / disk:7.1f}x "
        f"(analytic {analytic:.1f}x)  collect {t:.1f}s")
    shutil.rmtree(path, ignore_errors=True)
    return full / disk, analytic, rep


def part_storage(n, tmp):
    log(f"\n[1] storage of {n} samples' gradients, factors vs full (float32)")
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024))
    r, a, _ = storage_case("linear-1024x1024", lin, ["2"], torch.randn(n, 256), torch.randint(0, 1024, (n,)),
                           tmp, 500)
    FIG.update(storage_ratio_linear=round(r, 1), storage_ratio_linear_analytic=round(a, 1))
    vgg = VGGish()
    X = torch.randn(n, 3, 32, 32)
    Y = torch.randint(0, 10, (n,))
    r, a, rep = storage_case("vgg-last-conv", vgg, ["last"], X, Y, tmp, 250)
    FIG.update(storage_ratio_conv=round(r, 1), storage_ratio_conv_analytic=round(a, 1))
    m = min(n, 2000)
    r1, a1, rep1 = storage_case("vgg-first-conv", vgg, ["first"], X[:m], Y[:m], tmp, 250)
    FIG.update(first_conv_mode=str(rep1["mode"].iloc[0]), storage_ratio_first_conv=round(r1, 2))
    del X
    att = AttnBlock()
    r, a, _ = storage_case("attention-256x16", att, ["attn"], torch.randn(n, 16, 256), torch.randint(0, 10, (n,)),
                           tmp, 250)
    FIG.update(storage_ratio_attention=round(r, 2), storage_ratio_attention_analytic=round(a, 2))


# ---------------------------------------------------------------------------------------------
# 2-4. P2P / P2B / collection on the 1024x1024 layer
def make_linear_task(n):
    torch.manual_seed(1)
    teacher = nn.Linear(256, 1024)
    X = torch.randn(n, 256)
    with torch.no_grad():
        Y = teacher(X).argmax(1)
    model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024, bias=False))
    return model, X, Y


def per_sample_full(model, X, Y, chunk=50):
    """Full per-sample gradients of the last layer's weight, (n, 1024*1024), via torch.func vmap + grad."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(w, x, y):
        p = dict(params)
        p["2.weight"] = w
        return F.cross_entropy(functional_call(model, p, (x[None],)), y[None])

    g = vmap(grad(loss), in_dims=(None, 0, 0))
    return torch.cat([g(params["2.weight"], X[s:s + chunk], Y[s:s + chunk]).reshape(-1, 1024 * 1024)
                      for s in range(0, len(X), chunk)])


def part_p2p(n, n_sub, tmp, quick):
    log(f"\n[2] P2P: one test item vs {n} training items, 1024x1024 layer, 3 checkpoints (TracIn-CP)")
    model, X, Y = make_linear_task(n)
    Xt, Yt = torch.randn(100, 256), torch.randint(0, 1024, (100,))
    ms = MetaStore(model, ["2"], path=tmp / "p2p", batch_size=500)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ck_files, lrs = [], [0.5, 0.5, 0.5]
    t_collect = 0.0
    for c in range(3):
        for s in range(0, n, 256):
            opt.zero_grad()
            F.cross_entropy(model(X[s:s + 256]), Y[s:s + 256]).backward()
            opt.step()
        t, _ = timed(lambda: ms.collect((X, Y), CE, f"c{c}", lr=lrs[c], progress=False))
        t_collect += t
        f = tmp / f"captum-c{c}.pt"
        torch.save(model.state_dict(), f)
        ck_files.append(str(f))
    log(f"  collected 3 checkpoints x {n} items in {t_collect:.1f}s")
    x1, y1 = Xt[:1], Yt[:1]
    ms.close()
    del ms
    files = sorted(str(f) for f in (tmp / "p2p").rglob("shard-*.bin"))

    def fresh_query(check_reads=True, drop=False):
        """One P2P on a new MetaStore (empty shard cache; shards mapped and, by default, checksummed);
        ``drop``: first evict the shard files from the OS page cache (posix_fadvise DONTNEED, checked with
        fincore), so the query reads them from disk."""
        gc.collect()            # earlier stores' memory maps pin pages; DONTNEED skips mapped pages
        res = None
        if drop:
            evict(files)
            res = resident_bytes(files)
        f = MetaStore(model, ["2"], path=tmp / "p2p", batch_size=500, check_reads=check_reads)
        t, sc = timed(lambda: f.p2p(None, x1, y1)[:, 0])
        f.close()
        del f
        return t, sc, res

    # "cold": a fresh MetaStore, OS page cache as the collection left it (warm); "disk-cold": evicted.
    # Each: median of 3, the two check modes interleaved (the box is shared; load drifts).
    runs: dict = {"cold": [], "cold_nocheck": [], "disk": [], "disk_nocheck": []}
    resident = []
    for _ in range(3):
        t, ms_scores, _r = fresh_query()
        runs["cold"].append(t)
        runs["cold_nocheck"].append(fresh_query(check_reads=False)[0])
        t, _s, r = fresh_query(drop=True)
        runs["disk"].append(t)
        resident.append(r)
        t, _s, r = fresh_query(check_reads=False, drop=True)
        runs["disk_nocheck"].append(t)
        resident.append(r)
    med = {k: float(np.median(v)) for k, v in runs.items()}
    t_cold, t_disk = med["cold"], med["disk"]
    total = sum(os.path.getsize(f) for f in files)
    log(f"  cold P2P (fresh store, page cache warm): {[round(c * 1e3) for c in runs['cold']]} ms checksummed, "
        f"{[round(c * 1e3) for c in runs['cold_nocheck']]} ms check_reads=False")
    log(f"  disk-cold (shards evicted; resident after eviction {resident} of {total} bytes): "
        f"{[round(c * 1e3) for c in runs['disk']]} ms checksummed, "
        f"{[round(c * 1e3) for c in runs['disk_nocheck']]} ms check_reads=False")
    ms_cold = MetaStore(model, ["2"], path=tmp / "p2p", batch_size=500)
    ms_cold.p2p(None, x1, y1)
    t_warm, _ = timed(lambda: ms_cold.p2p(None, x1, y1), repeats=5)
    ids = ms_cold.stored_ids()
    assert np.array_equal(ids, np.arange(n))

    # pre-compute: full per-sample gradients of a subset, held in memory; query = one dot per item
    states = [torch.load(f, weights_only=True) for f in ck_files]
    final = {k: v.clone() for k, v in model.state_dict().items()}
    sub = np.arange(n_sub)
    t_build, t_query, t_recompute = 0.0, 0.0, 0.0
    pre = np.zeros(n_sub)
    for state, lr in zip(states, lrs):
        model.load_state_dict(state)
        t, Fsub = timed(lambda: per_sample_full(model, X[:n_sub], Y[:n_sub]))

        t_build += t
        t_recompute += t
        gt = per_sample_full(model, x1, y1)[0]
        t, _ = timed(lambda F=Fsub, g=gt: F @ g, repeats=3)       # the float32 query that is timed
        t_query += t
        gt64 = gt.double()                                 # float64 reference scores for the error figure
        pre += lr * torch.cat([Fsub[s:s + 50].double() @ gt64 for s in range(0, n_sub, 50)]).numpy()
        del Fsub
    model.load_state_dict(final)
    scale = n / n_sub
    t_pre = t_query * scale
    t_rec = (t_recompute + t_query) * scale
    err = rel_err(ms_scores[sub], pre)
    FIG["max_rel_error"] = err
    log(f"  pre-compute: building {n_sub} x 3 full gradients took {t_build:.1f}s "
        f"(-> {t_build * scale:.0f}s and {3 * n * 4 * 2**20 / 2**30:.0f} GiB for {n}); "
        f"query {t_query * 1e3:.1f} ms on {n_sub} -> {t_pre:.2f}s scaled to {n}")
    log(f"  recompute per query (torch.func vmap, scaled): {t_rec:.1f}s")
    log(f"  MetaStore P2P: cold {t_cold * 1e3:.1f} ms (shards mapped + XXH3-checked), disk-cold {t_disk * 1e3:.1f} ms, "
        f"warm {t_warm * 1e3:.1f} ms "
        f"(includes replaying the test item at 3 checkpoints); max rel error vs pre-compute {err:.2e}")

    # Captum TracInCPFast on the same final layer and checkpoints
    from captum.influence import TracInCPFast

    def load(m, path):
        m.load_state_dict(torch.load(path, weights_only=True))
        return lrs[ck_files.index(path)]

    tracin = TracInCPFast(model, model[2], torch.utils.data.TensorDataset(X, Y), ck_files,
                          checkpoints_load_func=load, loss_fn=nn.CrossEntropyLoss(reduction="sum"),
                          batch_size=1000, vectorize=False)
    t_cap, cap = timed(lambda: tracin.influence((x1, y1), k=None), repeats=1 if quick else 2)
    model.load_state_dict(final)
    cap = cap.detach().numpy()[0]
    cap_err = rel_err(ms_scores, cap)
    log(f"  Captum TracInCPFast: {t_cap:.2f}s; MetaStore vs Captum max rel error {cap_err:.2e}")
    FIG.update(p2p_metastore_warm_s=round(t_warm, 4), p2p_metastore_cold_s=round(t_cold, 4),
               p2p_precompute_s_scaled=round(t_pre, 3), p2p_recompute_s_scaled=round(t_rec, 1),
               p2p_captum_s=round(t_cap, 3),
               p2p_speedup_vs_precompute=round(t_pre / t_warm, 1),
               p2p_speedup_vs_precompute_cold=round(t_pre / t_cold, 1),
               p2p_metastore_disk_cold_s=round(t_disk, 4),
               p2p_speedup_vs_precompute_disk_cold=round(t_pre / t_disk, 1),
               p2p_metastore_cold_nocheck_s=round(med["cold_nocheck"], 4),
               p2p_speedup_vs_precompute_cold_nocheck=round(t_pre / med["cold_nocheck"], 1),
               p2p_speedup_vs_precompute_disk_cold_nocheck=round(t_pre / med["disk_nocheck"], 1),
               shard_bytes_resident_after_eviction=max((r for r in resident if r is not None), default=None),
               p2p_speedup_vs_recompute=round(t_rec / t_warm, 1),
               p2p_speedup_vs_captum=round(t_cap / t_warm, 1),
               p2p_speedup_vs_captum_cold=round(t_cap / t_cold, 1),
               captum_max_rel_error=cap_err, precompute_subset=n_sub)
    log(f"  ratios (warm): vs pre-compute {t_pre / t_warm:.0f}x, vs recompute {t_rec / t_warm:.0f}x, "
        f"vs Captum {t_cap / t_warm:.0f}x  (cold: {t_pre / t_cold:.0f}x, -, {t_cap / t_cold:.0f}x)")

    if "p2b" in SKIP:
        shutil.rmtree(tmp / "p2p", ignore_errors=True)
        return
    # ---- 3. P2B
    log(f"\n[3] P2B: {len(Xt)}-item test batch vs {n} training items")
    t_p2b, p2b = timed(lambda: ms_cold.p2b(None, Xt, Yt), repeats=3)
    m_it = len(Xt)
    t_it, it = timed(lambda: np.mean([ms_cold.p2p(None, Xt[j:j + 1], Yt[j:j + 1])[:, 0] for j in range(m_it)], 0))
    # reconstruct: rebuild each stored training gradient from its factors, dot with the mean test gradient
    from dcai_widgets.metastore import operators as ops
    t_rec2 = 0.0
    rec = np.zeros(n_sub)
    for c in ms_cold.checkpoints:
        tf = ms_cold._test_factors(c, Xt, Yt)
        gbar = ops.mean_grad(*tf["2"]).reshape(-1)
        blk = next(ms_cold._shard(c, "2").blocks(sub))[1]

        def rebuild():
            Xs, Gs = torch.from_numpy(blk["x"]), torch.from_numpy(blk["g"])
            out = torch.empty(n_sub, dtype=torch.float64)
            for s in range(0, n_sub, 50):
                out[s:s + 50] = (ops.full_from_factors(Xs[s:s + 50], Gs[s:s + 50]).reshape(-1, 1024 * 1024)
                                 @ gbar).double()
            return out
        t, _ = timed(rebuild)
        t_rec2 += t
        X64, G64, gb64 = torch.from_numpy(blk["x"]).double(), torch.from_numpy(blk["g"]).double(), gbar.double()
        r = torch.cat([ops.full_from_factors(X64[s:s + 25], G64[s:s + 25]).reshape(-1, 1024 * 1024) @ gb64
                       for s in range(0, n_sub, 25)])
        rec += ms_cold.checkpoints_[c]["lr"] * r.numpy()
    t_rec2 *= scale
    e1, e2 = rel_err(it, p2b), rel_err(rec, p2b[sub])
    log(f"  MetaStore P2B {t_p2b * 1e3:.1f} ms; iterate P2P x{m_it} {t_it:.2f}s ({t_it / t_p2b:.0f}x); "
        f"reconstruct (scaled) {t_rec2:.2f}s ({t_rec2 / t_p2b:.0f}x); rel errors {e1:.1e}, {e2:.1e}")
    FIG.update(p2b_s=round(t_p2b, 4), p2b_iterate_p2p_s=round(t_it, 3), p2b_reconstruct_s_scaled=round(t_rec2, 2),
               p2b_speedup_vs_iterate=round(t_it / t_p2b, 1), p2b_speedup_vs_reconstruct=round(t_rec2 / t_p2b, 1),
               p2b_max_rel_error=max(e1, e2))
    FIG["max_rel_error"] = max(FIG["max_rel_error"], e1, e2)

    # ---- 4. collection overhead on this model
    log(f"\n[4] collection overhead, 1024x1024 layer, one epoch of {n} items (batch 128)")
    put_overhead("linear", overhead(model, X, Y, ["2"], tmp / "ov-lin", batch=128))
    shutil.rmtree(tmp / "p2p", ignore_errors=True)


def evict(files: list[str]) -> None:
    """Drop these files' pages from the OS page cache (posix_fadvise DONTNEED; no root, no global drop)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_bytes(files: list[str]) -> int | None:
    """Bytes of these files in the page cache (util-linux fincore), None when fincore is missing."""
    import subprocess
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "-o", "RES", *files],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum(int(v) for v in out.split())


def overhead(model, X, Y, layers, path, batch=128, repeats=5):
    """(epoch with ms.record) / (plain epoch), same data order and optimizer; runs interleaved (the box is
    shared, so load drifts) and the medians are compared (the minima are printed too)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def epoch(rec=None):
        model.load_state_dict(state)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for s in range(0, len(X), batch):
            xb, yb = X[s:s + batch], Y[s:s + batch]
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            if rec is not None:
                rec.step(np.arange(s, s + len(xb)), yb)
            opt.step()

    plain, recorded, cpu_plain, cpu_rec = [], [], [], []
    load0 = os.getloadavg()[0]
    for r in range(repeats):
        c0 = time.process_time()
        plain.append(timed(epoch)[0])
        cpu_plain.append(time.process_time() - c0)
        shutil.rmtree(path, ignore_errors=True)
        ms = MetaStore(model, layers, path=path)
        t0, c0 = time.perf_counter(), time.process_time()
        with ms.record(f"r{r}", lr=0.01) as rec:
            epoch(rec)
        recorded.append(time.perf_counter() - t0)   # includes writing every shard and the weights
        cpu_rec.append(time.process_time() - c0)    # all threads of this process (the writer's too)
        ms.close()
    shutil.rmtree(path, ignore_errors=True)
    model.load_state_dict(state)
    ratio = float(np.median(recorded) / np.median(plain))
    cpu_ratio = float(np.median(cpu_rec) / np.median(cpu_plain))
    log(f"  plain epoch {np.median(plain):.2f}s, with ms.record {np.median(recorded):.2f}s (medians) -> overhead "
        f"{ratio:.2f}x; ratio of minima {min(recorded) / min(plain):.2f}x; process CPU time ratio {cpu_ratio:.2f}x "
        f"(runs: plain {[round(t, 2) for t in plain]}, record {[round(t, 2) for t in recorded]}; "
        f"load avg {load0:.1f} -> {os.getloadavg()[0]:.1f})")
    return round(ratio, 3), round(min(recorded) / min(plain), 3), round(cpu_ratio, 3)


# ---------------------------------------------------------------------------------------------
# 5. mislabel detection on MNIST
def shared_data() -> Path | None:
    env = os.environ.get("DCAI_SHARED_DATA")
    p = Path(env) if env else ROOT / ".." / "shared" / "data"
    return p if (p / "mnist-test").exists() else None


def load_mnist(d: Path):
    with gzip.open(d / "mnist-test" / "t10k-images-idx3-ubyte.gz") as f:
        X = np.frombuffer(f.read(), np.uint8, offset=16)
    with gzip.open(d / "mnist-test" / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return X.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, y.astype(np.int64)


def part_mislabel(tmp, epochs, quick):
    d = shared_data()
    if d is None:
        log("\n[5] skipped: ../shared/data/mnist-test not found (set DCAI_SHARED_DATA)")
        return
    X, y = load_mnist(d)
    if quick:
        X, y = X[:3000], y[:3000]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(X))
    n_val = len(X) // 5
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    n_flip = int(round(0.05 * len(tr)))
    flip = rng.choice(len(tr), n_flip, replace=False)          # positions within the training set
    y_tr = y[tr].copy()
    y_tr[flip] = (y_tr[flip] + rng.integers(1, 10, n_flip)) % 10
    Xtr, Ytr = torch.from_numpy(X[tr]), torch.from_numpy(y_tr)
    Xv, Yv = torch.from_numpy(X[val]), torch.from_numpy(y[val])
    log(f"\n[5] mislabel detection: MNIST-test, {len(tr)} train ({n_flip} flipped = 5%), {len(val)} trusted val")

    def make():
        torch.manual_seed(0)
        return SmallCNN((28, 28), 10, c1=16, c2=32, hidden=64)

    lr = 0.1
    layers = ["conv1", "conv2", "fc1", "fc2"]     # every layer: exact TracIn-CP over all parameters
    model = make()
    ms = MetaStore(model, layers, path=tmp / "mnist", batch_size=256)
    t_collect = 0.0
    states = {}

    def keep(ep, m):
        states[ep] = {k: v.clone() for k, v in m.state_dict().items()}

    t0 = time.perf_counter()
    train(model, Xtr, Ytr, epochs=epochs, lr=lr, batch_size=32, on_epoch=keep)
    t_train = time.perf_counter() - t0
    final = {k: v.clone() for k, v in model.state_dict().items()}
    for ep, st in states.items():
        model.load_state_dict(st)
        t, _ = timed(lambda: ms.collect((Xtr, Ytr), CE, f"epoch-{ep}", lr=lr, progress=False))
        t_collect += t
    model.load_state_dict(final)
    with torch.no_grad():
        acc = float((model(Xv).argmax(1) == Yv).float().mean())
    log(f"  CNN trained {epochs} epochs in {t_train:.1f}s (val acc {acc:.3f}); factors of {len(states)} "
        f"checkpoints collected in {t_collect:.1f}s; stored {dir_bytes(tmp / 'mnist') / 2**20:.0f} MiB")
    is_flip = np.zeros(len(tr), bool)
    is_flip[flip] = True
    t_s, sus = timed(lambda: ms.suspects(Xv, Yv, k=n_flip, train_x=Xtr))   # the default signals (issue 15)
    prec = float(is_flip[sus["id"].to_numpy()].mean())
    caught = sus[is_flip[sus["id"].to_numpy()]]
    sugg = float((caught["suggested"].to_numpy() == y[tr][caught["id"].to_numpy()]).mean()) if len(caught) else 0.0
    log(f"  MetaStore suspects(k={n_flip}) (default {'+'.join(analytics.DEFAULT_SIGNALS)}): precision {prec:.3f} "
        f"in {t_s:.1f}s; suggested class "
        f"right for {sugg:.3f} of the caught flips")
    # alternatives on the same store, for context
    sc = ms.suspects(Xv, Yv, k=n_flip, by="class")
    prec_class = float(is_flip[sc["id"].to_numpy()].mean())
    sb = ms.suspects(Xv, Yv, k=n_flip, by="batch")
    prec_batch = float(is_flip[sb["id"].to_numpy()].mean())
    fc = ms.suspects(Xv, Yv, k=n_flip, layers=["fc1", "fc2"], by="class")
    prec_fc = float(is_flip[fc["id"].to_numpy()].mean())
    si = ms.self_influence()
    prec_self = float(is_flip[np.argsort(-si)[:n_flip]].mean())
    log(f"  (same store: by='class' {prec_class:.3f}; by='batch' (one batch-average P2B) {prec_batch:.3f}; "
        f"by='class' on fc1+fc2 only "
        f"{prec_fc:.3f}; top self-influence {prec_self:.3f})")

    # cleanlab on out-of-sample probabilities of the same architecture / training recipe
    from cleanlab.filter import find_label_issues
    from sklearn.model_selection import StratifiedKFold
    t0 = time.perf_counter()
    probs = np.zeros((len(tr), 10), np.float32)
    for fit_idx, held in StratifiedKFold(4, shuffle=True, random_state=0).split(np.zeros(len(tr)), y_tr):
        m = make()
        train(m, Xtr[fit_idx], Ytr[fit_idx], epochs=epochs, lr=lr, batch_size=32)
        with torch.no_grad():
            probs[held] = torch.softmax(m(Xtr[held]), 1).numpy()
    t_cv = time.perf_counter() - t0
    issues = find_label_issues(y_tr, probs, return_indices_ranked_by="self_confidence")
    cl_prec = float(is_flip[issues].mean()) if len(issues) else 0.0
    cl_at_k = float(is_flip[issues[:n_flip]].mean()) if len(issues) else 0.0
    cl_recall = float(is_flip[issues].sum() / n_flip)
    ms_recall = float(is_flip[sus["id"].to_numpy()].sum() / n_flip)
    log(f"  cleanlab find_label_issues (4-fold CV probs, {t_cv:.0f}s): flagged {len(issues)}, precision "
        f"{cl_prec:.3f}, recall {cl_recall:.3f}; its top-{n_flip} precision {cl_at_k:.3f}")
    log(f"  ratio MetaStore/cleanlab precision: {prec / max(cl_prec, 1e-9):.2f} (recall {ms_recall:.3f})")
    FIG.update(suspects_precision=round(prec, 4), suspects_recall=round(ms_recall, 4),
               suspects_suggested_accuracy=round(sugg, 4), suspects_precision_fc_only=round(prec_fc, 4),
               suspects_precision_batch=round(prec_batch, 4), suspects_precision_class=round(prec_class, 4),
               self_influence_precision=round(prec_self, 4), cleanlab_precision=round(cl_prec, 4),
               cleanlab_recall=round(cl_recall, 4), cleanlab_flagged=len(issues),
               cleanlab_precision_at_k=round(cl_at_k, 4), n_flipped=n_flip, mnist_val_acc=round(acc, 4),
               suspects_layers=layers, suspects_seconds=round(t_s, 2))

    cnn_overheads(model, Xtr, Ytr, layers, tmp)


def put_overhead(key: str, ov: tuple[float, float, float]) -> None:
    FIG[f"collection_overhead_{key}"], FIG[f"collection_overhead_{key}_minima"], FIG[f"collection_cpu_{key}"] = ov


def cnn_overheads(model, Xtr, Ytr, layers, tmp):
    log(f"\n[4b] collection overhead, MNIST CNN (layers {layers}), one epoch of {len(Xtr)} items (batch 32)")
    put_overhead("cnn", overhead(model, Xtr, Ytr, layers, tmp / "ov-cnn", batch=32))
    log(f"[4c] collection overhead, MNIST CNN (layers fc1, fc2 only), one epoch of {len(Xtr)} items (batch 32)")
    put_overhead("cnn_fc", overhead(model, Xtr, Ytr, ["fc1", "fc2"], tmp / "ov-cnn", batch=32))


def part_overhead_only(n, tmp, epochs):
    """Only the three collection-overhead configurations, on the same models and data as the full run (the
    linear model trained one checkpoint's worth of steps, the CNN on the same 8,000 MNIST items)."""
    model, X, Y = make_linear_task(n)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for s in range(0, n, 256):
        opt.zero_grad()
        F.cross_entropy(model(X[s:s + 256]), Y[s:s + 256]).backward()
        opt.step()
    log(f"\n[4] collection overhead, 1024x1024 layer, one epoch of {n} items (batch 128)")
    put_overhead("linear", overhead(model, X, Y, ["2"], tmp / "ov-lin", batch=128))
    d = shared_data()
    if d is None:
        log("\n[4b/4c] skipped: ../shared/data/mnist-test not found (set DCAI_SHARED_DATA)")
        return
    X, y = load_mnist(d)
    rng = np.random.default_rng(0)
    tr = np.sort(rng.permutation(len(X))[len(X) // 5:])
    Xtr, Ytr = torch.from_numpy(X[tr]), torch.from_numpy(y[tr])
    torch.manual_seed(0)
    model = SmallCNN((28, 28), 10, c1=16, c2=32, hidden=64)
    train(model, Xtr, Ytr, epochs=epochs, lr=0.1, batch_size=32)
    cnn_overheads(model, Xtr, Ytr, ["conv1", "conv2", "fc1", "fc2"], tmp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="training items for storage and P2P")
    ap.add_argument("--subset", type=int, default=250, help="items for the in-memory pre-compute/recompute")
    ap.add_argument("--epochs", type=int, default=4, help="MNIST CNN epochs (one checkpoint each)")
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared 2-core box, 2 threads oversubscribe and run 4-6x slower)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: storage,p2p,mnist; p2b skips "
                    "the P2B and linear-overhead parts that follow P2P")
    ap.add_argument("--overhead-only", action="store_true",
                    help="only the three collection-overhead configurations (same models/data; ~1 min)")
    args = ap.parse_args()
    if args.quick:
        args.n, args.subset, args.epochs = 1000, 100, 2
    skip = set(filter(None, args.skip.split(",")))
    SKIP.update(skip)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    log(f"MetaStore benchmark: {platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({args.threads} thread), n={args.n}, load avg {os.getloadavg()[0]:.1f}")
    tmp = Path(tempfile.mkdtemp(prefix="ms-bench-"))
    try:
        if args.overhead_only:
            part_overhead_only(args.n, tmp, 1)
        else:
            if "storage" not in skip:
                part_storage(args.n, tmp)
            if "p2p" not in skip:
                part_p2p(args.n, args.subset, tmp, args.quick)
            if "mnist" not in skip:
                part_mislabel(tmp, args.epochs, args.quick)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ov = [FIG[k] for k in ("collection_overhead_linear", "collection_overhead_cnn", "collection_overhead_cnn_fc")
          if k in FIG]
    if ov:
        FIG["collection_overhead"] = max(ov)   # the worst of the measured configurations
    FIG.update(n=args.n, wall_s=round(time.perf_counter() - t0, 1), quick=args.quick)
    print(json.dumps(FIG))


if __name__ == "__main__":
    main()
