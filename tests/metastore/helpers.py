"""Tiny models and an independent per-sample-gradient reference (torch.func vmap + grad)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class TokenLinear(nn.Module):
    """A Linear applied per token (positions), then mean-pooled."""
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 4)
        self.head = nn.Linear(4, 3, bias=False)

    def forward(self, x):  # (B, T, 6)
        return self.head(torch.tanh(self.proj(x)).mean(1))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 3, stride=2, dilation=1, bias=False)
        self.conv3 = nn.Conv2d(4, 4, 2, padding="same" if False else 1, dilation=2)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):  # (B, 2, 7, 7)
        h = torch.tanh(self.conv1(x))
        h = torch.tanh(self.conv2(h))           # (B, 4, 3, 3)
        h = torch.tanh(self.conv3(h))           # (B, 4, 3, 3)
        return self.fc(h.flatten(1))


class Attn(nn.Module):
    def __init__(self, batch_first=True):
        super().__init__()
        self.batch_first = batch_first
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # (B, T, 8)
        if not self.batch_first:
            x = x.transpose(0, 1)
        h, _ = self.attn(x, x, x)
        if not self.batch_first:
            h = h.transpose(0, 1)
        return self.head(torch.tanh(h).mean(1))


class Encoder(nn.Module):
    """A stock nn.TransformerEncoderLayer (attention + token-wise linears) and a head."""
    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # (B, T, 8)
        return self.head(self.enc(x).mean(1))


LAYER_PARAMS = {"linear": ["weight", "bias"], "conv2d": ["weight", "bias"],
                "mha": ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]}


def param_names(model: nn.Module, layers: list[str]) -> list[str]:
    names = []
    mods = dict(model.named_modules())
    for l in layers:
        m = mods[l]
        for n, _ in m.named_parameters():
            names.append(f"{l}.{n}")
    return names


def per_sample_grads(model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, P) flattened per-sample gradients of cross-entropy wrt the named params, via torch.func."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(sel, xi, yi):
        p = dict(params)
        p.update(sel)
        out = functional_call(model, (p, buffers), (xi[None],))
        return F.cross_entropy(out, yi[None])

    sel = {k: params[k] for k in names}
    g = vmap(grad(loss), in_dims=(None, 0, 0))(sel, x, y)
    return torch.cat([g[k].reshape(x.shape[0], -1) for k in names], 1)
