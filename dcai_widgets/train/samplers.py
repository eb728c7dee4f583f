"""Sampling baselines for the training loop (see ``loop.Sampler``): uniform with replacement,
class-balanced (or any per-class weights), and loss-based importance sampling (Katharopoulos & Fleuret,
ICML 2018: draw items in proportion to their current loss, smoothed so none starves)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .loop import predict_logits

__all__ = ["UniformSampler", "ClassSampler", "LossSampler", "FixedSampler"]


class UniformSampler:
    """Every item equally likely, drawn with replacement (the baseline at a fixed number of steps)."""

    def probabilities(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
        return np.ones(len(X))


class ClassSampler:
    """Per-class sampling weights: None = class-balanced (each class drawn equally often); a mapping or
    sequence class index -> weight otherwise (weight 0: the class is never drawn)."""

    def __init__(self, weights: Mapping[int, float] | Sequence[float] | None = None):
        self.weights = weights

    def probabilities(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
        yy = y.numpy()
        k = int(yy.max()) + 1 if len(yy) else 0
        if self.weights is None:
            cw = 1.0 / np.maximum(np.bincount(yy, minlength=k), 1)
        elif isinstance(self.weights, Mapping):
            cw = np.array([float(self.weights.get(c, 0.0)) for c in range(k)])
        else:
            cw = np.zeros(k)
            given = np.asarray(self.weights, dtype=float)[:k]
            cw[:len(given)] = given
        p = cw[yy]
        if p.sum() <= 0:
            raise ValueError("the class weights give every labeled item probability 0")
        return p


class LossSampler:
    """Importance sampling by the current per-item loss (recomputed each epoch), mixed with uniform:
    p = (1 - smoothing) * loss / sum(loss) + smoothing / n."""

    def __init__(self, smoothing: float = 0.5):
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"smoothing={smoothing!r} must be within [0, 1]")
        self.smoothing = smoothing

    def probabilities(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
        loss = F.cross_entropy(predict_logits(model, X), y, reduction="none").numpy().astype(np.float64)
        loss = loss / loss.sum() if loss.sum() > 0 else np.full(len(loss), 1.0 / len(loss))
        return (1 - self.smoothing) * loss + self.smoothing / len(loss)


class FixedSampler:
    """A fixed per-item distribution over the training items (in the order the loop sees them)."""

    def __init__(self, p: np.ndarray):
        self.p = np.asarray(p, dtype=np.float64)

    def probabilities(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
        if len(self.p) != len(X):
            raise ValueError(f"the fixed distribution has {len(self.p)} entries for {len(X)} training items")
        return self.p
