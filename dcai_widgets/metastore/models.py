"""Small models the Inspect panel and the benchmarks train (a CNN for images, an MLP for feature vectors)
and their training loop: plain SGD with per-epoch callbacks (the setting TracIn-CP assumes) and optional
per-sample weights. No widget imports."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "SmallCNN", "train"]


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
          batch_size: int = 32, seed: int = 0, on_epoch: Callable[[int, nn.Module], None] | None = None,
          weight: torch.Tensor | None = None) -> nn.Module:
    """Plain SGD (the setting TracIn-CP assumes); ``on_epoch(epoch, model)`` runs after each epoch.

    ``weight`` (n,) in [0, 1] scales each item's loss (e.g. a propagated label's confidence); the batch
    loss is the weighted sum over the batch divided by the batch size."""
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} items but y has {len(y)} labels")
    if len(X) == 0:
        raise ValueError("nothing to train on: X is empty")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for s in range(0, len(X), batch_size):
            b = perm[s:s + batch_size]
            opt.zero_grad()
            if weight is None:
                F.cross_entropy(model(X[b]), y[b]).backward()
            else:
                (F.cross_entropy(model(X[b]), y[b], reduction="none") * weight[b]).mean().backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(ep + 1, model)
    model.eval()
    return model


