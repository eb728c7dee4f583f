"""Deep anomaly models ELITE trains: Deep SVDD (MLP or small conv net) and an autoencoder.

Deep SVDD (Ruff et al., "Deep One-Class Classification", ICML 2018): a network without bias terms maps
items into a space where normal data lie near a centre ``c`` fixed from the untrained network's first
pass; the anomaly score is the squared distance to ``c``. Bias terms (and a free centre) would let the
network map every input onto ``c`` (the "hypersphere collapse" the paper proves), so none are used and
``c``'s near-zero coordinates are pushed to +-eps as in the reference implementation.
The autoencoder scores an item by its mean squared reconstruction error.

Every model exposes ``score(params, x)`` as a pure function of its parameters (``torch.func``), which
is what ALICE's look-ahead step differentiates through.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.func import functional_call


@runtime_checkable
class AnomalyModel(Protocol):
    """What ELITE needs of a backbone: parameters, a one-time setup on the training data, and a score."""

    def parameters(self): ...

    def setup(self, x: torch.Tensor) -> None:
        """One pass over the training inputs before training (Deep SVDD fixes its centre here)."""

    def score_with(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """(n,) anomaly scores of ``x`` under ``params`` (higher = more anomalous)."""


def _mlp(dims: list[int], bias: bool, last_act: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(dims) - 2 or last_act:
            layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class SVDD(nn.Module):
    """Deep SVDD over a representation network ``net`` (which must have no bias terms).

    ``setup(x)`` fixes the centre ``c`` to the mean representation of ``x`` under the untrained network,
    coordinates with ``|c_j| < eps`` set to ``+-eps`` (Ruff et al.'s reference code)."""

    def __init__(self, net: nn.Module, eps: float = 0.1) -> None:
        super().__init__()
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                raise ValueError(f"Deep SVDD needs a network without bias terms (Ruff et al. 2018); {name!r} "
                                 "is a bias: build the layers with bias=False")
        self.net = net
        self.eps = float(eps)
        self.register_buffer("c", torch.zeros(0))

    @torch.no_grad()
    def setup(self, x: torch.Tensor) -> None:
        reps = torch.cat([self.net(x[i:i + 1024]) for i in range(0, len(x), 1024)])
        c = reps.mean(0)
        small = c.abs() < self.eps
        c[small & (c < 0)] = -self.eps
        c[small & (c >= 0)] = self.eps
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.c.numel() == 0:
            raise RuntimeError("Deep SVDD's centre is not set; call setup(x) on the training data first")
        return ((self.net(x) - self.c) ** 2).sum(1)

    def score_with(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self, params, (x,))


class AutoEncoder(nn.Module):
    """MLP autoencoder; the anomaly score is the mean squared reconstruction error per item."""

    def __init__(self, d: int, hidden: tuple[int, ...] = (64, 16)) -> None:
        super().__init__()
        dims = [d, *hidden]
        self.encoder = _mlp(dims, bias=True)
        self.decoder = _mlp(dims[::-1], bias=True)

    def setup(self, x: torch.Tensor) -> None:  # nothing to fix before training
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.decoder(self.encoder(x)) - x) ** 2).mean(1)

    def score_with(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self, params, (x,))


class ConvNet(nn.Module):
    """A small bias-free LeNet-style conv net for raw images (Ruff et al.'s CIFAR-10 network, narrower):
    two 5x5 conv + LeakyReLU + 2x2 max-pool blocks, then a linear map. The paper's BatchNorm layers are
    left out: batch statistics would make an item's score depend on its batch (and on the 20-item
    validation batch of ALICE's look-ahead)."""

    def __init__(self, channels: int, height: int, width: int, rep_dim: int = 32, width_mult: int = 8) -> None:
        super().__init__()
        a, b = width_mult, 2 * width_mult
        self.features = nn.Sequential(
            nn.Conv2d(channels, a, 5, padding=2, bias=False), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
            nn.Conv2d(a, b, 5, padding=2, bias=False), nn.LeakyReLU(0.1), nn.MaxPool2d(2))
        self.fc = nn.Linear(b * (height // 4) * (width // 4), rep_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def build(backbone: str | nn.Module, input_shape: tuple[int, ...], hidden: tuple[int, ...],
          seed: int) -> nn.Module:
    """The model for ``backbone`` ("svdd", "ae", "conv", or a torch module used as Deep SVDD's network)."""
    torch.manual_seed(seed)
    if isinstance(backbone, nn.Module):
        return SVDD(backbone)
    if backbone == "svdd":
        return SVDD(_mlp([input_shape[0], *hidden], bias=False))
    if backbone == "ae":
        return AutoEncoder(input_shape[0], hidden)
    if backbone == "conv":
        c, h, w = input_shape
        return SVDD(ConvNet(c, h, w, rep_dim=hidden[-1]))
    raise ValueError(f"unknown backbone {backbone!r}; use 'svdd', 'ae', 'conv' or a torch module")
