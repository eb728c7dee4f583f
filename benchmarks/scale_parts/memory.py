"""Scale part "memory" (issue 18): embeddings out of RAM, IVF-PQ with exact re-ranking, SEALS at 10M.

On the shared synthetic set (``synth.clustered``, n x 128 float32, memory-mapped, rare concept planted):

1. **embed**: a real encoder (PCA fitted on a 65k-row sample, all 128 components: centring + rotation,
   so neighbourhoods are kept) run over the rows as raw features through the chunked memory-mapped writer
   (``embed.memmap.write_embeddings``), into ``work/memory_emb_n{n}.npy``.
2. **session + index**: ``Session.from_embeddings(<memmap>)``; ``s.index`` picks its kind by size (IVF-PQ
   at 10M), builds it in chunks and saves it; reopened with ``NeighborIndex.load``.  Recall@100 of
   ``search_ids`` against an exact chunked scan (the baseline, timed on the same queries), and the
   seconds per query of both.
3. **SEALS rounds**: ``Seals(s, strategy="most_likely_positive", target="rare")`` from 5 positive and 5
   negative seeds; each round labels the 10 candidates with the oracle (``s.label``) and refits.  Round =
   label + fit + candidates, wall seconds; median reported.
4. **AP at 1M** (the last 100k rows held out for AP of the final classifier): the same SEALS loop over
   IVF-PQ with re-ranking and over the exact flat index (the baseline), for a few seed sets.

Peak anonymous memory (``RssAnon`` in /proc/self/status: pages of a memory-mapped file are not counted)
is sampled every 20 ms in a thread, per phase.  ``--n`` sets the big size (10M by default); ``--quick``
uses 200k / 100k.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from .synth import clustered

SEEDS_POS, SEEDS_NEG, BATCH = 5, 5, 10


def rss_anon_gib() -> float:
    """This process's anonymous resident memory (GiB), from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


class PeakRss:
    """Samples RssAnon every ``every`` seconds in a thread; ``phase(name)`` starts a new named peak."""

    def __init__(self, every: float = 0.02):
        self.every, self.peaks, self._name = every, {}, None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._name is not None:
                v = rss_anon_gib()
                self.peaks[self._name] = max(self.peaks.get(self._name, 0.0), v)
            time.sleep(self.every)

    def phase(self, name: str | None) -> None:
        if name is not None:
            self.peaks[name] = max(self.peaks.get(name, 0.0), rss_anon_gib())
        self._name = name

    def stop(self) -> dict:
        self._stop.set()
        self._t.join()
        return {k: round(v, 3) for k, v in self.peaks.items()}


def embed(X: np.ndarray, path: Path, sample: int = 65_536) -> tuple[np.memmap, float]:
    """PCA (fitted on a sample) of X's rows through the chunked memmap writer; (embeddings, seconds)."""
    from sklearn.decomposition import PCA

    from dcai_widgets.embed.memmap import write_embeddings

    t = time.perf_counter()
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(len(X), min(sample, len(X)), replace=False))
    pca = PCA(n_components=X.shape[1], random_state=0).fit(np.asarray(X[ids], dtype=np.float32))
    path.unlink(missing_ok=True)
    E = write_embeddings(lambda lo, hi: pca.transform(X[lo:hi]).astype(np.float32), len(X), path)
    return E, time.perf_counter() - t


def query_times(index, X, qids: np.ndarray, k: int = 100) -> dict:
    """Recall@k of index.search_ids against the exact chunked scan, and seconds per query of both."""
    from dcai_widgets.rows import exact_knn

    t = time.perf_counter()
    truth, _ = exact_knn(X, np.asarray(X[qids], dtype=np.float32), k + 1, "l2")
    exact_s = (time.perf_counter() - t) / len(qids)
    truth = [r[r != q][:k] for r, q in zip(truth, qids)]
    t = time.perf_counter()
    got = np.concatenate([index.search_ids(qids[i:i + 1], k)[0] for i in range(len(qids))])
    index_s = (time.perf_counter() - t) / len(qids)
    rec = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(got, truth)]))
    return dict(recall=round(rec, 4), query_ms=round(1e3 * index_s, 2), exact_query_ms=round(1e3 * exact_s, 1))


def seeds(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.choice(np.flatnonzero(y), SEEDS_POS, replace=False),
            rng.choice(np.flatnonzero(~y), SEEDS_NEG, replace=False))


def seals_session_rounds(s, y: np.ndarray, rounds: int) -> dict:
    """SEALS rare-concept search through the Session API; seconds per round (label + fit + candidates)."""
    from dcai_widgets import Seals

    pos, neg = seeds(y, 0)
    s.label(pos, ["rare"] * len(pos), annotator="oracle")
    s.label(neg, ["other"] * len(neg), annotator="oracle")
    t = time.perf_counter()
    sl = Seals(s, k=100, strategy="most_likely_positive", target="rare", batch=BATCH)
    sl.fit()
    first = time.perf_counter() - t
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        ids = np.asarray(sl.candidates(), dtype=np.int64)
        s.label(ids, np.where(y[ids], "rare", "other").tolist(), annotator="oracle")
        sl.fit()
        times.append(time.perf_counter() - t)
    lab = s.label_vector()
    found = int((lab == 1).sum())
    rep = sl.report()
    med = {f"{c}_median": round(float(rep[c].iloc[1:].median()), 4) for c in ("search_s", "train_s", "score_s")}
    return dict(round_s=[round(x, 3) for x in times], round_s_median=round(float(np.median(times)), 3), **med,
                first_fit_s=round(first, 2), setup_s=round(float(getattr(sl, "setup_s_", 0.0)), 2),
                positives_found=found, labeled=int((lab >= 0).sum()), pool_size=int(rep["pool_size"].iloc[-1]),
                fraction_scored=round(float(sl.pool_fraction), 5), n_scored=int(rep["n_scored"].iloc[-1]))


def seals_ap(X, index, y, X_test, y_test, rounds: int, seed: int) -> tuple[float, int]:
    """AP on the held-out rows of the final classifier after ``rounds`` SEALS rounds from seed set ``seed``."""
    from sklearn.metrics import average_precision_score

    from dcai_widgets.seals import MISSING, Seals

    lab = np.full(len(y), MISSING, np.int64)
    pos, neg = seeds(y, seed)
    lab[pos], lab[neg] = 1, 0
    sl = Seals.from_arrays(X, index, k=100, strategy="most_likely_positive", target=1, batch=BATCH)
    for _ in range(rounds):
        sl.fit(lab)
        ids = np.asarray(sl.candidates(), dtype=np.int64)
        lab[ids] = y[ids]
    sl.fit(lab)
    clf = sl.estimator_
    p = clf.predict_proba(np.asarray(X_test, dtype=np.float32))[:, list(clf.classes_).index(1)]
    return float(average_precision_score(y_test, p)), int((lab == 1).sum())


def ap_part(n: int, work: str, rounds: int, repeats: int, peaks: PeakRss) -> dict:
    """SEALS AP over exact, auto (IVF) and IVF-PQ indexes on the same n-row set (last 10% held out)."""
    from dcai_widgets.neighbors import NeighborIndex

    off = os.environ.get("SCALEMEM_RARE_OFFSET")   # a harder concept: the rare centre this close to cluster 0's
    X, rare = clustered(n, work=work, rare_offset=None if off is None else float(off))
    cut = int(0.9 * n)
    Xp, yp, Xt, yt = X[:cut], rare[:cut], X[cut:], rare[cut:]
    out = {"ap_n": n, "ap_rounds": rounds, "ap_repeats": repeats, "ap_rare_offset": off}
    kinds = {"exact": dict(kind="flat"), "ivfpq": dict(kind="ivfpq")}
    for name, kw in kinds.items():
        peaks.phase(f"ap_{name}")
        t = time.perf_counter()
        idx = NeighborIndex(**kw).fit(Xp)
        out[f"ap_index_s_{name}"] = round(time.perf_counter() - t, 1)
        out[f"ap_kind_{name}"] = idx.kind_
        if name == "ivfpq":
            q = query_times(idx, Xp, np.sort(np.random.default_rng(1).choice(cut, 200, replace=False)))
            out.update(recall_at_100_1m=q["recall"], query_ms_1m=q["query_ms"], exact_query_ms_1m=q["exact_query_ms"])
        res = [seals_ap(Xp, idx, yp, Xt, yt, rounds, seed) for seed in range(repeats)]
        out[f"ap_{name}"] = [round(a, 4) for a, _ in res]
        out[f"ap_found_{name}"] = [f for _, f in res]
        del idx
    peaks.phase(None)
    out["ap_diff_points"] = round(100 * (np.mean(out["ap_ivfpq"]) - np.mean(out["ap_exact"])), 2)
    return out


def big_part(n: int, work: str, rounds: int, n_queries: int, peaks: PeakRss) -> dict:
    import dcai_widgets as dw
    from dcai_widgets.neighbors import NeighborIndex

    X, rare = clustered(n, work=work)
    wd = Path(work)
    out: dict = {"n": n, "d": int(X.shape[1])}
    peaks.phase("embed")
    E, out["embed_s"] = embed(X, wd / f"memory_emb_n{n}.npy")
    out["embed_s"] = round(out["embed_s"], 1)
    out["embeddings_are_memmap"] = isinstance(E, np.memmap)
    peaks.phase("session")
    cache, store = wd / "memory_cache", wd / f"memory_labels_n{n}.db"
    store.unlink(missing_ok=True)
    t = time.perf_counter()
    s = dw.Session.from_embeddings(E, classes=["other", "rare"], store=str(store), cache_dir=str(cache))
    out["session_open_s"] = round(time.perf_counter() - t, 1)
    out["session_embeddings_are_memmap"] = isinstance(s.embeddings, np.memmap)
    peaks.phase("index")
    t = time.perf_counter()
    index = s.index
    out["index_build_s"] = round(time.perf_counter() - t, 1)
    out["index_kind"] = index.kind_
    ivf = index._ivf()
    out["index_nlist"], out["index_nprobe"] = (int(ivf.nlist), int(ivf.nprobe)) if ivf is not None else (0, 0)
    path = next(iter(sorted(s.cache_dir.glob("index-*.faiss"))), None)
    out["index_file_mib"] = round(path.stat().st_size / 2**20, 1) if path else None
    t = time.perf_counter()
    reopened = NeighborIndex.load(path, E) if path else index
    out["index_reopen_s"] = round(time.perf_counter() - t, 2)
    peaks.phase("recall")
    qids = np.sort(np.random.default_rng(1).choice(n, n_queries, replace=False))
    q = query_times(reopened, E, qids)
    out.update(recall_at_100=q["recall"], query_ms=q["query_ms"], exact_query_ms=q["exact_query_ms"],
               recall_queries=n_queries)
    del reopened
    peaks.phase("seals")
    r = seals_session_rounds(s, rare, rounds)
    out.update({f"seals_{k}": v for k, v in r.items()})
    peaks.phase(None)
    return out


PHASES = ("big", "ap")


def run(args) -> dict:
    """Both phases (or those in $SCALEMEM_PHASES, e.g. "ap"), each saved to ``out/scale_memory_<phase>.json``
    and merged with the other phase's saved figures, so the two can run as separate processes."""
    import json
    import os

    import faiss

    # one OpenMP thread: on this shared, overloaded 2-core box FAISS' spin-waiting barriers made training
    # an IVF-PQ index on 16k rows take minutes with two threads
    faiss.omp_set_num_threads(1)
    n = 200_000 if args.quick else int(args.n)
    n_ap = 100_000 if args.quick else min(n, 1_000_000)
    phases = [p for p in os.environ.get("SCALEMEM_PHASES", ",".join(PHASES)).split(",") if p]
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    for phase in phases:
        peaks = PeakRss()
        load0 = os.getloadavg()
        t = time.perf_counter()
        if phase == "big":
            out = big_part(n, args.work, rounds=10 if args.quick else 20, n_queries=30 if n > 2_000_000 else 100,
                           peaks=peaks)
        elif phase == "ap":
            out = ap_part(n_ap, args.work, rounds=10 if args.quick else 25, repeats=2 if args.quick else 3,
                          peaks=peaks)
        else:
            raise ValueError(f"unknown phase {phase!r}; choose from {PHASES}")
        pk = peaks.stop()
        out[f"{phase}_peak_rss_anon_gib"] = pk
        out[f"{phase}_loadavg"] = [[round(x, 1) for x in load0], [round(x, 1) for x in os.getloadavg()]]
        out[f"{phase}_wall_s"] = round(time.perf_counter() - t, 1)
        (outdir / f"scale_memory_{phase}.json").write_text(json.dumps(out, indent=1, default=float))
    out = {}
    for phase in PHASES:
        f = outdir / f"scale_memory_{phase}.json"
        if f.exists():
            out.update(json.loads(f.read_text()))
    if "n" in out:
        pk = out["big_peak_rss_anon_gib"]
        tag = "10m" if out["n"] == 10_000_000 else f"n{out['n']}"
        out[f"anon_rss_gib_{tag}"] = round(max(pk.get(p, 0.0) for p in ("embed", "session", "index", "recall",
                                                                         "seals")), 3)
        out[f"seals_round_s_{tag}"] = out["seals_round_s_median"]
        out["raw_float32_gib"] = round(out["n"] * out["d"] * 4 / 2**30, 2)
    return out
