"""The training loop behind ``Trainer``, ``SelectionViaProxy`` and ``AutoSampling``: mini-batch Adam on a
weighted cross-entropy, batches drawn by a ``Sampler`` (uniform shuffling when none), holdout validation
after each epoch, early stopping on the validation loss with the best weights restored. No widget imports.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Sampler", "EpochContext", "fit_loop", "predict_logits", "batch_loss", "torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` intra-op threads, then restore. Small models train fastest on one thread; on the
    shared 2-core box two threads made 80 steps of the small CNN take 32 s instead of 0.26 s (thread
    hand-offs starve under load)."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@runtime_checkable
class Sampler(Protocol):
    """Chooses how often each training item is drawn in the next epoch.

    ``probabilities(model, X, y, weight)`` gets the training items' inputs, labels and weights (tensors)
    and returns an (n,) array of non-negative sampling weights (normalized by the loop; items with 0 are
    never drawn), or None for plain uniform shuffling without replacement."""

    def probabilities(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor,
                      weight: torch.Tensor) -> np.ndarray | None: ...


class EpochContext(Protocol):
    """What ``record(epoch)`` returns: a context manager whose ``step(ids, y)`` runs after each backward
    (``MetaStore.record(...)`` is one: its ``Recorder`` stores the factors of each batch)."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> Any: ...


def predict_logits(model: nn.Module, X: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    """Logits for all rows of ``X`` in eval mode, without gradients."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(X[s:s + batch]) for s in range(0, len(X), batch)]) if len(X) else torch.zeros(0)
    model.train(was)
    return out


def batch_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The weighted cross-entropy of a batch: sum(w_i * CE_i) / batch size (w = 1: the plain mean)."""
    return (F.cross_entropy(model(X), y, reduction="none") * w).mean()


def _draw(sampler: Sampler | None, model, X, y, w, n_draw: int, g: torch.Generator) -> torch.Tensor:
    n = len(X)
    p = None if sampler is None else sampler.probabilities(model, X, y, w)
    if p is None:
        reps = -(-n_draw // n)
        return torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[:n_draw]
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if p.shape != (n,) or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"the sampler must return {n} finite non-negative weights with a positive sum")
    return torch.multinomial(torch.from_numpy(p), n_draw, replacement=True, generator=g)


def fit_loop(model: nn.Module, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
             val: tuple[torch.Tensor, torch.Tensor] | None = None, *, ids: np.ndarray | None = None,
             epochs: int = 30, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 64,
             sampler: Sampler | None = None, patience: int | None = 5, seed: int = 0,
             steps_per_epoch: int | None = None,
             on_epoch: Callable[[int, dict, nn.Module], None] | None = None,
             check: Callable[[], None] | None = None,
             record: Callable[[int], EpochContext] | None = None,
             progress: Any = None, threads: int | None = 1) -> pd.DataFrame:
    """Train ``model`` in place; return the history (epoch, loss, val_loss, val_acc, steps).

    ``steps_per_epoch`` gradient steps per epoch (default: one pass, ceil(n / batch_size)); with ``val``
    and ``patience`` training stops after ``patience`` epochs without a lower validation loss and the best
    epoch's weights are restored. ``check()`` runs after every step (it may raise to stop, e.g. a cancelled
    background job or the Stop button); ``record(epoch)`` wraps an epoch (``MetaStore.record``-style);
    ``on_epoch(epoch, row, model)`` runs after each epoch with the history row. ``progress``: a tqdm bar
    (updated per epoch) or None. ``threads``: torch intra-op threads while training (None: unchanged)."""
    with torch_threads(threads):
        return _fit(model, X, y, w, val, ids, epochs, lr, weight_decay, batch_size, sampler, patience, seed,
                    steps_per_epoch, on_epoch, check, record, progress)


def _fit(model, X, y, w, val, ids, epochs, lr, weight_decay, batch_size, sampler, patience, seed,
         steps_per_epoch, on_epoch, check, record, progress) -> pd.DataFrame:
    if len(X) == 0:
        raise ValueError("nothing to train on: no labeled item is left (label some, or include other sources)")
    if len(X) != len(y) or len(y) != len(w):
        raise ValueError(f"X, y and weight differ in length: {len(X)}, {len(y)}, {len(w)}")
    ids = np.arange(len(X)) if ids is None else np.asarray(ids)
    g = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = int(steps_per_epoch) if steps_per_epoch else -(-len(X) // batch_size)
    rows: list[dict] = []
    best, best_state, since = float("inf"), None, 0
    for ep in range(1, int(epochs) + 1):
        model.train()
        order = _draw(sampler, model, X, y, w, steps * batch_size, g)
        total, seen = 0.0, 0
        ctx = record(ep) if record is not None else contextlib.nullcontext()
        with ctx as rec:
            for s in range(steps):
                b = order[s * batch_size:(s + 1) * batch_size]
                if len(b) == 0:
                    break
                opt.zero_grad()
                loss = batch_loss(model, X[b], y[b], w[b])
                loss.backward()
                if rec is not None:
                    rec.step(ids[b.numpy()], y[b])
                opt.step()
                total += float(loss.detach()) * len(b)
                seen += len(b)
                if check is not None:
                    check()
        row = {"epoch": ep, "loss": total / max(seen, 1), "val_loss": float("nan"), "val_acc": float("nan"),
               "steps": ep * steps}
        if val is not None and len(val[0]):
            logits = predict_logits(model, val[0])
            row["val_loss"] = float(F.cross_entropy(logits, val[1]))
            row["val_acc"] = float((logits.argmax(1) == val[1]).float().mean())
        rows.append(row)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{row['loss']:.3f}", val_acc=f"{row['val_acc']:.3f}")
        if on_epoch is not None:
            on_epoch(ep, row, model)
        if val is not None and len(val[0]) and patience is not None:
            v = row["val_loss"]
            since = 0 if not np.isfinite(best) or v < best - 1e-4 * abs(best) else since + 1   # patience counts real improvements
            if v < best:                                               # the weights kept: the lowest loss
                best = v
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            if since >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return pd.DataFrame(rows, columns=["epoch", "loss", "val_loss", "val_acc", "steps"])
