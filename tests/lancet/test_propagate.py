"""Linear-head propagation output and the propagation-efficiency figure."""
import numpy as np
import pytest

from dcai_widgets.lancet.propagate import efficiency, propagate


def test_propagate_maps_seen_classes_and_skips_labeled():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    out = propagate(proba, classes_seen=np.array([1, 4]), labeled=np.array([False, True, False]))
    assert out["id"].tolist() == [0, 2]
    assert out["label"].tolist() == [1, 1] and out["confidence"].tolist() == [0.9, 0.6]
    with pytest.raises(ValueError, match="proba must be"):
        propagate(proba, classes_seen=np.array([0, 1, 2]), labeled=np.zeros(3, bool))


def test_efficiency():
    assert efficiency(100, 104, 10) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="human label"):
        efficiency(1, 2, 0)
