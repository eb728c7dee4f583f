"""The Inspect panel's model: which labels it trains on (the user's choice), the trained and checkpointed
model, and the MetaStore of its gradient factors. No widget imports.

The training set is chosen, never implied: by default only the labels people gave in this project
(sources "human" and "review"); optionally also imported labels (source "import" and the dataset's own label
column, ``y_true``, where no stored label exists) and model-propagated labels, weighted by their confidence.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._validate import propagated_arrays
from .models import MLP, SmallCNN, train
from .store import MetaStore

__all__ = ["TRAIN_SETS", "InspectModel", "TrainingSet", "build_inspect_model", "inputs_for", "training_set"]

#: what the Inspect model can train on: name -> (label sources, description shown to people)
TRAIN_SETS: dict[str, tuple[tuple[str, ...], str]] = {
    "people": (("human", "review"), "your labels (human + review)"),
    "people+import": (("human", "review", "import"), "your labels + imported labels"),
    "people+import+propagated": (("human", "review", "import", "propagated"),
                                 "your labels + imported + propagated (weighted by confidence)"),
}


@dataclass
class TrainingSet:
    """Labels (-1 = not used), per-item weights and how many came from each kind of source."""

    y: np.ndarray
    weight: np.ndarray
    counts: dict[str, int]
    choice: str

    @property
    def ids(self) -> np.ndarray:
        return np.nonzero(self.y >= 0)[0]

    def describe(self) -> str:
        parts = [f"{n} {k}" for k, n in self.counts.items() if n]
        return f"{len(self.ids)} labels ({', '.join(parts) or 'none'})"


def training_set(session: Any, choice: str = "people") -> TrainingSet:
    """The labels the Inspect model trains on under ``choice`` (a key of ``TRAIN_SETS``).

    People's labels win over imported ones, imported over propagated; excluded items stay in (the caller
    leaves them out of training). Propagated labels carry their confidence as weight, all others 1."""
    if choice not in TRAIN_SETS:
        raise ValueError(f"train_on={choice!r}: use one of {list(TRAIN_SETS)}")
    sources = TRAIN_SETS[choice][0]
    n = len(session)
    y = np.full(n, -1, np.int64)
    w = np.zeros(n, np.float32)
    kind = np.zeros(n, np.int8)          # 0 none, 1 propagated, 2 imported, 3 people's
    if "propagated" in sources:
        ids, lab, conf = propagated_arrays(session)
        y[ids], w[ids], kind[ids] = lab, conf, 1
    if "import" in sources:
        if getattr(session, "y_true", None) is not None:
            yt = np.asarray(session.y_true, np.int64)
            y[yt >= 0], w[yt >= 0], kind[yt >= 0] = yt[yt >= 0], 1.0, 2
        imp = session.label_vector(("import",))
        y[imp >= 0], w[imp >= 0], kind[imp >= 0] = imp[imp >= 0], 1.0, 2
    mine = session.label_vector(("human", "review"))
    y[mine >= 0], w[mine >= 0], kind[mine >= 0] = mine[mine >= 0], 1.0, 3
    counts = {"yours": int((kind == 3).sum())}
    if "import" in sources:
        counts["imported"] = int((kind == 2).sum())
    if "propagated" in sources:
        counts["propagated"] = int((kind == 1).sum())
    return TrainingSet(y, w, counts, choice)


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
    training: TrainingSet | None = None
    owns_path: bool = False              # the store folder was created for this model (removed by close)

    def predict(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(predicted class, probability of it) for items."""
        with torch.no_grad():
            p = torch.softmax(self.model(self.X[torch.as_tensor(np.asarray(ids))]), 1)
        conf, pred = p.max(1)
        return pred.numpy(), conf.numpy()

    def collect(self, progress: Callable[[str, int, int | None], None] | None = None,
                check: Callable[[], None] | None = None) -> MetaStore:
        """Store factors of the training items at every checkpoint (skips what is already stored);
        ``check()`` runs between checkpoints (it may raise to stop, e.g. a cancelled background job)."""
        self.ms.on_progress = progress
        final = {k: v.clone() for k, v in self.model.state_dict().items()}
        try:
            for name, state in self.states.items():
                if check is not None:
                    check()
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

    def close(self) -> None:
        """Stop the store's writer and delete its folder when it was made for this model."""
        try:
            self.ms.close()
        finally:
            if self.owns_path:
                shutil.rmtree(self.ms.path, ignore_errors=True)


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
                        excluded: Sequence[int] | None = None, train_on: str = "people", min_steps: int = 300,
                        progress: Callable[[int, int], None] | None = None,
                        check: Callable[[], None] | None = None) -> InspectModel:
    """Train the session's small model on the labels ``train_on`` selects (``TRAIN_SETS``) and checkpoint it.

    A random ``val_fraction`` of those labels (only people's or imported ones, never propagated guesses) is
    held out as trusted validation data. The factors are collected later (``InspectModel.collect``).
    Excluded items (``excluded``; None: the session's ``Session.exclude`` list) are left out of training
    and of the validation set; ``progress(epoch, epochs)`` runs after each epoch and
    ``check()`` between epochs (it may raise to stop). ``path=None``: a temporary folder, removed by
    ``InspectModel.close()``. With few labels, ``epochs`` is raised so that training takes at least
    ``min_steps`` SGD steps (48 items x 10 epochs were 20 steps: a model that predicted one class for all).
    """
    ts = training_set(session, train_on)
    if excluded is None:
        excluded = session.excluded() if hasattr(session, "excluded") else ()
    lab_ids = ts.ids[~np.isin(ts.ids, np.asarray(excluded, dtype=np.int64))]   # order kept (seeded split)
    if len(lab_ids) < 10:
        raise ValueError(f"only {len(lab_ids)} labels to train on ({TRAIN_SETS[train_on][1]}); label at least 10 "
                         "items, or include imported labels, before inspecting a model")
    rng = np.random.default_rng(seed)
    trusted = lab_ids[ts.weight[lab_ids] >= 1.0]
    perm = rng.permutation(trusted)
    n_val = max(1, int(round(val_fraction * len(perm))))
    val_ids = np.sort(perm[:n_val])
    train_ids = np.sort(np.setdiff1d(lab_ids, val_ids))
    if len(train_ids) == 0:
        raise ValueError("every labeled item is excluded or held out; include some items again")
    X, model, layers = inputs_for(session)
    torch.manual_seed(seed)
    epochs = max(int(epochs), -(-int(min_steps) // -(-len(train_ids) // 32)))   # batch size 32
    every = max(1, epochs // checkpoints)
    states: dict[str, dict] = {}

    def keep(ep: int, m: nn.Module) -> None:
        if ep % every == 0 or ep == epochs:
            states[f"epoch-{ep}"] = {k: v.detach().clone() for k, v in m.state_dict().items()}
        if progress is not None:
            progress(ep, epochs)
        if check is not None:
            check()

    tid = torch.as_tensor(train_ids)
    w = torch.as_tensor(ts.weight[train_ids])
    train(model, X[tid], torch.as_tensor(ts.y)[tid], epochs=epochs, lr=lr, seed=seed, on_epoch=keep,
          weight=None if bool((w == 1.0).all()) else w)
    states = dict(list(states.items())[-checkpoints:])
    owns = path is None
    ms = MetaStore(model, layers, path=tempfile.mkdtemp(prefix="dcai-inspect-") if owns else path,
                   loss_fn=nn.CrossEntropyLoss())
    y = np.full(len(ts.y), -1, np.int64)
    y[train_ids] = ts.y[train_ids]
    y[val_ids] = ts.y[val_ids]
    return InspectModel(model, X, y, train_ids, val_ids, layers, lr, ms, states, ts, owns)
