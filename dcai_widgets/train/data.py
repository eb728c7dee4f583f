"""What the Train tab's model learns from: the session's current labels turned into tensors.

The training set is the user's choice, never implied: labels from the chosen ``sources`` (people's
"human" and "review" by default), optionally model-propagated labels weighted by their confidence where
no chosen label exists; items the user excluded are always left out. No widget imports.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .._validate import propagated_arrays
from ..metastore.models import MLP, SmallCNN

__all__ = ["LabeledData", "labeled_data", "model_inputs", "make_model", "MODELS"]

MODELS = ("mlp", "cnn")
_SOURCES = ("human", "review", "import")


@dataclass
class LabeledData:
    """ids of the labeled items (sorted), their class indices, per-item weights and the source counts."""

    ids: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    counts: dict[str, int]

    def __len__(self) -> int:
        return len(self.ids)


def labeled_data(session: Any, sources: Sequence[str] = ("human", "review"), propagated: bool = False) -> LabeledData:
    """The current labels to train on (see module docstring); excluded items are never in it."""
    sources = tuple(sources)
    bad = [s for s in sources if s not in _SOURCES]
    if bad or not (sources or propagated):
        raise ValueError(f"sources={sources!r}: choose one or more of {_SOURCES} "
                         "(propagated labels are chosen with propagated=True)")
    n = len(session)
    y = np.full(n, -1, np.int64)
    w = np.zeros(n, np.float32)
    if propagated:
        pid, lab, conf = propagated_arrays(session)
        y[pid], w[pid] = lab, conf
    mine = session.label_vector(sources) if sources else np.full(n, -1, np.int64)
    y[mine >= 0], w[mine >= 0] = mine[mine >= 0], 1.0
    excluded = np.asarray(session.excluded(), np.int64)
    y[excluded] = -1
    ids = np.nonzero(y >= 0)[0]
    n_mine = int((mine[ids] >= 0).sum())
    n_prop = len(ids) - n_mine
    counts = {"labels": n_mine, "propagated": n_prop, "excluded": int(len(excluded))}
    return LabeledData(ids, y[ids], w[ids], counts)


def model_inputs(session: Any, kind: str = "embeddings") -> torch.Tensor:
    """Inputs for every item: standardized embeddings ("embeddings") or pixels in [0, 1] as (N, C, H, W)
    ("pixels", image sessions only)."""
    if kind == "pixels":
        if getattr(session.items, "kind", None) != "image":
            raise ValueError(f"the CNN trains on pixels, but this session holds {session.items.kind} items; "
                             "use model='mlp' (embeddings)")
        im = np.asarray(session.items.images, dtype=np.float32)
        im = im[:, None] if im.ndim == 3 else im.transpose(0, 3, 1, 2)
        im = im / max(float(im.max()), 1.0)
        return torch.from_numpy(np.ascontiguousarray(im))
    if kind != "embeddings":
        raise ValueError(f"inputs={kind!r}: use 'embeddings' or 'pixels'")
    E = np.asarray(session.embeddings, dtype=np.float32)
    return torch.from_numpy((E - E.mean(0)) / (E.std(0) + 1e-6))


def make_model(name: str, X: torch.Tensor, n_classes: int, hidden: int = 128) -> nn.Module:
    """An untrained model for inputs ``X``: "mlp" (one hidden layer; ``hidden=0``: linear) or "cnn"."""
    if name == "mlp":
        if X.ndim != 2:
            raise ValueError(f"the MLP needs (N, d) inputs, got shape {tuple(X.shape)}")
        return MLP(X.shape[1], n_classes, hidden=hidden) if hidden else nn.Linear(X.shape[1], n_classes)
    if name == "cnn":
        if X.ndim != 4:
            raise ValueError(f"the CNN needs (N, C, H, W) pixels, got shape {tuple(X.shape)}")
        return SmallCNN(tuple(X.shape[2:]), n_classes, in_ch=X.shape[1])
    raise ValueError(f"model={name!r}: use one of {MODELS}, a torch.nn.Module, or None (MLP)")
