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
    unchecked bins count at their interval midpoint 0.5, so it is only an estimate when ``complete``:
    every bin holding propagated labels has a check), ``low``/``high`` (per-bin Wilson bounds,
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
    # complete: every bin holding propagated labels has a check (else the point estimate leans on the 0.5s)
    complete = bool(((t["share"] <= 0) | (t["checked"] > 0)).all())
    return {"accuracy": float((t["share"] * acc_b).sum()), "low": float((t["share"] * t["low"]).sum()),
            "high": float((t["share"] * t["high"]).sum()), "checked": int(t["checked"].sum()), "bins": t,
            "complete": complete}


# -- spot checks kept in the store (so they survive a reload) --------------------------------------
MARKER = "spot-check:"   # model_version of a spot check's label: "spot-check:<propagated label>"
SOURCES = ("review", "human")   # a lead's (or the single user's) check is a review; a team annotator's, human


def record(session, item: int, label: str, propagated_label: str, confidence: float, annotator: str,
           source: str = "review") -> int:
    """Store one spot check as a label by ``annotator``: ``label`` is the class the expert says is right;
    the propagated label and its confidence ride along (``model_version`` = ``MARKER + propagated label``,
    ``confidence``) so :func:`checks_from_store` finds the check again. ``source``: "review" (a lead's or
    the single user's check: it overrides colleagues' labels) or "human" (a team annotator's own label).
    Committed before it returns; emits the Session's "labels" event like ``Session.label``."""
    if not isinstance(annotator, str) or not annotator.strip():
        raise ValueError(f"a spot check needs the annotator who made it, got {annotator!r}")
    if source not in SOURCES:
        raise ValueError(f"a spot check's source must be one of {SOURCES}, got {source!r}")
    classes = [str(c) for c in session.classes]
    for name, v in (("label", label), ("propagated_label", propagated_label)):
        if str(v) not in classes:
            raise ValueError(f"{name} {v!r} is not one of the classes {classes}")
    batch = session.store.append([int(item)], [str(label)], annotator=annotator, source=source,
                                 confidence=[float(np.clip(confidence, 0.0, 1.0))],
                                 model_version=MARKER + str(propagated_label))
    session.emit("labels", ids=[int(item)], labels=[str(label)], source=source, annotator=annotator)
    return batch


def checks_from_store(session) -> pd.DataFrame:
    """The live spot checks in the store (retracted ones left out): DataFrame id, label (the propagated
    label checked), confidence (as shown then), correct, annotator, ts; the latest check per item."""
    cols = ["id", "label", "confidence", "correct", "annotator", "ts"]
    ev = session.store.events(SOURCES)
    mv = ev["model_version"].astype("string")
    ev = ev[mv.str.startswith(MARKER).fillna(False).to_numpy(bool)]
    if ev.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(cols, ["int64", "object", "float64", "bool",
                                                                          "object", "float64"])})
    ev = ev.sort_values("seq").groupby("id", as_index=False).tail(1)
    checked = ev["model_version"].str[len(MARKER):]
    return pd.DataFrame({"id": ev["id"].astype("int64").to_numpy(), "label": checked.to_numpy(),
                         "confidence": ev["confidence"].astype(float).to_numpy(),
                         "correct": (checked.to_numpy() == ev["label"].astype(str).to_numpy()),
                         "annotator": ev["annotator"].to_numpy(), "ts": ev["ts"].astype(float).to_numpy()}
                        ).reset_index(drop=True)


def curve_from_store(session) -> pd.DataFrame:
    """The learning curve from the store alone (after a reload): one row per LANCET model version —
    human_labels (from the version name ``lancet-<labels>-<k>``), mean_confidence of its propagated
    labels, propagated (how many), ts; plus, per version, the spot checks made while it was the
    latest (accuracy, low, high by :func:`estimate`)."""
    ev = session.store.events(("propagated",))
    ev = ev[ev["model_version"].astype("string").str.startswith("lancet-").fillna(False).to_numpy(bool)]
    cols = ["model_version", "human_labels", "mean_confidence", "propagated", "ts",
            "spot_accuracy", "spot_low", "spot_high"]
    if ev.empty:
        return pd.DataFrame(columns=cols)
    g = ev.groupby("model_version").agg(mean_confidence=("confidence", "mean"), propagated=("id", "size"),
                                        ts=("ts", "min"), end=("ts", "max")).reset_index()
    g["human_labels"] = g["model_version"].str.split("-").str[1].astype(int)
    g = g.sort_values("ts").reset_index(drop=True)
    checks = checks_from_store(session)
    acc, low, high = [], [], []
    for k, r in g.iterrows():
        until = g["ts"].iloc[k + 1] if k + 1 < len(g) else np.inf
        c = checks[(checks["ts"] >= r["ts"]) & (checks["ts"] < until)]
        if len(c):
            prop = ev[ev["model_version"] == r["model_version"]]
            est = estimate(prop, c)
            acc.append(est["accuracy"] if est["complete"] else np.nan), low.append(est["low"]), high.append(est["high"])
        else:
            acc.append(np.nan), low.append(np.nan), high.append(np.nan)
    g["spot_accuracy"], g["spot_low"], g["spot_high"] = acc, low, high
    return g[cols]
