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
    kw = dict(workers=3, cycles=4, steps_per_cycle=10, explore_every=2, lr=1e-2, seed=5, space="items")
    a = AutoSampling(make, **kw).fit(X, y, (Xv, yv))
    b = AutoSampling(make, **kw).fit(X, y, (Xv, yv))
    assert a.steps_ == 40 and len(a.history_) == 4
    assert a.history_.equals(b.history_)
    with torch.no_grad():
        assert torch.equal(a.model_(Xv), b.model_(Xv))
        assert (a.model_(Xv).argmax(1) == yv).float().mean() > 0.8
    # the winner of each cycle has the best validation accuracy of the workers (cycle 1: warm-up, one worker)
    accs = a.history_[[f"val_acc_{k}" for k in range(3)]].to_numpy()
    assert np.isnan(accs[0]).all() and np.allclose(a.history_["val_acc"][1:], accs[1:].max(1))
    assert a.p_.shape == (300,) and a.p_.sum() == pytest.approx(1.0)
    assert a.p_.min() >= 0.5 / 300 - 1e-12          # mixed with uniform: no item starves
    assert a.p_.max() > 1.0 / 300                     # items space: estimated from the winning schedules


def test_arguments_and_missing_validation_are_named():
    X, y = data()
    with pytest.raises(ValueError, match="workers=0"):
        AutoSampling(make, workers=0).fit(X, y, (X, y))
    with pytest.raises(ValueError, match="validation"):
        AutoSampling(make).fit(X, y, (X[:0], y[:0]))


@pytest.mark.parametrize("refresh", ["cycle", "batches"])
def test_loss_space_searches_the_focus_exponent_and_items_space_still_runs(refresh):
    X, y = data()
    Xv, yv = data(90, seed=0)
    a = AutoSampling(make, workers=3, cycles=6, steps_per_cycle=10, explore_every=2, lr=1e-2, seed=3,
                     sigma=0.8, loss_refresh=refresh, warmup=0).fit(X, y, (Xv, yv))
    alphas = a.history_[[f"alpha_{k}" for k in range(3)]].to_numpy()
    assert (alphas >= 0).all() and (alphas <= a.alpha_max).all() and len(np.unique(alphas.round(6))) > 1
    # the estimate after the last exploration is the mean exponent of the winning schedules since the one before
    winners = [alphas[i, int(w)] for i, w in enumerate(a.history_["winner"])]
    # (explorations after cycles 2 and 4; the last one averages the winners of cycles 3 and 4)
    assert a.alpha_ == pytest.approx(np.mean(winners[2:4]))
    assert (alphas[4] == a.alpha_).sum() >= 1                # worker 0 trains cycle 5 with the estimate itself
    # p_ is (last seen loss + eps)^alpha mixed with uniform; the losses were updated from the winners' batches
    q = (a.loss_ + a.eps) ** a.alpha_
    assert np.allclose(a.p_, 0.5 * q / q.sum() + 0.5 / 300)
    with torch.no_grad():
        first = torch.nn.functional.cross_entropy(make()(X), y, reduction="none").numpy()
        now = torch.nn.functional.cross_entropy(a.model_(X), y, reduction="none").numpy()
    assert a.loss_.shape == (300,) and a.loss_.mean() < 0.5 * first.mean()
    if refresh == "cycle":
        assert np.allclose(a.loss_, now, atol=1e-5)
    else:
        assert np.corrcoef(a.loss_, now)[0, 1] > 0.5 and not np.allclose(a.loss_, now, atol=1e-3)   # stale
    b = AutoSampling(make, workers=3, cycles=4, steps_per_cycle=10, space="items", lr=1e-2, seed=3).fit(X, y, (Xv, yv))
    assert b.steps_ == 40 and b.alpha_ == 0.0


def test_search_cycles_leave_the_winner_training_alone():
    X, y = data()
    Xv, yv = data(90, seed=0)
    a = AutoSampling(make, workers=3, cycles=6, steps_per_cycle=10, search_cycles=2, lr=1e-2, seed=1,
                     warmup=0).fit(X, y, (Xv, yv))
    h = a.history_
    assert len(h) == 6 and a.steps_ == 60
    assert h["val_acc"].iloc[:2].notna().all() and h["val_acc"].iloc[2:].isna().all()   # no workers to compare
    assert (h["alpha_0"].iloc[2:] == a.alpha_).all()          # the last estimate, kept for the rest of training
    with pytest.raises(ValueError, match="search_cycles=7"):
        AutoSampling(make, cycles=6, search_cycles=7).fit(X, y, (Xv, yv))
    with pytest.raises(ValueError, match="loss_refresh='never'"):
        AutoSampling(make, loss_refresh="never").fit(X, y, (Xv, yv))
    with pytest.raises(ValueError, match="space='pixels'"):
        AutoSampling(make, space="pixels").fit(X, y, (Xv, yv))


class _Spy(AutoSampling):
    """Records each worker's weights after every cycle it trains (worker identity, cycle index, weights)."""

    def fit(self, X, y, val, check=None):
        self.trained = []
        return super().fit(X, y, val, check)

    def _train_cycle(self, wk, p, X, y, g, check):
        before = {k: t.detach().clone() for k, t in wk.model.state_dict().items()}
        out = super()._train_cycle(wk, p, X, y, g, check)
        after = {k: t.detach().clone() for k, t in wk.model.state_dict().items()}
        self.trained.append((id(wk), after, before))
        return out


def test_final_model_is_the_mean_of_the_last_cycles_workers():
    X, y = data()
    Xv, yv = data(90, seed=0)
    kw = dict(workers=3, cycles=3, steps_per_cycle=10, lr=1e-2, seed=2, warmup=0)
    a = _Spy(make, final="average", **kw).fit(X, y, (Xv, yv))
    last = [sd for _, sd, _ in a.trained[-3:]]          # the three workers' weights after the last cycle
    assert len({i for i, _, _ in a.trained[-3:]}) == 3
    for k, t in a.model_.state_dict().items():
        assert torch.allclose(t, torch.stack([sd[k] for sd in last]).mean(0), atol=1e-6)
        assert not any(torch.allclose(t, sd[k]) for sd in last)     # a mean, not one of them
    b = _Spy(make, final="last", **kw).fit(X, y, (Xv, yv))
    winner = int(b.history_["winner"].iloc[-1])
    for k, t in b.model_.state_dict().items():          # "last": the winner's own weights, as before
        assert torch.equal(t, b.trained[-3 + winner][1][k])
    with pytest.raises(ValueError, match="final='best'"):
        AutoSampling(make, final="best").fit(X, y, (Xv, yv))


def test_warmup_cycles_train_one_worker_then_everyone_starts_from_its_weights():
    X, y = data()
    Xv, yv = data(90, seed=0)
    a = _Spy(make, workers=3, cycles=4, steps_per_cycle=10, lr=1e-2, seed=4, warmup=2).fit(X, y, (Xv, yv))
    h = a.history_
    assert len(h) == 4 and a.steps_ == 40
    assert h["val_acc"].iloc[:2].isna().all() and h["val_acc"].iloc[2:].notna().all()
    # cycles trained: 1 + 1 (warm-up, worker 0 alone) + 3 + 3 = 8 (2.0 runs' worth instead of 3.0)
    assert len(a.trained) == 8 and a.trained[0][0] == a.trained[1][0]
    assert (h["alpha_0"].iloc[:2] == 0.0).all()        # the warm-up ran the starting schedule (uniform)
    # the first searched cycle: three different workers, each starting from the warmed-up weights
    warmed = a.trained[1][1]
    assert len({i for i, _, _ in a.trained[2:5]}) == 3
    for _, _, before in a.trained[2:5]:
        assert all(torch.equal(before[k], warmed[k]) for k in warmed)
    with pytest.raises(ValueError, match="warmup=4"):
        AutoSampling(make, cycles=4, warmup=4).fit(X, y, (Xv, yv))
