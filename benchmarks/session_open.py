"""Session open time (digits demo, cold vs warm cache) and FAISS-fed UMAP vs umap-learn's own kNN.

Each open runs in a fresh Python process (imports included), as a user reopening a notebook would.
The map comparison builds the same UMAP (same parameters) on 100,000 synthetic 64-d points, once
with the kNN graph from our FAISS index and once with umap-learn's default (pynndescent), and checks
the two maps are of equal quality (how many of each point's 10 true neighbours stay its
neighbours on the map).
Last line: JSON with cold_open_s, warm_open_s, map_seconds, map_speedup.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

OPEN_SNIPPET = """
import time, json
t0 = time.perf_counter()
import dcai_widgets as dw
s = dw.Session.demo()
s.embeddings; s.index; s.map
print(json.dumps({"open_s": time.perf_counter() - t0}))
"""


def time_open(cache: str) -> float:
    env = dict(os.environ, DCAI_WIDGETS_CACHE=cache)
    out = subprocess.run([sys.executable, "-c", OPEN_SNIPPET], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["open_s"]


def synthetic(n: int, d: int = 64, k: int = 20, intrinsic: int = 2, seed: int = 0):
    """k clusters, each a 2-D sheet (random linear image of a square) in d dims plus a little noise:
    local neighbourhoods are real structure a 2-D map can keep, unlike isotropic Gaussian blobs."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=6.0, size=(k, d))
    bases = rng.normal(size=(k, intrinsic, d))
    y = rng.integers(0, k, n)
    z = rng.uniform(-2, 2, size=(n, intrinsic))
    X = centers[y] + np.einsum("ni,nid->nd", z, bases[y]) + rng.normal(scale=0.05, size=(n, d))
    return X.astype(np.float32), y


def map_quality(X: np.ndarray, emb: np.ndarray, k: int = 10, n_eval: int = 2000) -> float:
    """Neighbourhood preservation: mean fraction of each point's k true neighbours (exact, in X) that
    are among its k nearest on the 2-D map, over a random sample of points."""
    import faiss

    rng = np.random.default_rng(1)
    q = rng.choice(len(X), n_eval, replace=False)
    hi = faiss.IndexFlatL2(X.shape[1])
    hi.add(X)
    lo = faiss.IndexFlatL2(2)
    lo.add(np.ascontiguousarray(emb, dtype=np.float32))
    true = hi.search(X[q], k + 1)[1][:, 1:]
    got = lo.search(np.ascontiguousarray(emb[q], dtype=np.float32), k + 1)[1][:, 1:]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(true, got)]))


def faiss_map(X: np.ndarray, k: int = 15) -> np.ndarray:
    from dcai_widgets.mapping import umap_from_knn
    from dcai_widgets.neighbors import NeighborIndex

    ids, dist = NeighborIndex().fit(X).knn_graph(k)
    return umap_from_knn(X, ids, dist, seed=None)


def default_map(X: np.ndarray, k: int = 15) -> np.ndarray:
    import umap

    return umap.UMAP(n_neighbors=k, min_dist=0.1).fit_transform(X)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000, help="points for the map comparison")
    ap.add_argument("--repeats", type=int, default=3, help="warm opens to take the median of")
    a = ap.parse_args()

    cache = tempfile.mkdtemp(prefix="dw-bench-cache-")
    cold = time_open(cache)
    warm = float(np.median([time_open(cache) for _ in range(a.repeats)]))
    print(f"digits demo open: cold {cold:.2f} s, warm {warm:.2f} s (median of {a.repeats}); "
          f"cold/warm = {cold / warm:.1f}x")

    # compile numba kernels on a small set first so neither contender pays JIT time
    Xs, _ = synthetic(3000, seed=2)
    faiss_map(Xs)
    default_map(Xs)

    X, _ = synthetic(a.n)
    t = time.perf_counter()
    m_faiss = faiss_map(X)
    t_faiss = time.perf_counter() - t
    t = time.perf_counter()
    m_default = default_map(X)
    t_default = time.perf_counter() - t
    q_faiss, q_default = map_quality(X, m_faiss), map_quality(X, m_default)
    speedup = t_default / t_faiss
    print(f"map of {a.n:,} x 64: FAISS-fed UMAP {t_faiss:.1f} s, umap-learn default {t_default:.1f} s; "
          f"speedup {speedup:.2f}x; 10-NN preservation {q_faiss:.3f} vs {q_default:.3f}")
    print(json.dumps({"cold_open_s": round(cold, 3), "warm_open_s": round(warm, 3), "n_map": a.n,
                      "map_seconds": round(t_faiss, 2), "map_default_seconds": round(t_default, 2),
                      "map_speedup": round(speedup, 3), "map_quality_faiss": round(q_faiss, 4),
                      "map_quality_default": round(q_default, 4)}))


if __name__ == "__main__":
    main()
