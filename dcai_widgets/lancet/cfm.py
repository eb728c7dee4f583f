"""Conditional feature matching (CFM), the LANCET regulariser (Zhang et al., VLDB 2021, sec. 4).

For every class c it pulls the mean embedding of unlabeled items predicted as c towards the mean
embedding of labeled items of class c, and pushes it at least ``margin`` away from the labeled means
of every other class, so unlabeled items sit next to labeled items of their own class.
"""
from __future__ import annotations

import torch


def class_means(z: torch.Tensor, assign: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class (weighted) mean embeddings and class masses; ``assign`` is (n,) ints or (n, K) weights."""
    if assign.dim() == 1:
        assign = torch.nn.functional.one_hot(assign.long(), n_classes).to(z.dtype)
    if assign.shape != (z.shape[0], n_classes):
        raise ValueError(f"assign must be (n,) class ids or (n, {n_classes}) weights; got {tuple(assign.shape)}")
    mass = assign.sum(0)
    means = assign.T @ z / mass.clamp_min(1e-12)[:, None]
    return means, mass


def cfm_loss(
    z_lab: torch.Tensor,
    y_lab: torch.Tensor,
    z_unl: torch.Tensor,
    p_unl: torch.Tensor,
    n_classes: int,
    margin: float = 1.0,
) -> torch.Tensor:
    """CFM loss: mean over classes c present on both sides of
    ``||mu_l(c) - mu_u(c)|| + sum_{c' != c} max(0, margin - ||mu_l(c) - mu_u(c')||)``.

    ``z_lab`` (m, d) labeled embeddings with classes ``y_lab`` (m,); ``z_unl`` (n, d) unlabeled
    embeddings with predictions ``p_unl``: (n,) hard classes or (n, K) probabilities (soft means).
    Classes absent from either side are skipped; returns 0 when no class is on both sides.
    """
    mu_l, mass_l = class_means(z_lab, y_lab, n_classes)
    mu_u, mass_u = class_means(z_unl, p_unl, n_classes)
    has_l = mass_l > 0
    has_u = mass_u > 1e-8
    both = has_l & has_u
    if not bool(both.any()):
        return z_lab.sum() * 0.0
    dist = torch.cdist(mu_l, mu_u)  # (K, K): labeled mean of c vs unlabeled mean of c'
    pull = torch.diagonal(dist)[both]
    hinge = torch.relu(margin - dist)
    other = has_l[:, None] & has_u[None, :] & ~torch.eye(n_classes, dtype=torch.bool, device=dist.device)
    push = (hinge * other).sum(1)[both]
    return (pull + push).mean()
