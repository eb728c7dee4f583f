"""Selection via Proxy (Coleman, Yeh, Mussmann, Mirzasoleiman, Bailis, Liang, Leskovec & Zaharia, "Selection
via Proxy: Efficient Data Selection for Deep Learning", ICLR 2020).

A cheap proxy (a linear model on the embeddings, a smaller model, fewer epochs) is trained on the labeled
set and ranks it; the top fraction is kept and the expensive target model trains only on that. The
rankings are the paper's core-set criteria:

- ``"entropy"``: predictive entropy after training (uncertain items are kept);
- ``"forgetting"``: forgetting events (Toneva et al., ICLR 2019): how often an item goes from correctly
  to wrongly classified between epochs; items never learned count as forgotten every epoch;
- ``"kcenter"``: greedy k-centers on the proxy's penultimate features (Sener & Savarese, ICLR 2018);
  items picked earlier rank higher (only the first ``budget`` are ordered; the rest tie at 0).

``spearman`` reports how well a proxy's scores agree with the target's. No widget imports.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .loop import fit_loop, predict_logits, torch_threads

__all__ = ["METHODS", "SelectionViaProxy", "select_labeled", "selection_scores", "kcenter_greedy", "spearman"]

METHODS = ("entropy", "forgetting", "kcenter")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two score vectors (ties get average ranks)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def kcenter_greedy(F: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """Greedy k-centers: indices of ``budget`` rows of ``F``, each the farthest from those chosen before
    (the first is a seeded random row). O(budget * n * d)."""
    n = len(F)
    budget = min(int(budget), n)
    F = torch.as_tensor(np.asarray(F, np.float32))
    first = int(np.random.default_rng(seed).integers(n))
    chosen = [first]
    d = torch.cdist(F, F[first:first + 1]).squeeze(1)
    for _ in range(budget - 1):
        nxt = int(torch.argmax(d))
        chosen.append(nxt)
        d = torch.minimum(d, torch.cdist(F, F[nxt:nxt + 1]).squeeze(1))
    return np.asarray(chosen, np.int64)


def _penultimate(model: nn.Module, X: torch.Tensor) -> np.ndarray:
    """Inputs of the model's last Linear layer (its learned features); the logits for a single Linear."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last or last[-1] is model:
        return predict_logits(model, X).numpy()
    got: list[torch.Tensor] = []
    h = last[-1].register_forward_hook(lambda m, inp, out: got.append(inp[0].detach()))
    try:
        predict_logits(model, X)
    finally:
        h.remove()
    return torch.cat(got).numpy()


def selection_scores(make: Callable[[], nn.Module], X: torch.Tensor, y: torch.Tensor, method: str = "entropy",
                     epochs: int = 3, budget: int | None = None, seed: int = 0, lr: float = 1e-3,
                     batch_size: int = 64) -> np.ndarray:
    """Train ``make()`` (seeded) on all of (X, y) and score every item by ``method`` (higher = keep)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {METHODS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
    correct_prev = torch.zeros(len(X), dtype=torch.bool)
    forgets = torch.zeros(len(X))
    ever = torch.zeros(len(X), dtype=torch.bool)

    def track(ep: int, row: dict, m: nn.Module) -> None:
        nonlocal correct_prev
        c = predict_logits(m, X).argmax(1) == y
        forgets.add_((correct_prev & ~c).float())
        ever.logical_or_(c)
        correct_prev = c

    fit_loop(model, X, y, torch.ones(len(X)), None, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
             patience=None, on_epoch=track if method == "forgetting" else None)
    if method == "entropy":
        with torch_threads(1):
            p = torch.softmax(predict_logits(model, X), 1)
        return (-(p * torch.log(p.clamp_min(1e-12))).sum(1)).numpy()
    if method == "forgetting":
        f = forgets.numpy().astype(np.float64)
        f[~ever.numpy()] = epochs + 1          # never learned: ranked above every forgotten item
        return f
    with torch_threads(1):
        feats = _penultimate(model, X)
    order = kcenter_greedy(feats, budget if budget is not None else len(X), seed=seed)
    score = np.zeros(len(X))
    score[order] = np.arange(len(order), 0, -1, dtype=np.float64)
    return score


@dataclass
class SelectionViaProxy:
    """Rank the labeled set with a cheap proxy and keep the top ``fraction``.

    ``make_proxy()`` builds the untrained proxy model (e.g. ``lambda: nn.Linear(d, k)`` on embeddings);
    ``epochs``: its (few) training epochs. ``fit(X, y)`` sets ``scores_`` (higher = keep), ``selected_``
    (indices of the kept items, best first) and ``seconds_`` (time to select)."""

    make_proxy: Callable[[], nn.Module]
    method: str = "entropy"
    fraction: float = 0.5
    epochs: int = 3
    seed: int = 0
    lr: float = 1e-3
    batch_size: int = 64

    def fit(self, X: torch.Tensor, y: torch.Tensor) -> SelectionViaProxy:
        if not 0.0 < float(self.fraction) <= 1.0:
            raise ValueError(f"fraction={self.fraction!r} must be within (0, 1]")
        if len(X) != len(y) or len(X) == 0:
            raise ValueError(f"X and y must be non-empty and of equal length, got {len(X)} and {len(y)}")
        t0 = time.perf_counter()
        keep = max(1, int(round(float(self.fraction) * len(X))))
        self.scores_ = selection_scores(self.make_proxy, X, y, self.method, epochs=self.epochs, budget=keep,
                                        seed=self.seed, lr=self.lr, batch_size=self.batch_size)
        self.selected_ = np.argsort(-self.scores_, kind="stable")[:keep]
        self.seconds_ = time.perf_counter() - t0
        return self


def select_labeled(session: Any, fraction: float = 0.5, method: str = "entropy", epochs: int = 3,
                   sources: tuple[str, ...] = ("human", "review"), hidden: int = 64,
                   seed: int = 0) -> SelectionViaProxy:
    """Selection via Proxy over a session's current labels (excluded items left out): the proxy is a small
    MLP (``hidden`` units; 0 = linear) on the embeddings. Returns the fitted selector with ``ids_`` (the
    chosen item ids, best first) for ``Trainer(session, ids=sel.ids_)``."""
    from .data import labeled_data, make_model, model_inputs

    data = labeled_data(session, sources)
    if len(data) == 0:
        raise ValueError(f"nothing to select from: no item has a {'/'.join(sources)} label")
    X = model_inputs(session, "embeddings")[torch.as_tensor(data.ids)]
    k = len(session.classes)
    sel = SelectionViaProxy(lambda: make_model("mlp", X, k, hidden=hidden), method=method, fraction=fraction,
                            epochs=epochs, seed=seed).fit(X, torch.as_tensor(data.y))
    sel.ids_ = data.ids[sel.selected_]
    return sel
