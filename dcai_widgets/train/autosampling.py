"""AutoSampling (Sun, Li, Qiao, Zhang, Wang, Ouyang & Liu, "AutoSampling: Search for Effective Data
Sampling Schedules", ICML 2021).

A sampling schedule is the per-item sampling distribution for each training segment. The search runs
``workers`` copies of the model in short cycles: each worker trains one cycle on batches drawn from its
own perturbed distribution; after the cycle the worker with the best validation accuracy wins and every
worker continues from its weights and optimizer state (multi-exploitation). Every ``explore_every``
cycles the base distribution is re-estimated from the winning schedules (the multinomial maximum-likelihood
estimate: how often each item was drawn in them, mixed with uniform so no item starves) and the workers'
distributions are perturbed around it (exploration; worker 0 keeps the estimate itself). The final model
has taken exactly ``cycles * steps_per_cycle`` gradient steps, like a baseline run at equal steps; the
search costs about ``workers`` such runs. No widget imports.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .loop import batch_loss, predict_logits, torch_threads

__all__ = ["AutoSampling"]


@dataclass
class _Worker:
    model: nn.Module
    opt: torch.optim.Optimizer
    p: np.ndarray


@dataclass
class AutoSampling:
    """The schedule search; ``fit(X, y, val)`` sets ``model_`` (the final winner), ``p_`` (the last base
    distribution), ``history_`` (cycle, winner, val_acc per worker) and ``seconds_``."""

    make_model: Callable[[], nn.Module]
    workers: int = 3
    cycles: int = 10
    steps_per_cycle: int = 50
    explore_every: int = 2
    sigma: float = 1.0
    mix: float = 0.5
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    seed: int = 0
    history_: pd.DataFrame = field(init=False, repr=False, default=None)

    def _check(self) -> None:
        for name in ("workers", "cycles", "steps_per_cycle", "explore_every", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a positive integer")
        if not 0.0 <= self.mix <= 1.0:
            raise ValueError(f"mix={self.mix!r} must be within [0, 1]")

    def _perturb(self, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = base * np.exp(self.sigma * rng.standard_normal(len(base)))
        return p / p.sum()

    def fit(self, X: torch.Tensor, y: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor],
            check: Callable[[], None] | None = None) -> AutoSampling:
        self._check()
        if len(X) == 0 or len(val[0]) == 0:
            raise ValueError("AutoSampling needs training items and validation items (it picks winners on them)")
        t0 = time.perf_counter()
        with torch_threads(1):
            self._search(X, y, val, check)
        self.seconds_ = time.perf_counter() - t0
        return self

    def _search(self, X, y, val, check) -> None:
        n = len(X)
        rng = np.random.default_rng(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            m0 = self.make_model()
        base = np.full(n, 1.0 / n)
        ws = []
        for k in range(int(self.workers)):
            m = copy.deepcopy(m0)
            ws.append(_Worker(m, torch.optim.Adam(m.parameters(), lr=self.lr, weight_decay=self.weight_decay),
                              base.copy() if k == 0 else self._perturb(base, rng)))
        w1 = torch.ones(n)
        draws = int(self.steps_per_cycle) * int(self.batch_size)
        won = np.zeros(n)
        rows = []
        for c in range(1, int(self.cycles) + 1):
            accs, scheds = [], []
            for wk in ws:
                idx = torch.multinomial(torch.from_numpy(wk.p), draws, replacement=True, generator=g)
                wk.model.train()
                for s in range(int(self.steps_per_cycle)):
                    b = idx[s * self.batch_size:(s + 1) * self.batch_size]
                    wk.opt.zero_grad()
                    batch_loss(wk.model, X[b], y[b], w1[b]).backward()
                    wk.opt.step()
                    if check is not None:
                        check()
                logits = predict_logits(wk.model, val[0])
                accs.append((float((logits.argmax(1) == val[1]).float().mean()),
                             -float(F.cross_entropy(logits, val[1]))))
                scheds.append(idx.numpy())
            best = max(range(len(ws)), key=lambda k: accs[k])
            won += np.bincount(scheds[best], minlength=n)
            rows.append({"cycle": c, "winner": best, "val_acc": accs[best][0],
                         **{f"val_acc_{k}": a[0] for k, a in enumerate(accs)}})
            state, ostate = ws[best].model.state_dict(), ws[best].opt.state_dict()
            for k, wk in enumerate(ws):           # multi-exploitation: everyone continues from the winner
                if k != best:
                    wk.model.load_state_dict(state)
                    wk.opt.load_state_dict(copy.deepcopy(ostate))
            if c % int(self.explore_every) == 0 and c < int(self.cycles):   # exploration
                mle = won / won.sum()
                base = (1 - self.mix) * mle + self.mix / n
                won[:] = 0
                for k, wk in enumerate(ws):
                    wk.p = base.copy() if k == 0 else self._perturb(base, rng)
            else:
                ws[best].p, ws[0].p = ws[0].p, ws[best].p   # worker 0 holds the winning schedule
        winner = ws[max(range(len(ws)), key=lambda k: accs[k])]
        self.model_ = winner.model.eval()
        self.p_ = base
        self.history_ = pd.DataFrame(rows)
        self.steps_ = int(self.cycles) * int(self.steps_per_cycle)
