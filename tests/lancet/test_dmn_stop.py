"""DMN weights and the stop report."""
import math

import numpy as np
import pytest

from dcai_widgets.lancet.dmn import DMN
from dcai_widgets.lancet.stop import StopReport, stop_report


def _clusters(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, (300, 4))
    b = rng.normal(0, 1, (60, 4)) + np.array([8.0, 8.0, 0, 0])
    return a, b, rng


def test_dmn_weights_rank_far_unlabeled_cluster_lowest():
    a, b, rng = _clusters()
    lab = a[rng.choice(300, 30, replace=False)]
    unl = np.vstack([a, b])
    dmn = DMN(steps=200, seed=0).fit(lab, unl)
    w = dmn.weights_
    assert w.shape == (360,) and (w >= 0).all()
    assert w.mean() == pytest.approx(1.0, rel=1e-5)  # normalised to mean 1
    lowest = dmn.order_[:60]
    assert (lowest >= 300).mean() > 0.9  # the far cluster (ids 300..359) is ranked lowest
    assert w[300:].mean() < 0.2 * w[:300].mean()
    assert w.min() < 0.1  # so the stop rule (every weight > alpha_t) does not fire


def test_dmn_near_chance_when_labels_cover_distribution():
    a, _, rng = _clusters(1)
    dmn = DMN(steps=200, seed=0).fit(a[::2], a)  # half the items labeled, same distribution
    assert dmn.loss_ > math.log(2) - 0.02
    assert dmn.weights_.min() > 0.1
    assert stop_report(dmn.loss_, dmn.weights_.min(), alpha_t=0.1).stop


def test_dmn_needs_both_sides():
    with pytest.raises(ValueError, match="labeled and one unlabeled"):
        DMN().fit(np.zeros((0, 3)), np.ones((5, 3)))


def test_stop_report_fields_and_verdict():
    r = stop_report(0.70, 0.3, alpha_t=0.1)
    assert isinstance(r, StopReport)
    assert r.stop and r["stop"] and r.chance == pytest.approx(math.log(2))
    assert set(r.to_dict()) >= {"stop", "dmn_loss", "chance", "min_weight", "alpha_t"}
    low_loss = stop_report(0.40, 0.3, alpha_t=0.1)
    assert not low_loss.stop and "below chance" in low_loss.reason
    small_w = stop_report(0.70, 0.05, alpha_t=0.1)
    assert not small_w.stop and "alpha_t" in small_w.reason
