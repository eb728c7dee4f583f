"""Questions answered from a MetaStore: proponents/opponents of a prediction and likely-mislabeled items."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from . import operators as ops

if TYPE_CHECKING:
    from .store import MetaStore

__all__ = ["class_bars", "class_p2b", "ranked", "suspects"]


def _label_col(ms: MetaStore, ids: np.ndarray) -> np.ndarray:
    lab = ms.labels(ids).to_numpy()
    return lab


def ranked(ms: MetaStore, x: Any, y: Any, k: int, checkpoint=None, layers=None,
           positive: bool = True) -> pd.DataFrame:
    """Top-k training items by TracIn-CP score for one test item (most positive or most negative)."""
    if int(k) < 1:
        raise ValueError(f"k={k!r}: ask for at least one item")
    ids, scores = ms.p2p(None, x, y, checkpoint, layers, _with_ids=True)
    if scores.shape[1] != 1:
        raise ValueError(f"proponents/opponents take one test item; got {scores.shape[1]} (use p2p for a batch)")
    s = scores[:, 0]
    order = np.argsort(-s if positive else s, kind="stable")[: int(k)]
    return pd.DataFrame({"id": ids[order], "score": s[order], "label": _label_col(ms, ids[order])})


def class_bars(ms: MetaStore, ck: str, val_x: Any, val_y: Any, subs) -> tuple[list[int], dict[str, torch.Tensor]]:
    """Per-class mean validation gradients (C, b, a) for each sub-layer at checkpoint ``ck``."""
    tf = ms._test_factors(ck, val_x, val_y)
    yv = np.asarray(val_y.cpu() if torch.is_tensor(val_y) else val_y).reshape(-1).astype(np.int64)
    classes = sorted(set(yv.tolist()))
    bars = {}
    for s in subs:
        X, G = tf[s.name]
        bars[s.name] = torch.stack([ops.mean_grad(X[torch.as_tensor(yv == c)], G[torch.as_tensor(yv == c)])
                                    for c in classes])
    return classes, bars


def class_p2b(ms: MetaStore, val_x: Any, val_y: Any, ids=None, checkpoint=None, layers=None
              ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(ids, (n, C) TracIn-CP P2B of each training item against each class's validation batch, classes)."""
    ckpts, subs = ms._ckpts(checkpoint), ms._subs(layers)
    ids = ms._train_ids(ckpts, subs, ids)
    per, cls = None, None
    for ck in ckpts:
        cls, bars = class_bars(ms, ck, val_x, val_y, subs)
        acc = torch.zeros(len(ids), len(cls), dtype=torch.float64)
        for s in subs:
            for pos, blk in ms._shard(ck, s.name).blocks(ids):
                acc[torch.as_tensor(pos)] += ops.p2b_block(blk, bars[s.name]).double()
        acc *= ms.checkpoints_[ck]["lr"]
        per = acc if per is None else per + acc
    return ids, per.numpy(), cls


def suspects(ms: MetaStore, val_x: Any, val_y: Any, k: int = 50, checkpoint=None, layers=None,
             classes: Sequence[str] | None = None, by: str = "class") -> pd.DataFrame:
    """Training items whose P2B against trusted validation data is most negative (likely mislabeled).

    TracIn-CP (Pruthi et al. 2020) scores a training item by how a gradient step on it changes the
    validation loss; an item that raises it is suspicious. ``by="class"`` (default) takes the P2B against
    each class's validation batch and keeps the most negative: a "3" labeled "5" hurts the 3s strongly,
    which the average over all classes dilutes. ``by="batch"`` uses the single batch-average P2B. The
    suggested class is the validation class the item hurts most, other than its own label.
    """
    if int(k) < 1:
        raise ValueError(f"k={k!r}: ask for at least one suspect")
    if by not in ("class", "batch"):
        raise ValueError(f"by={by!r}: use 'class' (per-class validation batches) or 'batch' (one batch)")
    if by == "batch":
        ids, score = ms.p2b(None, val_x, val_y, checkpoint, layers, _with_ids=True)
        order = np.argsort(score, kind="stable")[: int(k)]
        sid, ssc = ids[order], score[order]
        _, pc, cls = class_p2b(ms, val_x, val_y, sid, checkpoint, layers)
    else:
        ids, pc_all, cls = class_p2b(ms, val_x, val_y, None, checkpoint, layers)
        score = pc_all.min(1)
        order = np.argsort(score, kind="stable")[: int(k)]
        sid, ssc, pc = ids[order], score[order], pc_all[order]
    label = _label_col(ms, sid)
    pc = pc.copy()
    for row, lab in enumerate(label):
        if np.isfinite(lab) and int(lab) in cls:
            pc[row, cls.index(int(lab))] = np.inf  # never suggest the label it already has
    suggested = np.asarray(cls)[np.argmin(pc, axis=1)]
    df = pd.DataFrame({"id": sid, "score": ssc, "label": label, "suggested": suggested})
    if classes is not None:
        names = list(classes)
        df["label"] = [names[int(v)] if np.isfinite(v) else None for v in df["label"]]
        df["suggested"] = [names[int(v)] for v in df["suggested"]]
    return df
