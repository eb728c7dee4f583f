"""The stop rule's second part: predictions that stopped changing (Bloodgood & Vijay-Shanker 2009).

The paper's DMN part alone said "stop" at 10 labels LANCET picked on digits and at 80-100 random labels
with 5-7% of the predictions still changing per 20 labels; the served app called that "labels cover the
data"."""
import warnings

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from dcai_widgets.lancet import Lancet
from dcai_widgets.lancet.stop import PredictionStability, cohen_kappa, stop_report


def test_kappa_matches_scikit_learn():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.integers(0, 4, 200)
        b = np.where(rng.random(200) < 0.8, a, rng.integers(0, 4, 200))
        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa([2, 2, 2], [2, 2, 2]) == 1.0
    with pytest.raises(ValueError):
        cohen_kappa([1, 2], [1])


def test_rounds_are_gap_labels_apart_and_agreement_needs_a_full_window():
    st = PredictionStability(gap=10, window=3)
    base = np.arange(100) % 5
    st.update(10, base)
    for n in (15, 19):           # fits between rounds do not make rounds
        st.update(n, base)
    assert st.rounds == 0 and np.isnan(st.agreement())
    for n in (20, 30):
        st.update(n, base)
    assert st.rounds == 2 and np.isnan(st.agreement())
    st.update(40, base)
    assert st.rounds == 3 and st.agreement() == 1.0
    changed = base.copy()
    changed[:20] = (changed[:20] + 1) % 5       # a fit 5 labels later moved 20% of the predictions
    st.update(45, changed)
    assert st.rounds == 3 and st.agreement() < 0.8   # not hidden until the next round
    with pytest.raises(ValueError, match="gap"):
        PredictionStability(gap=0)


def test_the_dmn_part_alone_no_longer_stops():
    st = PredictionStability(gap=10)
    r = stop_report(0.70, 0.5, alpha_t=0.1, stability=st.update(10, np.zeros(50)))
    assert r.dmn_ok and not r.stop and "rounds" in r.reason
    rng = np.random.default_rng(1)
    for n in (20, 30, 40):
        st.update(n, rng.integers(0, 3, 50))     # predictions keep moving
    r = stop_report(0.70, 0.5, alpha_t=0.1, stability=st)
    assert r.dmn_ok and not r.stop and "still changing" in r.reason and r.agreement < 0.99
    steady = PredictionStability(gap=10)
    for n in (10, 20, 30, 40):
        steady.update(n, np.arange(50) % 3)
    assert stop_report(0.70, 0.5, alpha_t=0.1, stability=steady).stop
    assert not stop_report(0.50, 0.5, alpha_t=0.1, stability=steady).stop   # the DMN part still counts


def test_lancet_does_not_stop_on_its_first_rounds(blobs_session):
    s = blobs_session(d=4)
    lan = Lancet(s, batch=6, steps=80, dmn_steps=40, progress=False, calibration=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lan.fit()
        stops = []
        for _ in range(5):
            c = lan.candidates()
            s.label(c, s.y_true[c])
            lan.fit()
            stops.append(lan.should_stop())
    assert not any(r.stop for r in stops[:3]), [r.reason for r in stops]   # fewer than 3 rounds compared
    assert [r.rounds for r in stops] == [0, 1, 2, 3, 4]
    assert all(r.stop == (r.dmn_ok and r.agreement >= 0.99) for r in stops[3:])
