"""The Train tab: trains on the chosen labels with a live curve, Stop keeps the model, errors escaped."""
from __future__ import annotations

import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.widgets.train import TrainPanel


@pytest.fixture
def sess(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    X = (np.array([[0.0] * 4, [3.0] * 4])[y] + rng.normal(0, 1, (200, 4))).astype(np.float32)
    s = dw.Session.from_embeddings(X, ["cat", "dog"], y_true=y, store=tmp_path / "t.db")
    s.label(np.arange(60), np.asarray(s.classes)[y[:60]], annotator="ann")
    return s


def test_train_draws_the_curve_and_stores_the_model(sess):
    p = TrainPanel(sess, epochs=6, background=False, patience=None, lr=0.05)
    assert [b.value for b in p.sources] == [True, True, False] and not p.propagated.value
    p.train()
    t = sess.models["trainer"]
    assert t is p.fitted and len(t.history_) == 6
    assert p.curve.epochs == [1, 2, 3, 4, 5, 6] and p.progress.value == 6
    assert "stored as session.models" in p.status.value and "60 labels" in p.status.value
    assert not p.train_button.disabled and p.stop_button.disabled
    assert t.evaluate(np.arange(60, 200), y=sess.y_true[60:])["accuracy"] > 0.9


def test_stop_ends_training_and_keeps_the_model(sess):
    p = TrainPanel(sess, epochs=50, background=False, patience=None)
    p._epoch_now_orig = p._epoch_now

    def epoch_then_stop(row):
        p._epoch_now_orig(row)
        if row["epoch"] == 3:
            p.stop_button.click()

    p._epoch = epoch_then_stop
    p.train()
    t = sess.models["trainer"]
    assert t.stopped_ and len(t.history_) == 3 and p.curve.epochs == [1, 2, 3]
    assert "stopped after 3 epoch" in p.status.value


def test_errors_are_shown_escaped(sess, tmp_path):
    empty = dw.Session.from_embeddings(np.zeros((10, 2), np.float32), ["<b>x</b>", "y"], store=tmp_path / "e.db")
    p = TrainPanel(empty, background=False)
    p.train()
    assert 'data-state="error"' in p.status.value and "nothing to train on" in p.status.value
    for box in p.sources:
        box.value = False
    p.train()
    assert "choose at least one kind of label" in p.status.value
    assert "<b>" not in p.status.value


def test_accuracy_vs_labels_curve(sess):
    p = TrainPanel(sess, background=False, lr=0.05)
    p.accuracy_vs_labels()
    xs = list(p.labels_curve.source.data["labels"])
    assert len(xs) >= 2 and xs == sorted(xs) and xs[-1] == 48          # 60 labels, 12 held out
    assert 'data-state="done"' in p.labels_status.value and "of 12 held-out labels" in p.labels_status.value
    for box in p.sources:
        box.value = False
    p.accuracy_vs_labels()
    assert 'data-state="error"' in p.labels_status.value


def test_status_shows_holdout_accuracy_with_its_count_and_interval(sess):
    from dcai_widgets.calibration import wilson

    p = TrainPanel(sess, epochs=4, background=False)
    p.train()
    h = p.fitted.holdout_
    lo, hi = wilson(h["correct"], h["n"])
    assert h["n"] == 12
    assert f"holdout accuracy {h['correct']}/12 = {h['correct'] / 12:.0%}" in p.status.value
    assert f"95% interval {lo:.0%}-{hi:.0%}" in p.status.value
    assert "best holdout accuracy" not in p.status.value     # not the max over epochs (selection-biased)


def test_small_holdout_adds_a_k_fold_estimate_over_all_labels(sess):
    p = TrainPanel(sess, epochs=4, background=False)
    p.train()
    cv = p.fitted.cv_
    assert cv["n"] == 60 and cv["k"] == 5                                  # 12 held out: < 30
    assert f"5-fold cross-validation on all 60 labels: {cv['correct']}/60" in p.status.value
