"""The Inspect panel's model: which labels it trains on (the user's choice), the trained and checkpointed
model, and the MetaStore of its gradient factors. No widget imports.

The training set is chosen, never implied: by default only the labels people gave in this project
(sources "human" and "review"); optionally also imported labels (source "import" and the dataset's own label
column, ``y_true``, where no stored label exists) and model-propagated labels, weighted by their confidence.
"""
from __future__ import annotations

import copy
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
from ..calibration import TopLabelCalibrator, cross_fit, nn_distance
from .models import MLP, SmallCNN, train
from .store import MetaStore

__all__ = ["TRAIN_SETS", "InspectModel", "TrainingSet", "build_inspect_model", "inputs_for", "training_set",
           "inspect_model_from", "session_models", "model_layers", "calibrate", "CALIBRATION", "CALIBRATION_FOLDS"]

#: how the Inspect panel calibrates its model's confidence (``dcai_widgets.calibration``): "coverage", as
#: LANCET's network head: fold models trained on 2/3 of the labels are weaker than the full model, and the
#: distance to the nearest label carries the difference (benchmarks/RESULTS.md, calibrated confidences)
CALIBRATION = "coverage"
CALIBRATION_FOLDS = 3

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
    source: str | None = None            # None: trained by the Inspect panel; else the session.models key
    refit: Callable[[np.ndarray], nn.Module] | None = None   # train a fresh copy on these ids (cross-fitting)
    confidence: np.ndarray | None = None   # calibrated P(top label right) per val_ids item (``calibrate``)
    n_calibration: int = 0                 # labeled training items behind the calibrator (out-of-fold pairs)

    def log_proba(self, ids: Sequence[int]) -> np.ndarray:
        """(len(ids), n_classes) log-probabilities of the model."""
        return _log_proba(self.model, self.X, ids)

    def predict(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(predicted class, the model's raw probability of it) for items."""
        p = np.exp(self.log_proba(ids))
        return p.argmax(1), p.max(1)

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
    with torch.random.fork_rng(devices=[]):   # the initial weights from ``seed``, not from whatever the
        torch.manual_seed(seed)                # global generator holds (the same labels gave ECE 0.05-0.11)
        X, model, layers = inputs_for(session)
    torch.manual_seed(seed)
    states: dict[str, dict] = {}

    def keep(ep: int, m: nn.Module) -> None:
        if ep % every == 0 or ep == epochs:
            states[f"epoch-{ep}"] = {k: v.detach().clone() for k, v in m.state_dict().items()}
        if progress is not None:
            progress(ep, epochs)
        if check is not None:
            check()

    init = copy.deepcopy(model)

    def fit_on(ids: np.ndarray, m: nn.Module, n_epochs: int, on_epoch=None) -> nn.Module:
        tid = torch.as_tensor(np.asarray(ids, np.int64))
        w = torch.as_tensor(ts.weight[tid.numpy()])
        return train(m, X[tid], torch.as_tensor(ts.y)[tid], epochs=n_epochs, lr=lr, seed=seed, on_epoch=on_epoch,
                     weight=None if bool((w == 1.0).all()) else w)

    def refit(ids: np.ndarray) -> nn.Module:     # the same recipe on fewer labels (cross-fitting's folds)
        return fit_on(ids, copy.deepcopy(init), max(int(epochs0), -(-int(min_steps) // -(-len(ids) // 32))))

    epochs0 = epochs
    epochs = max(int(epochs), -(-int(min_steps) // -(-len(train_ids) // 32)))   # batch size 32
    every = max(1, epochs // checkpoints)
    fit_on(train_ids, model, epochs, keep)
    states = dict(list(states.items())[-checkpoints:])
    owns = path is None
    ms = MetaStore(model, layers, path=tempfile.mkdtemp(prefix="dcai-inspect-") if owns else path,
                   loss_fn=nn.CrossEntropyLoss())
    y = np.full(len(ts.y), -1, np.int64)
    y[train_ids] = ts.y[train_ids]
    y[val_ids] = ts.y[val_ids]
    return InspectModel(model, X, y, train_ids, val_ids, layers, lr, ms, states, ts, owns, refit=refit)


def _log_proba(model: nn.Module, X: torch.Tensor, ids: Sequence[int]) -> np.ndarray:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = torch.log_softmax(model(X[torch.as_tensor(np.asarray(ids, np.int64))]), 1).double().numpy()
    model.train(was)
    return out


def model_layers(model: nn.Module, n: int = 3) -> list[str]:
    """The last ``n`` layers MetaStore can factor (nn.Linear / nn.Conv2d), by module name."""
    names = [k for k, m in model.named_modules() if k and isinstance(m, (nn.Linear, nn.Conv2d))]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer for influence to use")
    return names[-n:]


def session_models(session: Any) -> dict[str, Any]:
    """The models in ``session.models`` the Inspect panel can use: fitted ``Trainer``-like objects
    (``model_``, ``X_``, ``train_ids_``, ``val_ids_``, ``data_``, ``checkpoints_``)."""
    need = ("model_", "X_", "train_ids_", "val_ids_", "data_")
    return {k: m for k, m in dict(getattr(session, "models", {}) or {}).items()
            if all(hasattr(m, a) for a in need) and isinstance(getattr(m, "model_", None), nn.Module)}


def inspect_model_from(session: Any, name: str, path: str | Path | None = None) -> InspectModel:
    """An ``InspectModel`` over a model the Train tab stored in ``session.models[name]`` (a fitted
    ``dcai_widgets.train.Trainer``): its weights, inputs and holdout split, its checkpoints for
    TracIn-CP (only the final weights when it kept none). The holdout items with a chosen label (not a
    propagated guess) are the validation items; the weights are copied, so the stored model is untouched."""
    models = session_models(session)
    if name not in models:
        have = sorted(models) or "none yet (train one in the Train tab)"
        raise ValueError(f"session.models has no trained model {name!r} the Inspect panel can use; have: {have}")
    t = models[name]
    model = copy.deepcopy(t.model_).eval()
    data = t.data_
    states = {k: {n: v.clone() for n, v in st.items()} for k, st in (getattr(t, "checkpoints_", None) or {}).items()}
    if not states:
        states = {"final": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    if isinstance(model, nn.Linear):     # MetaStore names layers by module name; a bare Linear has none
        model = nn.Sequential(model)
        states = {k: {f"0.{n}": v for n, v in st.items()} for k, st in states.items()}
    y = np.full(len(session), -1, np.int64)
    y[data.ids] = data.y
    trusted = data.ids[np.asarray(data.weight) >= 1.0]
    val_ids = np.sort(np.intersect1d(np.asarray(t.val_ids_, np.int64), trusted))
    train_ids = np.sort(np.asarray(t.train_ids_, np.int64))
    if len(val_ids) == 0:
        raise ValueError(f"session.models[{name!r}] was trained without a holdout of labeled items; train it "
                         "with holdout > 0 to inspect its predictions")
    counts = {"labels": int(data.counts.get("labels", 0))}
    if data.counts.get("propagated"):
        counts["propagated"] = int(data.counts["propagated"])
    ts = TrainingSet(y.copy(), np.where(y >= 0, 1.0, 0.0).astype(np.float32), counts, f"model:{name}")
    ts.weight[data.ids] = data.weight
    owns = path is None
    ms = MetaStore(model, model_layers(model), path=tempfile.mkdtemp(prefix="dcai-inspect-") if owns else path,
                   loss_fn=nn.CrossEntropyLoss())

    def refit(ids: np.ndarray) -> nn.Module:
        return t.refit(ids).model_

    return InspectModel(model, t.X_, y, train_ids, val_ids, model_layers(model), float(getattr(t, "lr", 1e-3)), ms,
                        states, ts, owns, source=name, refit=refit if hasattr(t, "refit") else None)


def calibrate(im: InspectModel, method: str = CALIBRATION, folds: int = CALIBRATION_FOLDS,
              check: Callable[[], None] | None = None) -> np.ndarray:
    """Calibrated confidence of ``im``'s top label on its validation items (sets ``im.confidence``).

    Cross-fitting (``dcai_widgets.calibration.cross_fit``): the model's labeled training items (not
    propagated guesses) are split into ``folds``; a fresh copy trained the same way without each fold
    (``im.refit``) predicts it, and a ``TopLabelCalibrator`` learns P(label right) from those out-of-fold
    predictions. It is applied to the full model's predictions on the validation items, which neither the
    model nor the calibrator saw, so their labels can check it. Costs ``folds`` more trainings."""
    if im.refit is None:
        raise ValueError("this model cannot be retrained on folds, so its confidence cannot be calibrated")
    w = im.training.weight if im.training is not None else np.ones(len(im.y), np.float32)
    trusted = im.train_ids[w[im.train_ids] >= 1.0]
    extra = np.setdiff1d(im.train_ids, trusted)           # propagated items: trained on, never calibrated on
    Xf = im.X.reshape(len(im.X), -1).numpy()

    def fit_predict(train_ids: np.ndarray, test_ids: np.ndarray) -> np.ndarray:
        return _log_proba(im.refit(np.union1d(train_ids, extra)), im.X, test_ids)

    logp, ok, dist = cross_fit(trusted, im.y[trusted], fit_predict, folds=folds, check=check, X=Xf)
    cal = TopLabelCalibrator(method).fit(logp, ok, dist)
    conf = cal.predict(im.log_proba(im.val_ids), distance=nn_distance(Xf, trusted, rows=im.val_ids))
    im.confidence, im.n_calibration = np.asarray(conf, np.float64), int(len(trusted))
    return im.confidence
