"""A small CNN for image sessions (the 8x8 digits demo, MNIST) and the glue that trains it with checkpoints
and fills a MetaStore, so the Inspect panel works out of the box. No widget imports."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .store import MetaStore

__all__ = ["MLP", "InspectModel", "SmallCNN", "build_inspect_model", "train"]


class SmallCNN(nn.Module):
    """conv-relu-pool x2, then fc1-relu-fc2: small enough to train on CPU in seconds."""

    def __init__(self, in_hw: tuple[int, int] = (8, 8), n_classes: int = 10, in_ch: int = 1, c1: int = 8,
                 c2: int = 16, hidden: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        h, w = in_hw[0] // 4, in_hw[1] // 4
        self.fc1 = nn.Linear(c2 * h * w, hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class MLP(nn.Module):
    """fc1-relu-fc2 over feature vectors (non-image sessions)."""

    def __init__(self, d: int, n_classes: int, hidden: int = 64):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int = 5, lr: float = 0.1,
          batch_size: int = 32, seed: int = 0, on_epoch: Callable[[int, nn.Module], None] | None = None
          ) -> nn.Module:
    """Plain SGD (the setting TracIn-CP assumes); ``on_epoch(epoch, model)`` runs after each epoch."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for s in range(0, len(X), batch_size):
            b = perm[s:s + batch_size]
            opt.zero_grad()
            F.cross_entropy(model(X[b]), y[b]).backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(ep + 1, model)
    model.eval()
    return model


@dataclass
class InspectModel:
    """A trained model, its inputs and split, and the (lazily filled) MetaStore behind the Inspect panel."""

    model: nn.Module
    X: torch.Tensor                      # model inputs for every item
    y: np.ndarray                        # labels trained on (-1 = not used)
    train_ids: np.ndarray
    val_ids: np.ndarray
    layers: list[str]
    lr: float
    ms: MetaStore
    states: dict[str, dict] = field(default_factory=dict)   # checkpoint -> weights

    def predict(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(predicted class, probability of it) for items."""
        with torch.no_grad():
            p = torch.softmax(self.model(self.X[torch.as_tensor(np.asarray(ids))]), 1)
        conf, pred = p.max(1)
        return pred.numpy(), conf.numpy()

    def collect(self, progress: Callable[[str, int, int | None], None] | None = None) -> MetaStore:
        """Store factors of the training items at every checkpoint (skips what is already stored)."""
        self.ms.on_progress = progress
        final = {k: v.clone() for k, v in self.model.state_dict().items()}
        try:
            for name, state in self.states.items():
                self.model.load_state_dict(state)
                tid = torch.as_tensor(self.train_ids)
                self.ms.collect((self.X[tid], torch.as_tensor(self.y[self.train_ids])), nn.CrossEntropyLoss(),
                                checkpoint=name, lr=self.lr, ids=self.train_ids, progress=False)
        finally:
            self.model.load_state_dict(final)
            self.ms.on_progress = None
        return self.ms

    @property
    def collected(self) -> bool:
        try:
            have = self.ms.stored_ids()
        except ValueError:
            return False
        return set(self.states) <= set(self.ms.checkpoints) and np.isin(self.train_ids, have).all()


def inputs_for(session: Any) -> tuple[torch.Tensor, nn.Module, list[str]]:
    """Model inputs, an untrained model and the layers to store, for a session's items."""
    n_cls = len(session.classes)
    if session.items.kind == "image":
        im = np.asarray(session.items.images, dtype=np.float32)
        if im.ndim == 3:
            im = im[:, None]
        else:
            im = im.transpose(0, 3, 1, 2)
        im = im / max(float(im.max()), 1.0)
        X = torch.from_numpy(np.ascontiguousarray(im))
        model = SmallCNN(tuple(X.shape[2:]), n_cls, in_ch=X.shape[1])
        return X, model, ["conv2", "fc1", "fc2"]
    E = np.asarray(session.embeddings, dtype=np.float32)
    E = (E - E.mean(0)) / (E.std(0) + 1e-6)
    return torch.from_numpy(E), MLP(E.shape[1], n_cls), ["fc1", "fc2"]


def build_inspect_model(session: Any, path: str | Path | None = None, epochs: int = 10, checkpoints: int = 3,
                        lr: float = 0.3, val_fraction: float = 0.2, seed: int = 0,
                        excluded: Sequence[int] = (),
                        progress: Callable[[int, int], None] | None = None) -> InspectModel:
    """Train the session's small model on its labels (y_true overridden by human/review/import) and checkpoint it.

    The factors themselves are collected later (``InspectModel.collect``), when the panel is first used.
    Excluded items are left out of training; ``progress(epoch, epochs)`` is called after each epoch.
    """
    labels = (np.asarray(session.y_true, dtype=np.int64).copy() if session.y_true is not None
              else np.full(len(session), -1, np.int64))
    given = session.label_vector()          # human / review / import labels override the source labels
    labels[given >= 0] = given[given >= 0]
    lab_ids = np.nonzero(labels >= 0)[0]
    if len(lab_ids) < 10:
        raise ValueError(f"only {len(lab_ids)} labeled items; label at least 10 before inspecting a model")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(lab_ids)
    n_val = max(1, int(round(val_fraction * len(perm))))
    val_ids = np.sort(perm[:n_val])
    train_ids = np.sort(np.setdiff1d(perm[n_val:], np.asarray(excluded, dtype=np.int64)))
    X, model, layers = inputs_for(session)
    torch.manual_seed(seed)
    every = max(1, epochs // checkpoints)
    states: dict[str, dict] = {}

    def keep(ep: int, m: nn.Module) -> None:
        if ep % every == 0 or ep == epochs:
            states[f"epoch-{ep}"] = {k: v.detach().clone() for k, v in m.state_dict().items()}
        if progress is not None:
            progress(ep, epochs)

    y_t = torch.as_tensor(labels)
    train(model, X[torch.as_tensor(train_ids)], y_t[torch.as_tensor(train_ids)], epochs=epochs, lr=lr,
          seed=seed, on_epoch=keep)
    states = dict(list(states.items())[-checkpoints:])
    ms = MetaStore(model, layers, path=path, loss_fn=nn.CrossEntropyLoss())
    y = np.full(len(labels), -1, np.int64)
    y[train_ids] = labels[train_ids]
    y[val_ids] = labels[val_ids]
    return InspectModel(model, X, y, train_ids, val_ids, layers, lr, ms, states)
