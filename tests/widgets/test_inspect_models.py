"""The Inspect panel on a model the Train tab stored (issue 17) and its calibrated confidences (issue 14)."""
from __future__ import annotations

import html

import numpy as np
import pytest
import torch

import dcai_widgets as dw
from dcai_widgets.calibration import SHOW_PERCENT_FROM
from dcai_widgets.metastore.inspect_model import calibrate, inspect_model_from
from dcai_widgets.train import Trainer
from dcai_widgets.widgets.inspect import OWN, InspectPanel

from .test_inspect import _one_thread  # noqa: F401  (autouse: one torch thread)


def blobs(tmp_path, n=300, k=3, d=6, n_labeled=150, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = (rng.normal(0, 2.0, (k, d))[y] + rng.normal(0, 1.3, (n, d))).astype(np.float32)
    names = [f"c{i}" for i in range(k)]
    s = dw.Session.from_embeddings(X, names, y_true=y, store=tmp_path / "l.db")
    given = y[:n_labeled].copy()
    flip = rng.random(n_labeled) < noise
    given[flip] = (given[flip] + rng.integers(1, k, flip.sum())) % k
    s.label(np.arange(n_labeled), np.asarray(names)[given], annotator="ann")
    return s, given


def test_inspect_uses_the_model_the_trainer_stored(tmp_path):
    s, _ = blobs(tmp_path)
    p = InspectPanel(s, background=False, n_suspects=4, k=5, calibrate=False)     # own model first
    assert p.model_pick.options == ((("Inspect's own small model", OWN),))
    own = p.im
    t = Trainer(s, epochs=8, progress=False, patience=None, lr=1e-2).fit()        # the Train tab's model
    assert [v for _d, v in p.model_pick.options] == [OWN, "trainer"]              # listed on the "model" event
    assert p.im is own                                                            # nothing changes unasked
    p.model_pick.value = "trainer"
    im = p.im
    assert im is not own and im.source == "trainer" and p.train_pick.disabled
    assert "session.models['trainer']: 120 training + 30 holdout" in html.unescape(p.training_info.value)
    # the trainer's weights, split and checkpoints, not the panel's own model
    assert set(im.val_ids) == set(t.val_ids_) and set(im.train_ids) == set(t.train_ids_)
    pred, _ = im.predict(im.val_ids)
    assert np.array_equal(pred, t.predict(im.val_ids))
    assert list(im.states) == list(t.checkpoints_) and len(im.states) == 3 and im.ms.layers == ["fc1", "fc2"]
    assert set(p.pro_grid.ids) <= set(t.train_ids_.tolist()) and len(p.pro_grid.ids) == 5
    assert len(p.suspects_box.children) == 4
    # the stored model is not touched by factor collection
    before = {k: v.clone() for k, v in t.model_.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in s.models["trainer"].model_.state_dict().items())
    # labels given elsewhere do not retrain it; retraining in the Train tab re-inspects the new weights
    s.label([200], ["c2"], annotator="other")
    assert p.im is im
    t2 = Trainer(s, epochs=3, progress=False, patience=None, seed=1).fit()
    assert p.im is not im and np.array_equal(p.im.predict(p.im.val_ids)[0], t2.predict(p.im.val_ids))
    p.model_pick.value = OWN
    assert p.im.source is None and not p.train_pick.disabled
    p.close()


def test_a_model_without_holdout_or_name_is_refused_clearly(tmp_path):
    s, _ = blobs(tmp_path)
    Trainer(s, epochs=2, progress=False, holdout=0.0, name="noval").fit()
    with pytest.raises(ValueError, match="without a holdout"):
        inspect_model_from(s, "noval")
    with pytest.raises(ValueError, match="model='nope': session.models has no trained model"):
        InspectPanel(s, background=False, model="nope")


def test_linear_trainer_model_is_inspected_too(tmp_path):
    s, _ = blobs(tmp_path)
    t = Trainer(s, epochs=4, progress=False, hidden=0, name="lin").fit()
    im = inspect_model_from(s, "lin")
    assert im.ms.layers == ["0"]
    assert np.array_equal(im.predict(im.val_ids)[0], t.predict(im.val_ids))
    im.collect()
    assert im.collected
    im.close()


@pytest.mark.parametrize("source", ["own", "trainer"])
def test_confidence_is_calibrated_on_cross_fitted_labels(tmp_path, source):
    # 25% of the labels are wrong: a wide MLP trained 60 epochs fits them and is overconfident on the
    # held-out items (raw mean 0.77 for 57% right); the calibrated confidence says about what it gets right
    from dcai_widgets.calibration import ece

    s, given = blobs(tmp_path, n=600, n_labeled=500, noise=0.25, seed=2)
    if source == "trainer":
        Trainer(s, epochs=60, progress=False, patience=None, lr=1e-2, hidden=256).fit()
        p = InspectPanel(s, background=False, model="trainer", n_suspects=3)
    else:
        p = InspectPanel(s, background=False, n_suspects=3, epochs=60)
    im = p.im
    assert im.confidence is not None and im.n_calibration == len(im.train_ids) >= SHOW_PERCENT_FROM
    assert len(im.confidence) == len(im.val_ids) and ((im.confidence > 0) & (im.confidence < 1)).all()
    pred, raw = im.predict(im.val_ids)
    right = pred == im.y[im.val_ids]          # against the (noisy) labels the confidence speaks of
    assert ece(im.confidence, right) < 0.08 and ece(im.confidence, right) < ece(raw, right) - 0.1
    # the list shows percentages, not the raw probability; the status says what they are
    label = p.items_list.options[0][0]
    assert label.endswith("%)") and "calibrated on out-of-fold predictions" in p.status.value
    p.close()


def test_uncertain_before_enough_labels_or_without_calibration(tmp_path):
    s, _ = blobs(tmp_path, n_labeled=40)
    p = InspectPanel(s, background=False, n_suspects=3)
    assert p.im.confidence is None
    assert all(lab.endswith("(uncertain)") for lab, _ in p.items_list.options)
    assert f"fewer than {SHOW_PERCENT_FROM} labels" in p.status.value
    assert "(uncertain)" in p.query_info.value
    p.close()
    (tmp_path / "b").mkdir()
    s2, _ = blobs(tmp_path / "b", n_labeled=150)
    p2 = InspectPanel(s2, background=False, n_suspects=3, calibrate=False)
    assert p2.im.confidence is None and "calibration is off" in p2.status.value
    p2.close()


def test_calibrate_needs_a_model_that_can_be_refit(tmp_path):
    s, _ = blobs(tmp_path)
    Trainer(s, epochs=2, progress=False).fit()
    im = inspect_model_from(s, "trainer")
    im.refit = None
    with pytest.raises(ValueError, match="cannot be retrained"):
        calibrate(im)
    im.close()


def test_the_inspect_model_starts_from_its_seed_whatever_the_global_generator_holds(tmp_path):
    """The model's initial weights came from torch's global generator (the seed was set after building it):
    the same labels gave calibrated-confidence ECEs of 0.05-0.11 from run to run, and this suite's
    calibration test failed one run in three."""
    from dcai_widgets.metastore.inspect_model import build_inspect_model

    s, _ = blobs(tmp_path, n=200, n_labeled=120, seed=3)
    runs = []
    for noise in (1, 2):
        torch.manual_seed(noise)            # whatever ran before
        torch.rand(noise * 7)
        im = build_inspect_model(s, epochs=2, checkpoints=1)
        runs.append(im.predict(im.val_ids)[1])
        im.close()
    np.testing.assert_array_equal(runs[0], runs[1])
