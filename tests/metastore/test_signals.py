"""Suspect signals on a tiny synthetic set with known flips; functional losses; bad input to suspects."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcai_widgets.metastore import MetaStore, analytics


def _blobs(n, seed, d=6, C=3):
    g = torch.Generator().manual_seed(seed)
    centers = 3.0 * torch.eye(d)[:C]
    y = torch.randint(0, C, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """300 items, 30 flipped to the next class, a small MLP trained 3 epochs, all checkpoints collected."""
    X, y = _blobs(300, 0)
    Xv, yv = _blobs(90, 1)
    flip = np.arange(0, 300, 10)
    y_noisy = y.clone()
    y_noisy[flip] = (y[flip] + 1) % 3
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    ms = MetaStore(model, ["0", "2"], path=tmp_path_factory.mktemp("sig") / "s")
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for epoch in range(3):
        for s in range(0, 300, 30):
            opt.zero_grad()
            F.cross_entropy(model(X[s:s + 30]), y_noisy[s:s + 30]).backward()
            opt.step()
        ms.collect((X, y_noisy), nn.CrossEntropyLoss(), f"e{epoch}", lr=0.3, progress=False)
    return ms, X, y, Xv, yv, flip


@pytest.mark.parametrize("by", list(analytics.SIGNALS) + ["combined", ("margin", "class")])
def test_each_signal_and_combination_finds_the_flips(flipped, by):
    ms, X, y, Xv, yv, flip = flipped
    sus = ms.suspects(Xv, yv, k=30, by=by, train_x=X)
    assert list(sus.columns) == ["id", "score", "label", "suggested"]
    assert sus["id"].is_unique and (np.diff(sus["score"]) <= 0).all()
    hit = np.isin(sus["id"], flip)
    assert hit.mean() >= 0.6, (by, hit.mean())                   # chance is 0.1
    caught = sus[hit]
    assert (caught["suggested"].to_numpy() == y.numpy()[caught["id"].to_numpy()]).mean() >= 0.8
    assert (sus["label"].to_numpy() != sus["suggested"].to_numpy()).all()


def test_signals_frame_and_rank_average(flipped):
    ms, X, y, Xv, yv, flip = flipped
    sig = analytics.signals(ms, analytics.SIGNALS, Xv, yv, train_x=X)
    assert list(sig.columns) == ["id", *analytics.SIGNALS] and len(sig) == 300
    is_flip = np.isin(sig["id"], flip)
    for name in analytics.SIGNALS:          # every signal ranks flips above the rest on average
        assert sig.loc[is_flip, name].mean() > sig.loc[~is_flip, name].mean(), name
    both = analytics.combine(sig, ["margin", "knn"])
    manual = (sig["margin"].rank(pct=True) + sig["knn"].rank(pct=True)).to_numpy() / 2
    np.testing.assert_allclose(both, manual)
    # "self" is TracIn-CP self-influence; "batch" is minus the batch P2B
    np.testing.assert_allclose(sig["self"], ms.self_influence())
    np.testing.assert_allclose(sig["batch"], -ms.p2b(None, Xv, yv))


def test_auto_uses_only_what_was_given(flipped):
    ms, X, y, Xv, yv, flip = flipped
    assert analytics.resolve("auto", has_val=True, has_x=True) == analytics.DEFAULT_SIGNALS
    no_x = analytics.resolve("auto", has_val=True, has_x=False)
    assert not set(no_x) & {"margin", "knn"} and no_x
    sus = ms.suspects(Xv, yv, k=30)                    # no train_x: still answers, from stored gradients
    assert np.isin(sus["id"], flip).mean() >= 0.6
    only_x = ms.suspects(k=30, train_x=X)              # no validation data
    assert np.isin(only_x["id"], flip).mean() >= 0.6


def test_bad_input_gives_clear_errors(flipped, tmp_path):
    ms, X, y, Xv, yv, flip = flipped
    with pytest.raises(ValueError, match=r"validation labels \[3, 7\] are outside the model's classes 0..2"):
        ms.suspects(Xv[:4], torch.tensor([0, 3, 7, 1]), k=5, by="class")
    with pytest.raises(ValueError, match="k=301 but the store holds only 300 items"):
        ms.suspects(Xv, yv, k=301, by="class")
    with pytest.raises(ValueError, match="k=0"):
        ms.suspects(Xv, yv, k=0)
    with pytest.raises(ValueError, match="need the training inputs"):
        ms.suspects(Xv, yv, k=5, by="margin")
    with pytest.raises(ValueError, match="need trusted validation data"):
        ms.suspects(k=5, by="class", train_x=X)
    with pytest.raises(ValueError, match="row i of train_x"):
        ms.suspects(Xv, yv, k=5, by="knn", train_x=X[:100])
    with pytest.raises(ValueError, match="by="):
        ms.suspects(Xv, yv, by="mean")
    empty = MetaStore(nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)), ["2"], path=tmp_path / "e")
    with pytest.raises(ValueError, match="nothing collected|empty"):
        empty.suspects(Xv, yv, k=5, by="class")


def test_functional_loss_gives_the_same_factors_as_the_module(tmp_path):
    X, y = _blobs(40, 3)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    a = MetaStore(model, ["0", "2"], path=tmp_path / "a")
    a.collect((X, y), nn.CrossEntropyLoss(), "c", lr=0.5, progress=False)
    b = MetaStore(model, ["0", "2"], path=tmp_path / "b")
    b.collect((X, y), F.cross_entropy, "c", lr=0.5, progress=False)       # refused before issue 15
    for sub in ("0", "2"):
        ba = next(a._shard("c", sub).blocks(np.arange(40)))[1]
        bb = next(b._shard("c", sub).blocks(np.arange(40)))[1]
        for key in ba:
            np.testing.assert_array_equal(ba[key], bb[key])
    np.testing.assert_allclose(b.p2p(None, X[:3], y[:3]), a.p2p(None, X[:3], y[:3]), rtol=1e-6)
    # a per-sample function without a reduction argument is used as it is
    c = MetaStore(model, ["2"], path=tmp_path / "c")
    c.collect((X, y), lambda out, t: F.cross_entropy(out, t, reduction="none"), "c", lr=0.5, progress=False)
    np.testing.assert_allclose(c.self_influence(), a.self_influence(layers="2"), rtol=1e-6)
    # a function that can only return the batch mean is refused with the reason
    d = MetaStore(model, ["2"], path=tmp_path / "d")
    with pytest.raises(ValueError, match="single number for a batch"):
        d.collect((X, y), lambda out, t: F.cross_entropy(out, t), "c", progress=False)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        d.collect((X, y), "cross_entropy", "c2", progress=False)
