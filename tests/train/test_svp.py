"""Selection via Proxy: identical proxy and target rank identically, each criterion means what it says."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dcai_widgets.train.svp import SelectionViaProxy, kcenter_greedy, selection_scores, spearman


def data(n=300, d=6, k=3, seed=0, noise=1.5):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.normal(0, 2, (k, d))[y] + rng.normal(0, noise, (n, d))
    return torch.from_numpy(X.astype(np.float32)), torch.as_tensor(y)


@pytest.mark.parametrize("method", ["entropy", "forgetting", "kcenter"])
def test_proxy_ranking_equals_target_ranking_when_proxy_is_target(method):
    X, y = data()
    make = lambda: nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))  # noqa: E731
    proxy = SelectionViaProxy(make, method=method, fraction=0.5, epochs=3, seed=1).fit(X, y)
    target = SelectionViaProxy(make, method=method, fraction=0.5, epochs=3, seed=1).fit(X, y)
    assert np.array_equal(proxy.selected_, target.selected_)
    assert spearman(proxy.scores_, target.scores_) == pytest.approx(1.0)
    other = SelectionViaProxy(lambda: nn.Linear(6, 3), method=method, fraction=0.5, epochs=1, seed=1).fit(X, y)
    assert not np.array_equal(np.sort(other.selected_), np.sort(target.selected_))
    assert len(proxy.selected_) == 150 and len(set(proxy.selected_.tolist())) == 150


def test_entropy_keeps_the_items_between_classes():
    X, y = data(noise=0.5)
    s = selection_scores(lambda: nn.Linear(6, 3), X, y, "entropy", epochs=5)
    P = SelectionViaProxy(lambda: nn.Linear(6, 3), fraction=0.2, epochs=5).fit(X, y)
    assert s[P.selected_].min() >= np.median(s)


def test_kcenter_greedy_picks_the_farthest_point_each_time():
    F = np.array([[0.0], [1.0], [10.0], [4.0], [5.0]])
    order = kcenter_greedy(F, 3, seed=0)
    first = order[0]
    assert order[1] == np.argmax(np.abs(F[:, 0] - F[first, 0]))
    assert len(set(order.tolist())) == 3


def test_bad_arguments_are_named():
    X, y = data()
    with pytest.raises(ValueError, match="method='margin'"):
        selection_scores(lambda: nn.Linear(6, 3), X, y, "margin")
    with pytest.raises(ValueError, match="fraction"):
        SelectionViaProxy(lambda: nn.Linear(6, 3), fraction=0).fit(X, y)


def test_select_labeled_over_a_session_then_train_on_the_subset(tmp_path):
    import dcai_widgets as dw
    from dcai_widgets.train import Trainer, select_labeled

    X, y = data(200)
    s = dw.Session.from_embeddings(X.numpy(), ["a", "b", "c"], y_true=y.numpy(), store=tmp_path / "s.db")
    s.label(np.arange(120), np.asarray(s.classes)[y.numpy()[:120]], annotator="ann")
    s.exclude([0, 1], annotator="ann")
    sel = select_labeled(s, fraction=0.5, epochs=2)
    assert len(sel.ids_) == 59 and set(sel.ids_.tolist()) <= set(range(2, 120))
    t = Trainer(s, ids=sel.ids_, epochs=2, progress=False, name=None).fit()
    assert set(np.r_[t.train_ids_, t.val_ids_].tolist()) == set(sel.ids_.tolist())
