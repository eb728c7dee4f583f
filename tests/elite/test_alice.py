"""ALICE's meta-gradient against finite differences, and flips only where the validation loss falls."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dcai_widgets.elite import alice_step, meta_gradients, tailored_loss, validation_loss
from dcai_widgets.elite.models import build


def _lookahead_val(model, xb, yb, xv, yv, C, lr) -> float:
    """Validation loss after one plain SGD step on the batch loss with labels yb (no create_graph)."""
    params = dict(model.named_parameters())
    names = list(params)
    s = model.score_with(params, xb)
    grads = torch.autograd.grad(tailored_loss(s, yb, C).mean(), [params[k] for k in names])
    with torch.no_grad():
        ahead = {k: params[k] - lr * g for k, g in zip(names, grads)}
        return float(validation_loss(model.score_with(ahead, xv), yv, C))


def _tiny(backbone: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build(backbone, (3,), (5, 2), seed).double()
    xb = torch.randn(6, 3, dtype=torch.float64)
    xv = torch.randn(4, 3, dtype=torch.float64) * 1.5
    yv = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    model.setup(xb)
    with torch.no_grad():
        C = float(model(xb).mean())
    return model, xb, xv, yv, C


@pytest.mark.parametrize("backbone", ["svdd", "ae"])
def test_meta_gradient_matches_finite_differences(backbone):
    model, xb, xv, yv, C = _tiny(backbone)
    yb = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    lr = 0.05
    g, lv = meta_gradients(model, dict(model.named_parameters()), xb, yb, xv, yv, C, lr)
    assert lv == pytest.approx(_lookahead_val(model, xb, yb, xv, yv, C, lr), rel=1e-12)
    fd = np.zeros(len(yb))
    h = 1e-6
    for i in range(len(yb)):
        up, down = yb.clone(), yb.clone()
        up[i] += h
        down[i] -= h
        fd[i] = (_lookahead_val(model, xb, up, xv, yv, C, lr) - _lookahead_val(model, xb, down, xv, yv, C, lr)) / (2 * h)
    assert np.abs(fd).max() > 0   # the check means something
    rel = np.abs(g.numpy() - fd).max() / np.abs(fd).max()
    assert rel <= 1e-3, (g.numpy(), fd)


def test_flips_only_when_the_validation_loss_falls():
    flipped_any = kept_back = 0
    for seed in range(25):
        model, xb, xv, yv, C = _tiny("svdd", seed)
        yb = torch.zeros(6, dtype=torch.float64)
        y_new, res, grads = alice_step(model, xb, yb, xv, yv, C, lr=0.5, strong=False)
        before = _lookahead_val(model, xb, yb, xv, yv, C, 0.5)
        after = _lookahead_val(model, xb, y_new, xv, yv, C, 0.5)
        assert res.val_before == pytest.approx(before, rel=1e-9)
        changed = torch.nonzero(y_new != yb).flatten()
        assert sorted(changed.tolist()) == sorted(res.flipped.tolist())
        if len(changed):
            flipped_any += 1
            assert after < before
            assert res.val_after == pytest.approx(after, rel=1e-9)
            # each flip went the way its meta-gradient said lowers the loss
            assert (res.meta_gradients[changed] < 0).all()
        else:
            kept_back += 1
            assert res.val_after == res.val_before
        assert len(grads) == len(list(model.parameters()))
    assert flipped_any > 0   # both branches were exercised
    assert kept_back > 0


def test_weights_scale_with_meta_gradient_magnitude():
    model, xb, xv, yv, C = _tiny("svdd", 3)
    yb = torch.zeros(6, dtype=torch.float64)
    _, res, _ = alice_step(model, xb, yb, xv, yv, C, lr=0.1, eta_m=2.0)
    mag = res.meta_gradients.abs()
    assert torch.allclose(res.weights, 2.0 * mag / mag.mean())
