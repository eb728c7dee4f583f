"""ELITE's tailored hinge loss and ALICE, its meta-gradient label inference (Zhang et al., KDD 2021).

Every training item carries a pseudo label ``y`` (0 normal, 1 anomalous). The tailored loss of an item
with anomaly score ``s`` is ``(1 - y) * s + y * max(0, C - s)``: the score of an item believed normal is
minimised, the score of one believed anomalous is pushed above the margin ``C``. The expert's labels
form the validation set, scored with the same loss.

ALICE asks, per mini-batch, how the validation loss after one look-ahead SGD step would change if an
item's pseudo label changed: ``g_i = d L_val(theta - lr * grad L_batch(theta, y)) / d y_i``, computed by
double backpropagation through the look-ahead step (never by retraining). Labels whose change lowers
the validation loss (``y_i = 0`` with ``g_i < 0``, or ``y_i = 1`` with ``g_i > 0``) are flip candidates;
a flip set is kept only if the look-ahead validation loss with the flipped labels is really lower.
Each item's gradient in the actual update is then weighted by ``eta_M * |g_i|``.
"""
from __future__ import annotations

import dataclasses

import torch


def tailored_loss(scores: torch.Tensor, y: torch.Tensor, C: float) -> torch.Tensor:
    """Per-item ELITE hinge loss: ``(1 - y) * s + y * max(0, C - s)`` (y may be fractional)."""
    return (1 - y) * scores + y * torch.clamp(C - scores, min=0)


def validation_weights(y: torch.Tensor) -> torch.Tensor:
    """Per-item weights of the validation loss: normal and anomalous items weigh equally in total (a
    class of 3 labels counts as much as one of 30, so the expert's labeling order does not tilt it)."""
    anom = y > 0.5
    n_a, n_n = int(anom.sum()), int((~anom).sum())
    if n_a == 0 or n_n == 0:
        return torch.full_like(y, 1.0 / len(y))
    return torch.where(anom, 0.5 / n_a, 0.5 / n_n).to(y.dtype)


def validation_loss(scores: torch.Tensor, y: torch.Tensor, C: float,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """The tailored loss on the expert's labels, classes weighted equally (``validation_weights``;
    pass them precomputed to save the work in ALICE's inner loop)."""
    w = validation_weights(y) if weights is None else weights
    return (w * tailored_loss(scores, y, C)).sum()


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.named_parameters() if v.requires_grad}


def meta_gradients(model, params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
                   xv: torch.Tensor, yv: torch.Tensor, C: float, lr: float) -> tuple[torch.Tensor, float]:
    """(g, L_val after the look-ahead step): ``g_i`` = d L_val(theta'(y)) / d y_i for each batch item.

    Double backprop: the batch loss is taken at ``y + e`` with ``e = 0`` requiring grad, its parameter
    gradient is built with ``create_graph=True``, the look-ahead parameters ``theta - lr * grad`` score
    the validation items (``torch.func.functional_call``), and the validation loss is differentiated
    with respect to ``e``."""
    g, lv, _ = _meta(model, params, xb, yb, xv, yv, C, lr, model.score_with(params, xb), keep=False)
    return g, lv


def _meta(model, params, xb, yb, xv, yv, C, lr, s, keep: bool = True, wv=None):
    """meta_gradients on precomputed batch scores ``s``; also returns the look-ahead's parameter
    gradient (detached) and keeps the graph of ``s`` for the update's backward when ``keep``."""
    e = torch.zeros_like(yb, requires_grad=True)
    names = list(params)
    grads = torch.autograd.grad(tailored_loss(s, yb + e, C).mean(), [params[k] for k in names],
                                create_graph=True)
    ahead = {k: params[k] - lr * g for k, g in zip(names, grads)}
    lv = validation_loss(model.score_with(ahead, xv), yv, C, wv)
    (g,) = torch.autograd.grad(lv, e, retain_graph=keep)
    return g.detach(), float(lv.detach()), [gr.detach() for gr in grads]


@dataclasses.dataclass
class StepResult:
    """What one ALICE step did: meta-gradients, the flipped batch positions, the look-ahead validation
    loss with the old labels and with the kept flips (equal when nothing was flipped), and the weights."""

    meta_gradients: torch.Tensor
    flipped: torch.Tensor
    val_before: float
    val_after: float
    weights: torch.Tensor


def alice_step(model, xb: torch.Tensor, yb: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, C: float,
               lr: float, eta_m: float = 1.0, strong: bool = True, wv: torch.Tensor | None = None,
               frozen: torch.Tensor | None = None) -> tuple[torch.Tensor, StepResult, list]:
    """One ALICE iteration on a mini-batch; returns (new labels, what happened, the parameter gradients
    of the weighted batch loss, in ``model.named_parameters()`` order, for the optimiser to apply).

    Flip candidates are the items whose meta-gradient says a flip lowers the validation loss (with
    ``strong``, only those whose |g| also exceeds the batch mean). The flips are kept only if the real
    look-ahead validation loss with the flipped labels is lower than with the old labels.
    Each item's tailored loss is weighted by ``eta_M * |g_i|``, normalised by the batch mean of ``|g|``
    so that the step size does not depend on the meta-gradients' overall scale (which shrinks with the
    look-ahead step size). The batch loss is linear in the labels, so the look-ahead gradient with the
    flipped labels is the one without them plus the gradient of the flipped items' label term: four
    backward passes per step in all (a plain step has one). ``wv``: precomputed validation weights.
    ``frozen`` (bool per batch item): items whose label is known (``Elite(mode="semi")``'s expert labels
    in training): never flipped, weighted ``eta_M`` (the batch's mean weight) instead of by ``|g|``."""
    params = _params(model)
    names = list(params)
    plist = [params[k] for k in names]
    s = model(xb)   # the module's own parameters: the same graph as score_with(params, xb), less overhead
    wv = validation_weights(yv) if wv is None else wv
    g, lv0, base = _meta(model, params, xb, yb, xv, yv, C, lr, s, wv=wv)
    helps = ((yb < 0.5) & (g < 0)) | ((yb > 0.5) & (g > 0))
    if strong:
        helps &= g.abs() > g.abs().mean()
    mag = g.abs()
    mean = mag.mean()
    w = eta_m * (mag / mean if mean > 0 else torch.ones_like(mag))
    if frozen is not None:
        helps &= ~frozen
        w = torch.where(frozen, torch.full_like(w, eta_m), w)
    upd = (w * tailored_loss(s, yb, C)).mean()
    if not bool(helps.any()):
        grads = torch.autograd.grad(upd, plist)
        return yb, StepResult(g, torch.zeros(0, dtype=torch.long), lv0, lv0, w), list(grads)
    d = torch.where(helps, 1 - 2 * yb, torch.zeros_like(yb))          # +1: normal -> anomaly, -1: back
    per = torch.clamp(C - s, min=0) - s                                  # d loss_i / d y_i
    trial = torch.autograd.grad((d * per).mean(), plist, retain_graph=True)
    with torch.no_grad():
        ahead = {k: params[k] - lr * (b + t) for k, b, t in zip(names, base, trial)}
        lv1 = float(validation_loss(model.score_with(ahead, xv), yv, C, wv))
    if lv1 < lv0:
        flipped = torch.nonzero(helps).flatten()
        grads = torch.autograd.grad(upd + (w * d * per).mean(), plist)
        return yb + d, StepResult(g, flipped, lv0, lv1, w), list(grads)
    return yb, StepResult(g, torch.zeros(0, dtype=torch.long), lv0, lv0, w), list(torch.autograd.grad(upd, plist))
