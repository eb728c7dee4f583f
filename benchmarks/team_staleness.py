"""What a stale queue ranking costs in label value (issue 13's trade-off; used by ``team_load.py``).

With one fit per team, capped at a share of one core, 8 annotators pressing keys flat out label hundreds
of items between two fits of the queue's engine, taking the next items of a ranking made before those
labels (and, past the ranking's ``window`` of 256 items, the fixed fallback order). A label chosen from
a stale ranking may teach the model less. Measured as a learning curve: the accuracy, on held-out items
drawn from the same distribution, of the queue's model (scikit-learn's LogisticRegression with the
queue's C and max_iter) trained on the first k labels in the order they were given, for

- the team's order in a load run (the store's events by seq),
- one annotator alone with the queue refitted every ``every`` labels (5: the solo Label panel's
  default), simulated with the same engine (``UncertaintyQueue``, the ranking without its calibration,
  which does not change the order) and the team's window and fallback order,
- a random order (passive learning), the floor.

Uncertainty sampling's batch-size cost is the classic trade-off of batch-mode active learning
(Settles, "Active Learning Literature Survey", 2009, sec. 6.1; Hoi et al., ICML 2006).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

KS = (10, 20, 50, 100, 200, 400)
WINDOW = 256        # SharedQueue's default: ranked items asked of the engine per fit


def held_out(n_items: int, n_test: int = 2000, seed: int = 1, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``n_test`` new items from the blobs of ``team_load.dataset(n_items)``: the same centres (drawn
    as it draws them, seed 0), other points."""
    rng = np.random.default_rng(0)
    rng.integers(0, 10, n_items)
    centres = rng.normal(scale=4.0, size=(10, d))
    rng = np.random.default_rng(seed)
    yt = rng.integers(0, 10, n_test)
    return (centres[yt] + rng.normal(size=(n_test, d))).astype(np.float32), yt


def curve(order: Sequence[int], X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray,
          ks: Sequence[int] = KS) -> dict[str, float | None]:
    """Held-out accuracy of the queue's regression trained on the first k labels of ``order``."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    order = np.asarray(order, dtype=np.int64)
    out: dict[str, float | None] = {}
    for k in ks:
        ids = order[:k]
        if len(ids) < k or len(np.unique(y[ids])) < 2:
            out[str(k)] = None
            continue
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            m = LogisticRegression(C=1.0, max_iter=200).fit(X[ids], y[ids])
        out[str(k)] = round(float((m.predict(Xt) == yt).mean()), 4)
    return out


def simulated_order(X: np.ndarray, y: np.ndarray, classes: list[str], every: int, k_max: int,
                    cache: str | None = None) -> list[int]:
    """The order one annotator labels in when the queue is refitted every ``every`` labels: after each
    fit the next ``every`` items of its ranking (``WINDOW`` items), then of the fixed fallback order
    (SharedQueue's: the same permutation in every kernel)."""
    import dcai_widgets as dw
    from dcai_widgets.queue import UncertaintyQueue

    with tempfile.TemporaryDirectory(prefix="team-stale-") as tmp:
        s = dw.Session.from_embeddings(X, classes, y_true=y, store=Path(tmp) / "s.db", cache_dir=cache)
        q = UncertaintyQueue(s, calibration=None)
        fallback = np.random.default_rng(0).permutation(len(y))
        done: list[int] = []
        seen: set[int] = set()
        while len(done) < k_max:
            q.fit()
            ranked = q.candidates(WINDOW)
            batch = [i for i in ranked if i not in seen][:every]
            if len(batch) < every:
                taken = seen | set(batch)
                batch += [int(i) for i in fallback if int(i) not in taken][: every - len(batch)]
            if not batch:
                break
            s.label(batch, [classes[int(y[i])] for i in batch], annotator="solo")
            done += batch
            seen.update(batch)
        s.store.close()
    return done[:k_max]


def digits(n_test: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1,797 images, 64 pixels, scaled to [0, 1]): a pool of 1,297
    to label and ``n_test`` held out: a set where the order of labels matters longer than on the blobs."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(y))
    X = (X / 16.0).astype(np.float32)
    test, pool = perm[:n_test], perm[n_test:]
    return X[pool], y[pool], X[test], y[test]


def reference_curves(X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray, classes: list[str],
                     cache: str | None = None, every: Sequence[int] = (5, 50, 400),
                     ks: Sequence[int] = KS) -> dict:
    """Learning curves of one annotator refitting every ``every`` labels, and of a random order."""
    out = {"k": [int(k) for k in ks], "items": int(len(y)), "held_out_items": int(len(yt)),
           "random_order": curve(np.random.default_rng(7).permutation(len(y)), X, y, Xt, yt, ks)}
    for m in every:
        out[f"solo_fit_every_{m}"] = curve(simulated_order(X, y, classes, m, max(ks), cache), X, y, Xt, yt, ks)
    return out


def blobs(dataset, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The load runs' items (``team_load.dataset``) and 2,000 held out from the same blobs."""
    return (*dataset(n_items), *held_out(n_items))


def team_curve(order: Sequence[int], dataset, n_items: int, ks: Sequence[int] = KS) -> dict:
    """The learning curve of a load run's label order (the store's events by seq) on the blobs."""
    return curve(order, *blobs(dataset, n_items), ks)
