"""Calibrated confidences (dcai_widgets.calibration): ECE, the calibrators, cross-fitting, and that the
engines show and store the calibrated figure (issue 14: "6 (100%)" on items that were 0, 3, 5)."""
import warnings

import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.calibration import (
    METHODS,
    SHOW_PERCENT_FROM,
    TopLabelCalibrator,
    cross_fit,
    ece,
    ece_floor,
    padded_log_proba,
    show_confidence,
)
from dcai_widgets.queue import UncertaintyQueue


def test_ece_by_hand():
    # two bins: conf 0.95 (2 items, 1 right) and 0.55 (2 items, 2 right)
    assert ece([0.95, 0.95, 0.55, 0.55], [1, 0, 1, 1]) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    assert ece([1.0, 0.0], [1, 0]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="one value per item"):
        ece([0.5], [1, 0])


def test_ece_floor_is_what_a_calibrated_predictor_scores_on_that_many_items():
    conf = np.random.default_rng(1).uniform(0.5, 1.0, 200)
    floor = ece_floor(conf)
    assert 0.02 < floor < 0.15                                    # 200 items cannot show an ECE of 0
    assert ece_floor(np.tile(conf, 50)) < floor / 4                # 50x the items: about 1/7 of it
    assert ece_floor(conf, 20, np.random.default_rng(0)) == floor  # the default rng is seeded 0
    assert ece_floor(np.ones(30)) == 0.0                           # certain and always right


def _overconfident(n, rng, K=5, sharpen=4.0):
    """Logits whose softmax is the true probability, then sharpened: an overconfident model."""
    logits = rng.normal(0, 1.2, (n, K))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    truth = np.array([rng.choice(K, p=row) for row in p])
    z = sharpen * logits
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return logp, truth


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_calibration_on_a_fixed_seed_brings_ece_under_the_bound(method):
    rng = np.random.default_rng(0)
    fit_logp, fit_y = _overconfident(600, rng)
    test_logp, test_y = _overconfident(4000, rng)
    ok_test = test_logp.argmax(1) == test_y
    raw = ece(np.exp(test_logp.max(1)), ok_test)
    cal = TopLabelCalibrator(method).fit(fit_logp, fit_logp.argmax(1) == fit_y).predict(test_logp)
    assert raw > 0.15                     # the sharpened model is badly overconfident
    assert ece(cal, ok_test) < 0.05       # the calibrator, fit on other items, fixes it
    assert cal.shape == (4000,)
    assert ((cal > 0) & (cal < 1)).all()


def test_coverage_needs_distances_and_one_outcome_never_gives_certainty():
    logp = np.log(np.array([[0.9, 0.1], [0.8, 0.2], [0.99, 0.01]]))
    with pytest.raises(ValueError, match="distance"):
        TopLabelCalibrator("coverage").fit(logp, [True, True, True])
    c = TopLabelCalibrator("platt").fit(logp, [True, True, True]).predict(logp)
    assert (c < 1).all()                 # 3 of 3 right is not proof of 100%
    assert TopLabelCalibrator("temperature").fit(np.zeros((0, 4)), []).predict(np.zeros((2, 4))).tolist() == [0.25, 0.25]
    with pytest.raises(ValueError, match="method"):
        TopLabelCalibrator("magic").fit(logp, [True, False, True])


def test_cross_fit_never_predicts_an_item_its_model_was_trained_on():
    y = np.repeat(np.arange(3), 10)
    ids = np.arange(100, 130)
    seen_pairs = []

    def fit_predict(train, test):
        assert not set(train) & set(test)
        seen_pairs.append((set(train.tolist()), set(test.tolist())))
        return padded_log_proba(np.zeros((len(test), 1)), np.array([0]), 3)

    logp, ok, dist = cross_fit(ids, y, fit_predict, folds=3, X=np.random.default_rng(0).normal(size=(130, 2)))
    assert len(seen_pairs) == 3 and set().union(*(t for _, t in seen_pairs)) == set(ids.tolist())
    assert logp.shape == (30, 3) and ok.sum() == 10 and (dist > 0).all()


def test_uncertain_before_fifty_labels():
    assert show_confidence(0.97, SHOW_PERCENT_FROM - 1) == "uncertain"
    assert show_confidence(0.97, SHOW_PERCENT_FROM) == "97%"
    assert show_confidence(None, 500) == "uncertain"


def test_queue_suggestions_are_calibrated_on_digits(demo):
    """100 random human labels on digits: the regression's own probability is off by > 0.1 (ECE on the
    unlabeled items); the calibrated confidence the queue suggests with is within 0.06."""
    y = demo.y_true
    ids = np.random.default_rng(0).choice(len(y), 100, replace=False)
    demo.label(ids, y[ids], annotator="oracle")
    q = UncertaintyQueue(demo).fit()
    unl = np.flatnonzero(demo.label_vector() < 0)
    ok = q.proba_[unl].argmax(1) == y[unl]
    raw = ece(q.proba_[unl].max(1), ok)
    cal = ece(q.confidence_[unl], ok)
    assert raw > 0.1 and cal < 0.06, (raw, cal)
    label, conf = q.suggest(int(unl[0]))
    assert conf == pytest.approx(q.confidence_[unl[0]])
    with pytest.raises(ValueError, match="calibration"):
        UncertaintyQueue(demo, calibration="best")


def test_lancet_stores_the_calibrated_confidence(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (3, 6))
    X = np.vstack([c + rng.normal(0, 1.5, (60, 6)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(3), 60)
    s = dw.Session.from_embeddings(X, ["a", "b", "c"], y_true=y, store=tmp_path / "c.db")
    ids = rng.choice(len(y), 30, replace=False)
    s.label(ids, y[ids], annotator="ada")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lan = dw.Lancet(s, batch=5, steps=80, dmn_steps=40, progress=False).fit()
    assert lan.oof_ is not None and len(lan.oof_[0]) == 30           # cross-fitted on the 30 labels
    stored = s.propagated().set_index("id")["confidence"]
    unl = stored.index.to_numpy()
    assert np.allclose(stored.to_numpy(), lan.confidence_[unl])       # what is stored is the calibrated one
    assert not np.allclose(stored.to_numpy(), lan.raw_confidence_[unl])
    assert lan.suggest(int(unl[0]))[1] == pytest.approx(lan.confidence_[unl[0]])
    assert lan.history_[-1]["calibrated"] is True
    with pytest.raises(ValueError, match="calibration"):
        dw.Lancet(s, calibration="best")
    assert "coverage" in METHODS


def test_lancet_fold_models_close_to_the_full_model_fixed_seed():
    """Issue 14, second pass: the calibrator learns from fold models that train without one fold of the
    human labels, but the confidence shown is the full model's. With 3 folds (the old default) a fold
    model saw 20 of these 30 labels, was weaker, and the calibrated confidence of the propagated labels
    averaged 0.81 for labels right 0.90 of the time (ECE 0.092); with the default 5 folds (24 of 30) it
    holds to 0.05. Fixed seed 1 of four synthetic seeds tried: on the others the two were within 0.025 of
    each other (one a tie, one 0.013 better with 3 folds, one 0.024 better with 5); the benchmark's
    real-data evidence is in benchmarks/RESULTS.md (MNIST-10k at 50 labels: 0.067 -> 0.022)."""
    rng = np.random.default_rng(1)
    centers = rng.normal(0, 3, (4, 8))
    X = np.vstack([c + rng.normal(0, 2.2, (150, 8)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(4), 150)
    s = dw.Session.from_embeddings(X, ["a", "b", "c", "d"], y_true=y)
    ids = rng.choice(len(y), 30, replace=False)
    s.label(ids, y[ids], annotator="ada")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lan = dw.Lancet(s, batch=5, steps=80, dmn_steps=40, progress=False, seed=0).fit()
    assert lan.calibration_folds == 5 and len(lan.oof_[0]) == 30
    unl = np.flatnonzero(s.label_vector() < 0)
    ok = lan.log_proba_[unl].argmax(1) == y[unl]
    assert abs(lan.confidence_[unl].mean() - ok.mean()) < 0.05
    assert ece(lan.confidence_[unl], ok) < 0.05


# -- the live audit gate (SuggestionAudit) ---------------------------------------------------------

def test_wilson_interval_matches_the_formula_and_brackets_the_rate():
    from dcai_widgets.calibration import wilson

    lo, hi = wilson(34, 50)
    assert lo == pytest.approx(0.5419, abs=1e-4) and hi == pytest.approx(0.7924, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0) and wilson(20, 20)[1] == 1.0 and wilson(20, 20)[0] < 1.0


def test_audit_closes_on_a_miscalibrated_stream_and_opens_on_a_calibrated_one():
    from dcai_widgets.calibration import SuggestionAudit

    rng = np.random.default_rng(0)
    closed = opened = 0
    for _ in range(40):
        bad, good = SuggestionAudit(), SuggestionAudit()
        for _ in range(50):
            bad.record(0.86, rng.random() < 0.68)     # issue 14: shown at 86%, right 68%
            c = rng.uniform(0.55, 0.99)
            good.record(c, rng.random() < c)          # right as often as it says
        closed += not bad.verdict().open
        opened += good.verdict().open
    # both are tests at 95%; with the default window of 30 records an 18-point gap is caught 81% of the time
    # and a calibrated stream passes 90% (2,000 simulated streams; a window of 50: 93% / 90%)
    assert closed >= 30 and opened >= 30
    v = bad.verdict()
    assert v.n == bad.window == 30 and v.k == sum(bad.correct_) and v.mean_conf == pytest.approx(0.86) and v.reason


def test_audit_binned_gap_closes_when_the_overall_mean_hides_it():
    from dcai_widgets.calibration import SuggestionAudit

    a = SuggestionAudit(window=50)
    for j in range(50):   # half at 95% all wrong, half at 25% all right: mean 60% vs right 50%
        a.record(0.95, False) if j % 2 else a.record(0.25, True)
    v = a.verdict()
    assert not v.open and v.k == 25 and v.low <= v.mean_conf <= v.high and "shown ~25%, right 25/25" in v.reason


def test_audit_window_forgets_old_records_and_needs_min_n():
    from dcai_widgets.calibration import SuggestionAudit

    a = SuggestionAudit(window=30, min_n=10)
    for _ in range(9):
        a.record(0.9, True)
    assert not a.verdict().open and "only 9 of 10" in a.verdict().reason
    for _ in range(30):
        a.record(0.9, False)                  # a bad run closes the gate
    assert not a.verdict().open and a.verdict().k == 0 and a.verdict().n == 30
    for _ in range(30):
        a.record(0.9, True)                   # the window holds only the last 30: the old run is gone
    v = a.verdict()
    assert v.open and (v.k, v.n) == (30, 30) and a.total_ == 69


def test_audit_rejects_what_is_not_a_probability():
    from dcai_widgets.calibration import SuggestionAudit

    with pytest.raises(ValueError, match="window"):
        SuggestionAudit(window=0)
    with pytest.raises(ValueError, match="min_n"):
        SuggestionAudit(window=10, min_n=11)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SuggestionAudit().record(1.5, True)
