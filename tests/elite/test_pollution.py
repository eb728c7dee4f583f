"""The pollution estimate: only from items labeled in the fixed random order, with a calibrated interval.

The old panel showed two figures (the pool's share above the threshold that best separates the expert's
labels, and the share ALICE pseudo-labels anomalous); both follow how the labeled items were chosen,
not the set (optdigits in the served app: 14.3% and 36% for a true 5.9%)."""
from __future__ import annotations

import html

import numpy as np
import pytest

from dcai_widgets.elite import Elite
from dcai_widgets.elite.pollution import audit_order, estimate_pollution
from dcai_widgets.widgets.clean import CleanPanel

from .test_clean_panel import two_blobs
from .test_engine import polluted


def chosen():
    """A set with 6% anomalies and 10 + 10 labels chosen by class (as an expert labels top suspects:
    half anomalous, far from the set's rate)."""
    return polluted(n=400, d=5, rp=0.06, k=10)


def test_labels_chosen_by_class_give_no_pollution_figure():
    X, y, labels = chosen()
    order = audit_order(len(y))
    assert labels[order[0]] < 0          # the random order starts at an unlabeled item: no sample yet
    e = Elite.from_arrays(X, labels, epochs=3).fit()
    assert np.isnan(e.pollution_) and not e.pollution_estimate_.ok
    assert "random order" in e.pollution_estimate_.reason
    assert e.pollution_estimate_.confirmed == 10


def test_labels_in_random_order_estimate_the_rate_with_an_interval():
    X, y, labels = chosen()
    e = Elite.from_arrays(X, labels, epochs=1).fit()
    first = e.query(60, rule="random")   # the next 60 of the random order among the pool
    labels[first] = y[first]
    e2 = Elite.from_arrays(X, labels, epochs=1).fit()
    est = e2.pollution_estimate_
    assert est.ok and est.n >= 60 and est.low <= y.mean() <= est.high
    assert e2.pollution_ == pytest.approx(est.anomalies / est.n)
    order = e2.audit_order_
    assert (labels[order[: est.n]] >= 0).all() and labels[order[est.n]] < 0   # exactly the labeled prefix


def test_prefix_counts_earlier_labels_stops_at_a_gap_and_skips_excluded_unlabeled():
    order = np.arange(20)
    codes = np.full(20, -1)
    codes[:12] = 0
    codes[[3, 7]] = 1
    est = estimate_pollution(codes, np.array([], dtype=np.int64), order)
    assert (est.n, est.anomalies, est.population) == (12, 2, 20)
    codes[5] = -1                                   # a skipped item ends the sample: no cherry-picking
    assert not estimate_pollution(codes, np.array([], dtype=np.int64), order).ok
    est = estimate_pollution(codes, np.array([5, 3]), order)   # 5 excluded unlabeled: outside; 3 anomaly: in
    assert (est.n, est.anomalies, est.population) == (11, 2, 19)


def test_wilson_bounds_and_coverage_at_small_and_large_rates():
    est = estimate_pollution(np.r_[np.ones(2, int), np.zeros(38, int)], np.array([], dtype=np.int64),
                             np.arange(40))
    z, n, p = 1.959963984540054, 40, 2 / 40
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert est.low == pytest.approx(mid - half) and est.high == pytest.approx(mid + half)
    rng = np.random.default_rng(0)
    for rate in (0.059, 0.3):
        y = (rng.random(3000) < rate).astype(int)
        hits = []
        for _ in range(300):
            codes = np.full(len(y), -1)
            order = rng.permutation(len(y))
            codes[order[:30]] = y[order[:30]]
            e = estimate_pollution(codes, np.array([], dtype=np.int64), order)
            hits.append(e.low <= y.mean() <= e.high)
        assert np.mean(hits) >= 0.9, (rate, np.mean(hits))


@pytest.fixture
def session(tmp_path):
    return two_blobs(tmp_path, n_normal=170, anomaly="<i>anomaly</i>")


def test_panel_shows_no_figure_for_top_suspects_then_an_estimate_from_the_random_order(session):
    p = CleanPanel(session, anomaly="<i>anomaly</i>", annotator="ada", background=False, epochs=3)

    def press(times):
        for _ in range(times):
            i = p.current
            p.keyboard.press("a" if session.y_true[i] == 1 else "n")

    press(12)                                                   # top suspects, by score
    p.run()
    confirmed = int((session.labeled()["label"] == "<i>anomaly</i>").sum())
    assert "not estimated" in p.pollution.value and "%" not in p.pollution.value   # no figure, only the count
    assert f"{confirmed} of 200 items confirmed" in p.pollution.value
    assert "<i>anomaly</i>" not in p.pollution.value and html.escape("<i>anomaly</i>") in p.pollution.value
    assert "pseudo-labels" not in p.pollution.value
    p.rule.value = "random"
    press(40)
    v = p.pollution.value
    assert "estimated pollution" in v and 'data-low="' in v
    get = lambda k: float(v.split(f'data-{k}="')[1].split('"')[0])
    assert get("n") >= 40 and get("low") <= session.y_true.mean() <= get("high")
