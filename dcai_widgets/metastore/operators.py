"""Exact gradient inner products from stored factors, without rebuilding training gradients.

For a sub-layer, a sample's gradient is ``sum_t g_t x_t^T``. Hence for training item i and test item j
``<G_i, G_j> = sum_{t,s} (x_it . x_js)(g_it . g_js)``; for one position this is the dissertation's
``(X_train X_test^T) * (G_train G_test^T)``. Against a batch-average test gradient ``Gbar`` (P2B) it is
``sum_t g_it^T Gbar x_it``. A block is a dict with ``x`` (n,T,a) and ``g`` (n,T,b), or ``full`` (n,b*a)
where the cost model stored the full gradient instead.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = [
    "as_tensor",
    "b2p_test",
    "batch_grad_block",
    "full_from_factors",
    "mean_grad",
    "p2b_auto",
    "p2b_block",
    "p2p_block",
    "self_block",
]

_CHUNK = 1 << 24  # elements of the largest temporary


def as_tensor(a: np.ndarray | torch.Tensor, like: torch.dtype | None = None) -> torch.Tensor:
    """A float tensor for computation: float64 stays float64, float16/32 compute in float32."""
    if isinstance(a, np.ndarray):
        if a.flags.writeable:
            t = torch.from_numpy(a)
        else:   # a read-only memory-mapped shard: computed from, never written to
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                t = torch.from_numpy(a)
    else:
        t = a
    if like is not None:
        return t.to(like)
    return t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)


def full_from_factors(X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Full per-sample gradients (m, b, a) from factors (m,T,a), (m,T,b)."""
    return torch.einsum("mtb,mta->mba", G, X)


def mean_grad(X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Mean of the per-sample gradients (b, a) of factors (m,T,a), (m,T,b), without materialising them."""
    m, T, a = X.shape
    if m == 0:
        raise ValueError("cannot average the gradient of an empty batch")
    return (G.reshape(m * T, -1).T @ X.reshape(m * T, a)) / m


def _dtype(block: dict) -> torch.dtype:
    v = next(iter(block[k] for k in ("x", "full") if k in block))
    return torch.float64 if v.dtype in (np.float64, torch.float64) else torch.float32


def p2p_block(block: dict, Xt: torch.Tensor, Gt: torch.Tensor) -> torch.Tensor:
    """(n, m) inner products of the block's training gradients with each test gradient."""
    dt = _dtype(block)
    Xt, Gt = Xt.to(dt), Gt.to(dt)
    m = Xt.shape[0]
    if "full" in block:
        F = as_tensor(block["full"], dt)
        return F @ full_from_factors(Xt, Gt).reshape(m, -1).T
    X, G = as_tensor(block["x"], dt), as_tensor(block["g"], dt)
    n, T, a = X.shape
    Tt, b = Gt.shape[1], Gt.shape[2]
    if T == 1 and Tt == 1:
        return (X[:, 0] @ Xt[:, 0].T) * (G[:, 0] @ Gt[:, 0].T)
    out = torch.empty(n, m, dtype=dt)
    if T * Tt * (a + b) <= T * a * b:  # factor x factor over all position pairs
        step = max(1, _CHUNK // max(1, m * T * Tt))
        for s in range(0, n, step):
            A = torch.einsum("nta,msa->nmts", X[s:s + step], Xt)
            A.mul_(torch.einsum("ntb,msb->nmts", G[s:s + step], Gt))
            out[s:s + step] = A.sum((2, 3))
    else:  # reconstruct the (few) test gradients, never the training ones
        Ft = full_from_factors(Xt, Gt)  # (m, b, a)
        step = max(1, _CHUNK // max(1, T * a * m))
        for s in range(0, n, step):
            GF = torch.einsum("ntb,mba->nmta", G[s:s + step], Ft)
            out[s:s + step] = torch.einsum("nmta,nta->nm", GF, X[s:s + step])
    return out


def p2b_block(block: dict, Gbar: torch.Tensor) -> torch.Tensor:
    """(n,) or (n, C): ``sum_t g_t^T Gbar x_t`` for one (b,a) or several (C,b,a) batch gradients."""
    dt = _dtype(block)
    Gbar = Gbar.to(dt)
    multi = Gbar.dim() == 3
    Gb = Gbar if multi else Gbar[None]
    C, b, a = Gb.shape
    if "full" in block:
        F = as_tensor(block["full"], dt)
        out = F @ Gb.reshape(C, -1).T
    else:
        X, G = as_tensor(block["x"], dt), as_tensor(block["g"], dt)
        n, T, _ = X.shape
        out = torch.empty(n, C, dtype=dt)
        step = max(1, _CHUNK // max(1, T * a * C))
        for s in range(0, n, step):
            GG = torch.einsum("ntb,cba->ncta", G[s:s + step], Gb)
            out[s:s + step] = torch.einsum("ncta,nta->nc", GG, X[s:s + step])
    return out if multi else out[:, 0]


def p2b_auto(block: dict, Xt: torch.Tensor, Gt: torch.Tensor, Gbar: torch.Tensor) -> torch.Tensor:
    """(n,) P2B by the cheaper exact route: ``x^T Gbar g`` (T*a*b per item) or the mean of factor P2Ps
    (m*T*Tt*(a+b) per item, better for a small test batch on a wide layer)."""
    if "full" in block:
        return p2b_block(block, Gbar)
    T, a = block["x"].shape[1], block["x"].shape[2]
    b = block["g"].shape[2]
    m, Tt = Xt.shape[0], Xt.shape[1]
    if m * T * Tt * (a + b) < T * a * b:
        return p2p_block(block, Xt, Gt).mean(1)
    return p2b_block(block, Gbar)


def batch_grad_block(block: dict) -> torch.Tensor:
    """Sum over the block's rows of the per-sample gradients, as (b, a)."""
    dt = _dtype(block)
    if "full" in block:
        return as_tensor(block["full"], dt).sum(0)
    X, G = as_tensor(block["x"], dt), as_tensor(block["g"], dt)
    n, T, a = X.shape
    return G.reshape(n * T, -1).T @ X.reshape(n * T, a)


def b2p_test(Gbar: torch.Tensor, Xt: torch.Tensor, Gt: torch.Tensor) -> torch.Tensor:
    """(m,) ``sum_t g_t^T Gbar x_t`` for test factors against a (b,a) batch gradient."""
    return p2b_block({"x": Xt, "g": Gt}, Gbar)


def self_block(block: dict) -> torch.Tensor:
    """(n,) squared gradient norms ``||G_i||^2`` (self-influence before learning-rate weights)."""
    dt = _dtype(block)
    if "full" in block:
        F = as_tensor(block["full"], dt)
        return (F * F).sum(1)
    X, G = as_tensor(block["x"], dt), as_tensor(block["g"], dt)
    n, T, _ = X.shape
    if T == 1:
        return (X[:, 0] * X[:, 0]).sum(1) * (G[:, 0] * G[:, 0]).sum(1)
    out = torch.empty(n, dtype=dt)
    step = max(1, _CHUNK // max(1, T * T))
    for s in range(0, n, step):
        out[s:s + step] = ((X[s:s + step] @ X[s:s + step].transpose(1, 2))
                           * (G[s:s + step] @ G[s:s + step].transpose(1, 2))).sum((1, 2))
    return out
