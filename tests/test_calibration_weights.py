"""Weighted calibration pairs (issue 14, fourth pass): ``TopLabelCalibrator.fit(..., sample_weight=)``.

The calibrators learn from the human labels' out-of-fold pairs, but the confidence is shown on other items
(the unlabeled pool, the next items asked). Importance weights (Shimodaira 2000) make the pairs look like the
items shown; benchmarks/_fold_states.py compares such weights for LANCET's propagated labels.
"""
import numpy as np
import pytest

from dcai_widgets.calibration import METHODS, TopLabelCalibrator


def _two_groups(rng, n=400):
    """Pairs with the same score distribution in two groups: group 0 right 90% of the time, group 1 50%.
    The distance feature is the same in both, so no calibrator input tells them apart."""
    K = 4
    logits = rng.normal(0, 1, (n, K))
    logits[:, 0] += 2.0
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    group = np.arange(n) % 2
    right = np.where(group == 0, rng.random(n) < 0.9, rng.random(n) < 0.5)
    return logp, right, group, np.ones(n)


@pytest.mark.parametrize("method", METHODS)
def test_weights_move_the_calibrator_to_the_population_they_describe(method):
    """Fixed seed: unweighted, the mean confidence is the mix's accuracy (0.735 here); with group 0 weighted
    9:1 (the population shown is 90% group 0) it is that population's accuracy (~0.86). Temperature scaling
    (one parameter, no intercept) cannot match a mean it is not shaped for: only its direction is checked."""
    logp, right, group, dist = _two_groups(np.random.default_rng(0))
    plain = TopLabelCalibrator(method).fit(logp, right, dist).predict(logp, distance=dist)
    w = np.where(group == 0, 9.0, 1.0)
    weighted = TopLabelCalibrator(method).fit(logp, right, dist, sample_weight=w).predict(logp, distance=dist)
    target = float((w * right).sum() / w.sum())
    if method != "temperature":
        assert abs(plain.mean() - right.mean()) < 0.03
        assert abs(weighted.mean() - target) < 0.03
    assert weighted.mean() - plain.mean() > 0.05


@pytest.mark.parametrize("method", METHODS)
def test_equal_weights_change_nothing(method):
    logp, right, _, dist = _two_groups(np.random.default_rng(1), n=120)
    a = TopLabelCalibrator(method).fit(logp, right, dist).predict(logp, distance=dist)
    b = TopLabelCalibrator(method).fit(logp, right, dist, sample_weight=np.full(len(right), 3.0)).predict(
        logp, distance=dist)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_bad_weights_are_named():
    logp, right, _, dist = _two_groups(np.random.default_rng(2), n=20)
    for bad in (np.ones(19), -np.ones(20), np.zeros(20), np.r_[np.ones(19), np.nan]):
        with pytest.raises(ValueError, match="sample_weight"):
            TopLabelCalibrator("coverage").fit(logp, right, dist, sample_weight=bad)
