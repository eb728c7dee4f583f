"""AutoSampling: equal gradient steps, seeded, exploitation copies the winner, exploration re-estimates
the distribution from the winning schedules."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dcai_widgets.train import AutoSampling


def data(n=300, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.normal(0, 2, (k, d))[y] + rng.normal(0, 1.0, (n, d))
    return torch.from_numpy(X.astype(np.float32)), torch.as_tensor(y)


def make():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_search_is_seeded_takes_the_stated_steps_and_learns():
    X, y = data()
    Xv, yv = data(90, seed=0)
    a = AutoSampling(make, workers=3, cycles=4, steps_per_cycle=10, explore_every=2, lr=1e-2, seed=5).fit(X, y, (Xv, yv))
    b = AutoSampling(make, workers=3, cycles=4, steps_per_cycle=10, explore_every=2, lr=1e-2, seed=5).fit(X, y, (Xv, yv))
    assert a.steps_ == 40 and len(a.history_) == 4
    assert a.history_.equals(b.history_)
    with torch.no_grad():
        assert torch.equal(a.model_(Xv), b.model_(Xv))
        assert (a.model_(Xv).argmax(1) == yv).float().mean() > 0.8
    # the winner of each cycle has the best validation accuracy of the workers
    accs = a.history_[[f"val_acc_{k}" for k in range(3)]].to_numpy()
    assert np.allclose(a.history_["val_acc"], accs.max(1))
    assert a.p_.shape == (300,) and a.p_.sum() == pytest.approx(1.0)
    assert a.p_.min() >= 0.5 / 300 - 1e-12          # mixed with uniform: no item starves
    assert a.p_.max() > 1.0 / 300                     # estimated from the winning schedules, not uniform


def test_arguments_and_missing_validation_are_named():
    X, y = data()
    with pytest.raises(ValueError, match="workers=0"):
        AutoSampling(make, workers=0).fit(X, y, (X, y))
    with pytest.raises(ValueError, match="validation"):
        AutoSampling(make).fit(X, y, (X[:0], y[:0]))
