"""The shared synthetic set for the scale parts: clustered ``n x d`` float32 rows with a planted rare
concept, generated in chunks straight into a memory-mapped file (never ``n x d`` in RAM), seeded per
chunk so every run and every part sees the same rows. Files are reused across parts and runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CHUNK = 250_000


def centers(d: int = 128, k: int = 100, seed: int = 0) -> np.ndarray:
    """``k`` cluster centres; the last one is the rare concept."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(k, d)).astype(np.float32)


def clustered(n: int, d: int = 128, *, seed: int = 0, k: int = 100, rare_frac: float = 0.001,
              work: str | Path = "/tmp/dcai_scale", rare_offset: float | None = None) -> tuple[np.memmap, np.ndarray]:
    """Rows (memory-mapped, read-only) and the rare-concept mask (bool, n).

    Cluster ``k-1`` (the last) holds about ``rare_frac`` of the rows; the rest spread over the other
    clusters. Noise sd 0.6 around unit-normal centres, so clusters overlap a little, as real embeddings do.
    ``rare_offset`` (e.g. 1.5) puts the rare centre that far from cluster 0's centre instead of at its own
    random place: a concept hidden inside a common one, hard enough that index errors show in SEALS' AP.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    stem = f"synth_n{n}_d{d}_k{k}_s{seed}_r{rare_frac:g}" + ("" if rare_offset is None else f"_o{rare_offset:g}")
    stem = stem.replace(".", "p")  # no dot: suffixes stay ours
    rows_f, rare_f, done_f = (work / (stem + ext) for ext in (".f32", ".rare.npy", ".json"))
    if not done_f.exists():
        C = centers(d, k, seed)
        if rare_offset is not None:
            u = np.random.default_rng([seed, 10**6]).normal(size=d).astype(np.float32)
            C[k - 1] = C[0] + rare_offset * u / np.linalg.norm(u)
        X = np.lib.format.open_memmap(rows_f, mode="w+", dtype=np.float32, shape=(n, d))
        rare = np.zeros(n, dtype=bool)
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            rng = np.random.default_rng([seed, start // CHUNK])
            m = stop - start
            lab = rng.integers(0, k - 1, size=m)
            is_rare = rng.random(m) < rare_frac
            lab[is_rare] = k - 1
            X[start:stop] = C[lab] + 0.6 * rng.normal(size=(m, d)).astype(np.float32)
            rare[start:stop] = is_rare
        X.flush()
        del X
        np.save(rare_f, rare)
        done_f.write_text(json.dumps({"n": n, "d": d, "k": k, "seed": seed, "rare_frac": rare_frac}))
    X = np.load(rows_f, mmap_mode="r")
    return X, np.load(rare_f)
