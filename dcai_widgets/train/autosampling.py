"""AutoSampling (Sun, Li, Qiao, Zhang, Wang, Ouyang & Liu, "AutoSampling: Search for Effective Data
Sampling Schedules", ICML 2021).

A sampling schedule is the sampling distribution for each training segment. The search runs ``workers``
copies of the model in short cycles: each worker trains one cycle on batches drawn from its own perturbed
distribution; after the cycle the worker with the best validation accuracy wins and every worker
continues from its weights and optimizer state (multi-exploitation). Every ``explore_every`` cycles the
base distribution is re-estimated from the winning schedules and the workers' distributions are perturbed
around it (exploration; worker 0 keeps the estimate itself). Two search spaces:

- ``space="items"`` (the paper's): a free per-item distribution; the estimate is the multinomial
  maximum-likelihood one (how often each item was drawn in the winning schedules, mixed with uniform so
  no item starves) and workers perturb it per item (lognormal, ``sigma``). With a few thousand items and
  one pass of draws per cycle most items are drawn at most once by a winner, so the estimate is mostly
  noise (benchmarks/RESULTS.md: below uniform on MNIST and CIFAR10_0).
- ``space="loss"`` (default): the distribution family p_i ∝ (loss_i + eps)^alpha mixed with uniform
  (``mix``), one exponent per worker: alpha = 0 is uniform sampling, alpha = 1 loss-proportional
  importance sampling (Katharopoulos & Fleuret, ICML 2018), larger alphas focus harder. The estimate from
  the winning schedules is the mean of their exponents; workers perturb it (normal, ``sigma``, clipped
  to [0, ``alpha_max``]). The search is over how hard to focus in each segment, a few numbers the
  validation set can tell apart, instead of thousands it cannot. ``loss_refresh="cycle"`` (default)
  computes the per-item losses once per cycle (every worker holds the winner's weights then: one forward
  pass over the training items); ``"batches"`` uses the losses last seen in training, as in prioritized
  experience replay (Schaul et al., ICLR 2016): one pass at the start, then the winner's batch losses
  update the items it drew, so the search adds no forward passes (cheaper, but it scored lower on both
  benchmark sets: RESULTS.md).

``warmup`` (default 1) cycles train worker 0 alone with the starting schedule before the search: at
initialization every item's loss is about ln(classes), so every exponent draws nearly the uniform
distribution and a search there compares copies of one schedule (measured on MNIST / CIFAR10_0: alpha = 1
is 0.014-0.017 in total variation from uniform at initialization, 0.10-0.11 after 100 steps); the others
then start from the warmed-up weights. ``search_cycles`` (None: all): after that many cycles the winner
trains alone with the last estimate for the remaining cycles (the final model is then that worker). The
search costs about ``(warmup + workers * (search_cycles - warmup) + cycles - search_cycles) / cycles``
runs of gradient steps (2.8 with the defaults: 3 workers, 10 cycles), plus one validation pass per
worker and one loss pass over the training items per cycle (~3% of the CPU time on the benchmark sets).

``final="average"`` (default): the final model is the mean of the workers' weights after the last
cycle (all of them started that cycle from the same winner's weights, so their mean lies in one basin:
a "uniform soup", Wortsman et al., ICML 2022; Izmailov et al., UAI 2018 for averaging along one run).
It varies less from seed to seed than any single worker, whose weights carry the noise of its own last
cycle of draws (benchmarks/RESULTS.md, "Train, third pass"). ``final="last"``: the last cycle's
winner, as before. Either way the final model has taken ``cycles * steps_per_cycle`` gradient steps'
worth of updates, like a baseline run at equal steps. No widget imports.
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

from .loop import predict_logits, torch_threads

__all__ = ["AutoSampling", "SPACES", "FINALS"]

SPACES = ("loss", "items")
FINALS = ("average", "last")


@dataclass
class _Worker:
    model: nn.Module
    opt: torch.optim.Optimizer
    p: np.ndarray | None = None       # items space: the per-item distribution
    alpha: float = 0.0                # loss space: the exponent


@dataclass
class AutoSampling:
    """The schedule search; ``fit(X, y, val)`` sets ``model_`` (the final model: the mean of the last
    cycle's workers, or the last winner with ``final="last"``), ``p_`` (the last base
    distribution over the training items), ``alpha_`` (loss space: the last estimated exponent),
    ``loss_`` (loss space: the last seen loss of each training item; None in the items space),
    ``history_`` (cycle, winner, val_acc per worker, alpha per worker) and ``seconds_``."""

    make_model: Callable[[], nn.Module]
    workers: int = 3
    cycles: int = 10
    steps_per_cycle: int = 50
    explore_every: int = 2
    space: str = "loss"
    sigma: float | None = None        # None: 0.5 (loss space) / 1.0 (items space)
    mix: float = 0.5
    alpha_max: float = 3.0
    search_cycles: int | None = None
    loss_refresh: str = "cycle"
    final: str = "average"
    warmup: int = 1
    eps: float = 1e-3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    seed: int = 0
    history_: pd.DataFrame = field(init=False, repr=False, default=None)

    def _check(self) -> None:
        for name in ("workers", "cycles", "steps_per_cycle", "explore_every", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a positive integer")
        if self.loss_refresh not in ("cycle", "batches"):
            raise ValueError(f"loss_refresh={self.loss_refresh!r}: use 'cycle' or 'batches'")
        if self.space not in SPACES:
            raise ValueError(f"space={self.space!r}: use one of {SPACES}")
        if not 0.0 <= self.mix <= 1.0:
            raise ValueError(f"mix={self.mix!r} must be within [0, 1]")
        if self.search_cycles is not None and not 1 <= int(self.search_cycles) <= int(self.cycles):
            raise ValueError(f"search_cycles={self.search_cycles!r} must be within 1..cycles ({self.cycles}) or None")
        if self.final not in FINALS:
            raise ValueError(f"final={self.final!r}: use one of {FINALS}")
        last = int(self.search_cycles or self.cycles)
        if not 0 <= int(self.warmup) < last:
            raise ValueError(f"warmup={self.warmup!r} must be within 0..{last - 1} (a cycle must be left to search)")

    @property
    def _sigma(self) -> float:
        return float(self.sigma) if self.sigma is not None else (0.5 if self.space == "loss" else 1.0)

    # -- schedules -----------------------------------------------------------------------------------
    def _perturb(self, wk: _Worker, base_p: np.ndarray, base_alpha: float, rng: np.random.Generator) -> None:
        if self.space == "items":
            p = base_p * np.exp(self._sigma * rng.standard_normal(len(base_p)))
            wk.p = p / p.sum()
        else:
            wk.alpha = float(np.clip(base_alpha + self._sigma * rng.standard_normal(), 0.0, self.alpha_max))

    def _distribution(self, wk: _Worker, loss: np.ndarray | None) -> np.ndarray:
        if self.space == "items":
            return wk.p
        q = (loss + self.eps) ** wk.alpha
        q = q / q.sum()
        return (1 - self.mix) * q + self.mix / len(q)

    # -- fit -----------------------------------------------------------------------------------------
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

    def _train_cycle(self, wk: _Worker, p: np.ndarray, X, y, g, check) -> tuple[np.ndarray, np.ndarray]:
        """One cycle of ``steps_per_cycle`` steps on batches drawn from ``p``; returns the items drawn and
        each draw's loss at the step it was used (before that step's update)."""
        draws = int(self.steps_per_cycle) * int(self.batch_size)
        idx = torch.multinomial(torch.from_numpy(p), draws, replacement=True, generator=g)
        seen = np.empty(draws)
        wk.model.train()
        for s in range(int(self.steps_per_cycle)):
            sl = slice(s * self.batch_size, (s + 1) * self.batch_size)
            b = idx[sl]
            wk.opt.zero_grad()
            per = F.cross_entropy(wk.model(X[b]), y[b], reduction="none")
            per.mean().backward()
            wk.opt.step()
            seen[sl] = per.detach().numpy()
            if check is not None:
                check()
        return idx.numpy(), seen

    @staticmethod
    def _losses(model: nn.Module, X, y) -> np.ndarray:
        return F.cross_entropy(predict_logits(model, X), y, reduction="none").numpy().astype(np.float64)

    @staticmethod
    def _average(models: list[nn.Module]) -> dict:
        """The mean of the models' floating-point weights and buffers (integer buffers from the first)."""
        sds = [m.state_dict() for m in models]
        return {k: (torch.stack([sd[k] for sd in sds]).mean(0) if t.is_floating_point() else t.clone())
                for k, t in sds[0].items()}

    @staticmethod
    def _copy(src: _Worker, dst: _Worker) -> None:
        dst.model.load_state_dict(src.model.state_dict())
        dst.opt.load_state_dict(copy.deepcopy(src.opt.state_dict()))

    def _search(self, X, y, val, check) -> None:
        n = len(X)
        rng = np.random.default_rng(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            m0 = self.make_model()
        base_p, base_alpha = np.full(n, 1.0 / n), 0.0
        ws = []
        for k in range(int(self.workers)):
            m = copy.deepcopy(m0)
            wk = _Worker(m, torch.optim.Adam(m.parameters(), lr=self.lr, weight_decay=self.weight_decay),
                         base_p.copy(), base_alpha)
            if k:
                self._perturb(wk, base_p, base_alpha, rng)
            ws.append(wk)
        won, won_alpha = np.zeros(n), []
        loss = self._losses(ws[0].model, X, y) if self.space == "loss" else None   # last seen per-item losses
        warmup, search, cycles = int(self.warmup), int(self.search_cycles or self.cycles), int(self.cycles)
        rows = []
        for c in range(1, cycles + 1):
            active = ws if warmup < c <= search else ws[:1]
            if loss is not None and self.loss_refresh == "cycle" and c > 1:
                loss = self._losses(ws[0].model, X, y)
            accs, scheds = [], []
            for wk in active:
                scheds.append(self._train_cycle(wk, self._distribution(wk, loss), X, y, g, check))
                if len(active) > 1:
                    logits = predict_logits(wk.model, val[0])
                    accs.append((float((logits.argmax(1) == val[1]).float().mean()),
                                 -float(F.cross_entropy(logits, val[1]))))
            if len(active) == 1:        # warm-up, or the winner training alone after the search
                if loss is not None:
                    loss[scheds[0][0]] = scheds[0][1]
                rows.append({"cycle": c, "winner": 0, "val_acc": float("nan"), "alpha_0": ws[0].alpha})
                if c == warmup:         # the search starts: every worker from the warmed-up weights
                    for wk in ws[1:]:
                        self._copy(ws[0], wk)
                continue
            best = max(range(len(active)), key=lambda k: accs[k])
            won += np.bincount(scheds[best][0], minlength=n)
            if loss is not None:       # later draws of an item overwrite earlier ones: its latest loss stays
                loss[scheds[best][0]] = scheds[best][1]
            won_alpha.append(ws[best].alpha)
            rows.append({"cycle": c, "winner": best, "val_acc": accs[best][0],
                         **{f"val_acc_{k}": a[0] for k, a in enumerate(accs)},
                         **{f"alpha_{k}": wk.alpha for k, wk in enumerate(ws)}})
            if c == cycles and self.final == "average":      # the workers' mean weights are the final model
                ws[best].model.load_state_dict(self._average([wk.model for wk in ws]))
            for k, wk in enumerate(ws):           # multi-exploitation: everyone continues from the winner
                if k != best:
                    self._copy(ws[best], wk)
            ws[best].p, ws[0].p = ws[0].p, ws[best].p          # worker 0 holds the winning schedule
            ws[best].alpha, ws[0].alpha = ws[0].alpha, ws[best].alpha
            if (c % int(self.explore_every) == 0 or c == search) and c < cycles:   # exploration
                base_p = (1 - self.mix) * won / won.sum() + self.mix / n
                base_alpha = float(np.mean(won_alpha))
                won[:], won_alpha = 0, []
                for k, wk in enumerate(ws):
                    wk.p, wk.alpha = base_p.copy(), base_alpha
                    if k and c < search:
                        self._perturb(wk, base_p, base_alpha, rng)
        self.model_ = ws[0].model.eval()
        if loss is not None and self.loss_refresh == "cycle":
            loss = self._losses(self.model_, X, y)
        self.p_ = base_p if self.space == "items" else self._distribution(
            _Worker(ws[0].model, ws[0].opt, None, base_alpha), loss)
        self.alpha_ = base_alpha
        self.loss_ = loss
        self.history_ = pd.DataFrame(rows)
        self.steps_ = cycles * int(self.steps_per_cycle)
