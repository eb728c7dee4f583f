"""Trainer: the downstream model trained on the workbench's current labels, inside the same session.

``Trainer(s).fit()`` trains an MLP head over the session's embeddings (or a small CNN on the raw pixels of
an image session, or any ``torch.nn.Module``) on the labels the user chose (see ``data.labeled_data``),
with a seeded holdout split, early stopping and a per-epoch ``history_``; the fitted trainer is kept in
``s.models`` (``Session.set_model``) so other panels can use it. Follows scikit-learn's conventions:
``__init__`` stores, ``fit`` validates and returns self, learned state ends in ``_``. No widget imports.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..calibration import wilson
from .data import LabeledData, labeled_data, make_model, model_inputs
from .loop import EpochContext, Sampler, fit_loop, predict_logits

__all__ = ["Trainer"]


class Trainer:
    """Train a model on the session's current labels.

    ``model``: None or "mlp" (MLP over embeddings), "cnn" (small CNN over pixels; image sessions), or a
    ``torch.nn.Module`` taking ``inputs`` ("embeddings" by default for a module). ``sources``: label sources
    to train on; ``propagated=True`` adds model-propagated labels (where no chosen label exists), each
    weighted by its confidence. Excluded items are always left out. ``holdout``: fraction of the labels held
    out (seeded) for validation and early stopping (``patience`` epochs without a lower validation loss).
    ``sampler``: a ``loop.Sampler`` choosing how batches are drawn (None: uniform shuffling).
    ``min_steps``: with early stopping on (a holdout and ``patience``), the least number of optimizer
    steps over the ``epochs`` (an epoch is one pass or ``ceil(min_steps / epochs)`` steps, whichever is
    more; ``steps_per_epoch`` overrides both; without early stopping an epoch is one pass, since extra steps
    then fit noisy labels: 540 instead of 420 steps cost 3-5 points on 25%-noisy blobs). With 60
    labels one pass is one step, and 30 steps left the MLP at 45-61% on digits where 500 steps give 75-78%
    (logistic regression 78-80%); sets above ``min_steps * batch_size / epochs`` labels train exactly as
    before, and early stopping still ends runs that stop improving (benchmarks/RESULTS.md, TRAINFIX).
    ``holdout_`` after fit: the kept model's holdout accuracy as ``correct``/``n`` with a 95% Wilson
    interval (``low``, ``high``), on people's labels only.
    ``callbacks``: ``fn(trainer, row)`` after each epoch (row: the history row). ``record``: ``fn(epoch)`` ->
    a context manager with ``step(ids, y)`` wrapped around each epoch, e.g.
    ``lambda ep: metastore.record(f"epoch-{ep}", lr=...)`` to collect MetaStore factors in the same run.
    ``name``: the key in ``session.models`` (None: not stored). ``ids``: train only on these items (those
    of them that have a chosen label), e.g. a subset chosen by ``SelectionViaProxy``. ``checkpoints``:
    how many weight snapshots along training to keep in ``checkpoints_`` (epoch name -> state_dict, the
    last one the model kept), evenly spread up to the kept epoch: the Inspect panel's TracIn-CP (Pruthi
    et al., NeurIPS 2020) sums influence over them; 0 keeps none.
    """

    def __init__(self, session: Any, model: None | str | nn.Module = None, epochs: int = 30,
                 sampler: Sampler | None = None, sources: Sequence[str] = ("human", "review"),
                 propagated: bool = False, holdout: float = 0.2, patience: int | None = 5, seed: int = 0,
                 lr: float = 1e-3, batch_size: int = 64, hidden: int = 128, inputs: str | None = None,
                 steps_per_epoch: int | None = None, min_steps: int = 500, callbacks: Sequence[Callable[[Trainer, dict], None]] = (),
                 record: Callable[[int], EpochContext] | None = None, progress: bool = True,
                 name: str | None = "trainer", ids: Sequence[int] | None = None, checkpoints: int = 3) -> None:
        self.session = session
        self.model = model
        self.epochs = epochs
        self.sampler = sampler
        self.sources = sources
        self.propagated = propagated
        self.holdout = holdout
        self.patience = patience
        self.seed = seed
        self.lr = lr
        self.batch_size = batch_size
        self.hidden = hidden
        self.inputs = inputs
        self.steps_per_epoch = steps_per_epoch
        self.min_steps = min_steps
        self.callbacks = callbacks
        self.record = record
        self.progress = progress
        self.name = name
        self.ids = ids
        self.checkpoints = checkpoints
        self._stop = False

    # -- setup -------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, np.integer)) or self.epochs < 1:
            raise ValueError(f"epochs={self.epochs!r} must be a positive integer")
        if not 0.0 <= float(self.holdout) < 1.0:
            raise ValueError(f"holdout={self.holdout!r} must be a fraction in [0, 1)")
        if self.patience is not None and int(self.patience) < 1:
            raise ValueError(f"patience={self.patience!r} must be a positive integer or None")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} must be a positive number")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be a positive integer")
        if isinstance(self.min_steps, bool) or int(self.min_steps) < 0:
            raise ValueError(f"min_steps={self.min_steps!r} must be a non-negative integer")
        if isinstance(self.checkpoints, bool) or int(self.checkpoints) < 0:
            raise ValueError(f"checkpoints={self.checkpoints!r} must be a non-negative integer")
        if self.sampler is not None and not isinstance(self.sampler, Sampler):
            raise TypeError("sampler must have a probabilities(model, X, y, weight) method (loop.Sampler)")
        if not (self.model is None or isinstance(self.model, (str, nn.Module))):
            raise TypeError(f"model must be None, 'mlp', 'cnn' or a torch.nn.Module, got {type(self.model).__name__}")

    def _input_kind(self) -> str:
        if self.inputs is not None:
            return self.inputs
        return "pixels" if self.model == "cnn" else "embeddings"

    def _build_model(self, X: torch.Tensor) -> nn.Module:
        if isinstance(self.model, nn.Module):
            return self.model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            return make_model(self.model or "mlp", X, len(self.session.classes), hidden=self.hidden)

    def split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions (into the labeled items) of the training and holdout parts, seeded."""
        n_val = int(round(float(self.holdout) * n)) if n >= 5 else 0
        perm = np.random.default_rng(int(self.seed)).permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def _steps_per_epoch(self, n_train: int) -> int:
        """Gradient steps per epoch: ``steps_per_epoch`` when given, else one pass over the training part
        but at least ``min_steps / epochs``, so that the whole budget is at least ``min_steps`` optimizer
        steps whatever the number of labels (66 labels are one step per epoch: 30 epochs underfit)."""
        if self.steps_per_epoch:
            return int(self.steps_per_epoch)
        one_pass = -(-max(int(n_train), 1) // int(self.batch_size))
        if not self._early_stopping():      # no guard against overfitting: epochs mean passes, as asked
            return one_pass
        return max(one_pass, -(-int(self.min_steps) // int(self.epochs)))

    def _early_stopping(self) -> bool:
        return self.patience is not None and len(self.split(len(self.data_))[1]) > 0

    # -- fit ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask a running ``fit`` to stop after the current step (thread-safe; the best weights so far stay)."""
        self._stop = True

    def _check(self, external: Callable[[], None] | None) -> None:
        if external is not None:
            external()
        if self._stop:
            raise _Stopped()

    def fit(self, check: Callable[[], None] | None = None) -> Trainer:
        """Train on the current labels; returns self. ``check()`` runs after every step and may raise to
        abort (a cancelled background job); ``stop()`` ends training early but keeps the model trained so
        far (``stopped_`` is then True)."""
        self._check_params()
        self._stop = False
        t0 = time.perf_counter()
        data = labeled_data(self.session, self.sources, self.propagated)
        if self.ids is not None:
            keep = np.isin(data.ids, self._ids(self.ids))
            data = LabeledData(data.ids[keep], data.y[keep], data.weight[keep], data.counts)
        if len(data) == 0:
            raise ValueError(f"nothing to train on: no item has a {'/'.join(self.sources)} label"
                             + (" or a propagated one" if self.propagated else "")
                             + f" ({data.counts['excluded']} excluded)")
        X_all = model_inputs(self.session, self._input_kind())
        model = self._build_model(X_all)
        tr, va = self.split(len(data))
        y = torch.as_tensor(data.y)
        w = torch.as_tensor(data.weight)
        Xl = X_all[torch.as_tensor(data.ids)]
        self.data_, self.X_, self.model_ = data, X_all, model
        self.train_ids_, self.val_ids_ = data.ids[tr], data.ids[va]
        self.classes_ = list(self.session.classes)
        rows: list[dict] = []
        snaps = _Snapshots(2 * int(self.checkpoints))

        def on_epoch(ep: int, row: dict, m: nn.Module) -> None:
            snaps.add(ep, m)
            rows.append(row)
            self.history_ = pd.DataFrame(rows)
            for cb in self.callbacks:
                cb(self, row)

        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(self.epochs), desc="train", leave=False)
        self.stopped_ = False
        try:
            hist = fit_loop(model, Xl[tr], y[tr], w[tr], (Xl[va], y[va]) if len(va) else None,
                            ids=self.train_ids_, epochs=int(self.epochs), lr=float(self.lr),
                            batch_size=int(self.batch_size), sampler=self.sampler, patience=self.patience,
                            seed=int(self.seed), steps_per_epoch=self._steps_per_epoch(len(tr)), on_epoch=on_epoch,
                            check=lambda: self._check(check), record=self.record, progress=bar)
        except _Stopped:
            self.stopped_ = True
            model.eval()
            hist = pd.DataFrame(rows, columns=["epoch", "loss", "val_loss", "val_acc", "steps"])
        finally:
            if bar is not None:
                bar.close()
        self.history_ = hist
        self.checkpoints_ = snaps.pick(int(self.checkpoints), _kept_epoch(hist, self.stopped_, len(va) > 0
                                                                         and self.patience is not None), model)
        self.holdout_ = self._holdout_score()
        self.fit_seconds_ = time.perf_counter() - t0
        if self.name:
            self.session.set_model(self.name, self)
        return self

    def refit(self, ids: Sequence[int], check: Callable[[], None] | None = None, **overrides: Any) -> Trainer:
        """A fresh copy of this trainer (same parameters and seed, a re-initialized model) fitted on ``ids``
        only, not stored in the session: the fold models of cross-fitting (calibrated confidences).
        ``overrides``: parameters to change in the copy (e.g. ``holdout=0.0``)."""
        import copy
        import inspect

        params = {k: getattr(self, k) for k in inspect.signature(Trainer.__init__).parameters if k != "self"}
        if isinstance(self.model, nn.Module):
            params["model"] = _reinitialized(self.model, int(self.seed))
        params.update(ids=np.asarray(ids, np.int64), name=None, progress=False, callbacks=(), record=None,
                      checkpoints=0, sampler=copy.deepcopy(self.sampler))
        params.update(overrides)
        return Trainer(**params).fit(check=check)

    def _people(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` carry a label from ``sources`` (people's labels: propagated ones are no truth)."""
        if not self.sources:
            return np.zeros(len(ids), bool)
        return self.session.label_vector(tuple(self.sources))[ids] >= 0

    @staticmethod
    def _rate(correct: int, n: int) -> dict[str, float]:
        """``correct`` of ``n`` as accuracy with its 95% Wilson interval (``low``, ``high``)."""
        low, high = wilson(correct, n)
        return {"accuracy": correct / n, "correct": int(correct), "n": int(n), "low": low, "high": high}

    def _holdout_score(self) -> dict[str, float]:
        """The kept model's accuracy on the holdout items that carry a label from ``sources`` (propagated
        labels are not ground truth), as ``correct`` of ``n`` with a 95% Wilson interval (``low``, ``high``):
        a 13-item holdout says 9/13 = 69% (42-87%), not "69%". The holdout also chose the early-stopping
        epoch, so the figure leans slightly optimistic; items never trained on are the unbiased check."""
        pos = np.searchsorted(self.data_.ids, self.val_ids_)
        mine = self._people(self.val_ids_)
        ids, y = self.val_ids_[mine], self.data_.y[pos][mine]
        if len(ids) == 0:
            return {"accuracy": float("nan"), "correct": 0, "n": 0, "low": float("nan"), "high": float("nan")}
        return self._rate(int((self.predict(ids) == y).sum()), len(ids))

    def cross_validate(self, k: int = 5, check: Callable[[], None] | None = None) -> dict[str, float] | None:
        """k-fold estimate of this trainer's accuracy when a holdout is too small to say much: every item
        with a people's label is predicted once by a fresh copy (``refit``) trained on the other folds, so
        the figure rests on all n labels instead of the 20% holdout (Kohavi, IJCAI 1995). Returns and keeps
        in ``cv_`` the dict of ``holdout_`` (``correct``/``n``, Wilson ``low``/``high``) plus ``k``; None
        when ``stop()`` was called meanwhile. Costs k trainings: meant for few labels, where they are cheap.
        Each fold model trains without a holdout on (k-1)/k of the labels for the kept model's number of
        steps: with k=5 as many training items as the kept model (which held out 20%), so the estimate is
        of a model trained like it; an inner holdout made it pessimistic (digits, 60 labels: 62% vs 75%)."""
        self._fitted()
        mine = self._people(self.data_.ids)
        ids, y = self.data_.ids[mine], self.data_.y[mine]
        k = int(k)
        if k < 2 or len(ids) < 2 * k:
            raise ValueError(f"{k}-fold cross-validation needs k >= 2 and at least {2 * max(k, 2)} people's "
                             f"labels, found {len(ids)}")
        fold = np.random.default_rng(int(self.seed) + 1).permutation(len(ids)) % k
        pred = np.empty(len(ids), np.int64)
        # each fold model is trained like the kept one: no inner holdout, the kept epoch's step budget
        same = dict(holdout=0.0, patience=None, steps_per_epoch=self._steps_per_epoch(len(self.train_ids_)),
                    epochs=max(1, _kept_epoch(self.history_, self.stopped_, len(self.val_ids_) > 0
                                              and self.patience is not None)))
        try:
            for f in range(k):
                fitted = self.refit(self.data_.ids[np.isin(self.data_.ids, ids[fold == f], invert=True)],
                                    check=lambda: self._check(check), **same)
                if self._stop:                     # the fold's fit ended early on our stop(): no estimate
                    raise _Stopped()
                pred[fold == f] = fitted.predict(ids[fold == f])
        except _Stopped:
            return None
        self.cv_ = {**self._rate(int((pred == y).sum()), len(ids)), "k": k}
        return self.cv_

    # -- use ---------------------------------------------------------------------------------------
    def _fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this Trainer is not fitted yet: call fit() (or load()) first")

    def _ids(self, ids: Sequence[int] | None) -> np.ndarray:
        from .._validate import check_ids

        return np.arange(len(self.session)) if ids is None else check_ids(ids, len(self.session))

    def predict_proba(self, ids: Sequence[int] | None = None) -> np.ndarray:
        """(len(ids), n_classes) class probabilities (all items when ids is None)."""
        self._fitted()
        ids = self._ids(ids)
        return torch.softmax(predict_logits(self.model_, self.X_[torch.as_tensor(ids)]), 1).numpy()

    def predict(self, ids: Sequence[int] | None = None) -> np.ndarray:
        """Predicted class index per item."""
        return self.predict_proba(ids).argmax(1)

    def evaluate(self, ids: Sequence[int] | None = None, y: Any = None) -> dict[str, float]:
        """Accuracy and mean cross-entropy on items (default: the holdout items) against ``y`` (class
        indices or names; default: their current labels from the trainer's sources)."""
        self._fitted()
        ids = self.val_ids_ if ids is None else self._ids(ids)
        if len(ids) == 0:
            raise ValueError("no items to evaluate (the holdout is empty: pass ids=)")
        if y is None:
            lv = self.session.label_vector(tuple(self.sources))[ids]
            if (lv < 0).any():
                raise ValueError(f"{int((lv < 0).sum())} of the {len(ids)} items have no "
                                 f"{'/'.join(self.sources)} label; pass y= to evaluate against other labels")
            yy = lv
        else:
            from .._validate import to_class_indices

            yy = np.asarray(to_class_indices(y, self.classes_, len(ids)), np.int64)
        logits = predict_logits(self.model_, self.X_[torch.as_tensor(ids)])
        t = torch.as_tensor(yy)
        return {"accuracy": float((logits.argmax(1) == t).float().mean()),
                "loss": float(F.cross_entropy(logits, t)), "n": int(len(ids))}

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save the weights (``torch.save`` of the state_dict, plus the class names)."""
        self._fitted()
        torch.save({"state_dict": self.model_.state_dict(), "classes": list(self.classes_)}, path)

    def load(self, path: str | os.PathLike) -> Trainer:
        """Load weights saved by ``save`` into this trainer's model (``weights_only=True``: no code runs)."""
        self._check_params()
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or "state_dict" not in blob:
            raise ValueError(f"{os.fspath(path)!r} is not a file written by Trainer.save")
        if list(blob.get("classes", [])) != list(self.session.classes):
            raise ValueError(f"the saved model's classes {blob.get('classes')} differ from the session's "
                             f"{list(self.session.classes)}")
        if not hasattr(self, "X_"):
            self.X_ = model_inputs(self.session, self._input_kind())
            self.model_ = self._build_model(self.X_)
            self.classes_ = list(self.session.classes)
            self.val_ids_ = np.zeros(0, np.int64)
        self.model_.load_state_dict(blob["state_dict"])
        self.model_.eval()
        return self

    def __repr__(self) -> str:
        state = f"{len(self.history_)} epochs" if hasattr(self, "history_") else "not fitted"
        return f"Trainer(model={self.model if isinstance(self.model, str) else type(self.model).__name__ if self.model is not None else 'mlp'}, {state})"


class _Snapshots:
    """Weight snapshots at epochs, at most ``cap``: when full the spacing doubles (only multiples of the
    new stride stay), so a 5,000-epoch run holds as few as a 10-epoch one, evenly spread."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.stride = 1
        self.items: list[tuple[int, dict]] = []

    def add(self, ep: int, m: nn.Module) -> None:
        if self.cap <= 0 or ep % self.stride:
            return
        self.items.append((ep, {k: v.detach().clone() for k, v in m.state_dict().items()}))
        while len(self.items) > self.cap:        # keep the epochs that are multiples of a doubled stride
            self.stride *= 2
            self.items = [(e, st) for e, st in self.items if e % self.stride == 0]

    def pick(self, n: int, kept: int, model: nn.Module) -> dict[str, dict]:
        """``n`` snapshots evenly spread over the epochs before ``kept``, ending with the model as kept."""
        if n <= 0:
            return {}
        before = [(ep, st) for ep, st in self.items if ep < kept]
        final = (kept, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if len(before) >= n:
            before = [before[int(j)] for j in np.unique(np.linspace(0, len(before) - 1, n - 1).round())] if n > 1 else []
        return {f"epoch-{ep}": st for ep, st in before + [final]}


def _reinitialized(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with fresh (seeded) parameters in every submodule that can reset them."""
    import copy

    m = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in m.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    return m


def _kept_epoch(hist: pd.DataFrame, stopped: bool, early: bool) -> int:
    """The epoch whose weights the model holds after fit: the lowest holdout loss with early stopping
    (``fit_loop`` restores it), else the last one."""
    if not len(hist):
        return 0
    if early and not stopped and hist["val_loss"].notna().any():
        return int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
    return int(hist["epoch"].iloc[-1])


class _Stopped(Exception):
    """Raised inside the loop when ``Trainer.stop()`` was called."""
