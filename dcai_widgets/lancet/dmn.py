"""Distribution matching network (DMN) with online weight approximation (LANCET, sec. 5).

A small classifier learns to tell labeled from unlabeled embeddings while one weight per unlabeled
item is moved to *maximise* its weighted loss: alternately one gradient step on the network and one on
the weights (clamped at zero, normalised to mean 1). Unlabeled items the network separates easily —
those with no labeled item nearby — end with the smallest weights and are the next candidates; when
the weighted loss reaches chance (ln 2 per item) the two distributions cannot be told apart.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._threads import torch_threads

CHANCE = math.log(2.0)


class DMN:
    """Labeled-vs-unlabeled discriminator with adversarial per-item weights on the unlabeled half.

    ``weight_lr`` is the total drift: over a fit a weight moves by about ``weight_lr`` times how much
    its item's loss exceeds the batch mean (items the DMN finds clearly unlabeled sink to 0).
    """

    def __init__(self, hidden: int = 64, steps: int = 300, lr: float = 1e-2, weight_lr: float = 3.0,
                 weight_decay: float = 1e-3, batch_size: int = 1024, n_threads: int | None = 1, seed: int = 0):
        self.hidden = hidden
        self.steps = steps
        self.lr = lr
        self.weight_lr = weight_lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.seed = seed
        self.n_threads = n_threads

    def fit(self, z_lab: np.ndarray, z_unl: np.ndarray, progress=None) -> "DMN":
        """Alternate network and weight steps (see ``_fit``) with ``n_threads`` torch threads."""
        with torch_threads(self.n_threads):
            return self._fit(z_lab, z_unl, progress)

    def _fit(self, z_lab: np.ndarray, z_unl: np.ndarray, progress=None) -> "DMN":
        """Alternate network and weight steps; learned: ``net_``, ``weights_`` (n_unl,), ``loss_``,
        ``per_item_loss_`` (n_unl,), ``order_`` (unlabeled positions, lowest weight first)."""
        if len(z_lab) == 0 or len(z_unl) == 0:
            raise ValueError("the DMN needs at least one labeled and one unlabeled item")
        g = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        zl = torch.as_tensor(z_lab, dtype=torch.float32)
        zu = torch.as_tensor(z_unl, dtype=torch.float32)
        mu, sd = zu.mean(0), zu.std(0) + 1e-6
        zl, zu = (zl - mu) / sd, (zu - mu) / sd
        d = zl.shape[1]
        self.net_ = nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1))
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        n_u = len(zu)
        w = torch.ones(n_u)
        bs = min(self.batch_size, n_u)
        # per-visit step so that the total drift of a weight is ``weight_lr`` times its mean excess loss,
        # whatever the number of steps, batch size and items
        eta = self.weight_lr * n_u / (self.steps * bs)
        for _ in range(self.steps):
            idx = torch.randint(0, n_u, (bs,), generator=g)
            jdx = torch.randint(0, len(zl), (min(bs, max(len(zl), 64)),), generator=g)
            # step on the network: minimise the weighted loss
            loss_l = F.binary_cross_entropy_with_logits(self.net_(zl[jdx]).squeeze(1), torch.ones(len(jdx)))
            per_u = F.binary_cross_entropy_with_logits(self.net_(zu[idx]).squeeze(1), torch.zeros(bs),
                                                       reduction="none")
            loss = 0.5 * (loss_l + (w[idx] * per_u).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            # step on the weights: ascend the weighted loss (d loss / d w_i = per-item loss), clamp, normalise
            with torch.no_grad():
                per_u = per_u.detach()
                w[idx] = torch.clamp(w[idx] + eta * (per_u - per_u.mean()), min=0.0)
                w *= n_u / w.sum().clamp_min(1e-12)
            if progress is not None:
                progress.update(1)
        self.weights_ = w.numpy().astype(np.float64)
        with torch.no_grad():
            self.loss_ = float(self._weighted_loss(zl, zu, w))
            self.per_item_loss_ = F.binary_cross_entropy_with_logits(
                self.net_(zu).squeeze(1), torch.zeros(n_u), reduction="none").numpy()
        # many weights end clamped at 0: among equals, the item the DMN finds most clearly unlabeled first
        self.order_ = np.lexsort((self.per_item_loss_, self.weights_))
        return self

    def _weighted_loss(self, zl: torch.Tensor, zu: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Per-item weighted loss, labeled and unlabeled halves averaged (chance = ln 2)."""
        ll = F.binary_cross_entropy_with_logits(self.net_(zl).squeeze(1), torch.ones(len(zl)))
        lu = F.binary_cross_entropy_with_logits(self.net_(zu).squeeze(1), torch.zeros(len(zu)), reduction="none")
        return 0.5 * (ll + (w * lu).mean())
