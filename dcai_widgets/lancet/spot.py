"""Spot checks of propagated labels (not in the LANCET paper): draw a few per confidence bin, ask the
expert, and estimate the accuracy of all propagated labels with a Wilson interval per bin, combined
across bins by their share of the propagated items (stratified sampling)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

BINS = (0.0, 0.7, 0.9, 1.0 + 1e-9)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (0, 1 when n == 0)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson needs 0 <= k <= n; got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def confidence_bin(conf: np.ndarray, bins=BINS) -> np.ndarray:
    """Bin index of each confidence (0 = least confident)."""
    return np.clip(np.digitize(np.asarray(conf, float), bins[1:-1]), 0, len(bins) - 2)


def draw(propagated: pd.DataFrame, per_bin: int = 2, exclude=(), bins=BINS, seed: int | None = None) -> pd.DataFrame:
    """Up to ``per_bin`` random propagated items from every confidence bin (not in ``exclude``)."""
    if per_bin < 1:
        raise ValueError(f"per_bin must be >= 1, got {per_bin}")
    rng = np.random.default_rng(seed)
    p = propagated[~propagated["id"].isin(list(exclude))].copy()
    p["bin"] = confidence_bin(p["confidence"].to_numpy(), bins)
    parts = [g.iloc[rng.permutation(len(g))[:per_bin]] for _, g in p.groupby("bin")]
    return (pd.concat(parts) if parts else p.iloc[:0]).sort_values("confidence").reset_index(drop=True)


def estimate(propagated: pd.DataFrame, checks: pd.DataFrame, bins=BINS, z: float = 1.96) -> dict:
    """Estimated accuracy of the propagated labels from spot ``checks`` (columns confidence, correct).

    Returns ``accuracy`` (stratified: per-bin accuracy weighted by the bin's share of propagated items;
    unchecked bins count at their interval midpoint 0.5), ``low``/``high`` (per-bin Wilson bounds,
    combined by the same weights — conservative), ``checked``, and ``bins`` (per-bin table).
    """
    share = np.bincount(confidence_bin(propagated["confidence"].to_numpy(), bins), minlength=len(bins) - 1)
    share = share / max(1, share.sum())
    cb = confidence_bin(checks["confidence"].to_numpy(), bins) if len(checks) else np.zeros(0, int)
    rows = []
    for b in range(len(bins) - 1):
        sel = cb == b
        n = int(sel.sum())
        k = int(np.asarray(checks["correct"], bool)[sel].sum()) if n else 0
        lo, hi = wilson(k, n, z)
        rows.append({"bin": f"{bins[b]:.1f}-{min(bins[b + 1], 1.0):.1f}", "share": float(share[b]),
                     "checked": n, "correct": k, "accuracy": k / n if n else float("nan"), "low": lo, "high": hi})
    t = pd.DataFrame(rows)
    acc_b = t["accuracy"].fillna(0.5).to_numpy()
    return {"accuracy": float((t["share"] * acc_b).sum()), "low": float((t["share"] * t["low"]).sum()),
            "high": float((t["share"] * t["high"]).sum()), "checked": int(t["checked"].sum()), "bins": t}
