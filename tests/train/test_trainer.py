"""Trainer over a real Session (SQLite store): which labels it trains on, determinism, the sampler being
really used, exclusions, propagated weights, early stopping, Stop, save/load and clear errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import dcai_widgets as dw
from dcai_widgets.train import ClassSampler, LossSampler, Trainer, UniformSampler, labeled_data
from dcai_widgets.train.loop import fit_loop


def blobs(n=240, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centers = rng.normal(0, 3, (k, d))
    return (centers[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y


@pytest.fixture
def sess(tmp_path):
    X, y = blobs()
    s = dw.Session.from_embeddings(X, ["a", "b", "c"], y_true=y, store=tmp_path / "l.db")
    s.label(np.arange(150), np.asarray(s.classes)[y[:150]], annotator="ann")
    return s


def test_trains_on_people_labels_and_lands_in_session(sess):
    t = Trainer(sess, epochs=15, progress=False).fit()
    assert sess.models["trainer"] is t
    assert list(t.history_.columns)[:4] == ["epoch", "loss", "val_loss", "val_acc"]
    assert len(t.train_ids_) + len(t.val_ids_) == 150 and not np.isin(t.val_ids_, t.train_ids_).any()
    unseen = np.arange(150, 240)
    assert t.evaluate(unseen, y=sess.y_true[unseen])["accuracy"] > 0.9
    p = t.predict_proba([0, 200])
    assert p.shape == (2, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert t.evaluate()["n"] == len(t.val_ids_)


def test_deterministic_under_a_seed_and_seed_matters(sess):
    a = Trainer(sess, epochs=5, seed=3, progress=False, name=None).fit()
    b = Trainer(sess, epochs=5, seed=3, progress=False, name=None).fit()
    c = Trainer(sess, epochs=5, seed=4, progress=False, name=None).fit()
    pd.testing.assert_frame_equal(a.history_, b.history_)
    assert np.array_equal(a.predict_proba(), b.predict_proba())
    assert not np.array_equal(a.predict_proba(), c.predict_proba())


def test_sampler_is_used_only_class_a_gives_a_model_biased_to_a(sess):
    t = Trainer(sess, epochs=5, sampler=ClassSampler({0: 1.0}), progress=False, holdout=0.0).fit()
    assert (t.predict() == 0).mean() > 0.95
    u = Trainer(sess, epochs=5, sampler=UniformSampler(), progress=False, holdout=0.0).fit()
    assert (u.predict() == 0).mean() < 0.5


def test_excluded_items_are_never_sampled(sess):
    sess.exclude([0, 1, 2, 3, 4, 5], annotator="ann", reason="test")
    drawn = []

    class Spy:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def step(self, ids, y):
            drawn.extend(int(i) for i in ids)

    t = Trainer(sess, epochs=3, record=lambda ep: Spy(), sampler=LossSampler(), progress=False).fit()
    assert drawn and not set(drawn) & {0, 1, 2, 3, 4, 5}
    assert not np.isin([0, 1, 2, 3, 4, 5], np.r_[t.train_ids_, t.val_ids_]).any()
    assert set(drawn) <= set(t.train_ids_.tolist())


def test_propagated_labels_only_when_chosen_weighted_by_confidence(sess):
    sess.set_propagated([200, 201, 0], ["a", "b", "c"], [0.25, 0.5, 0.9])
    assert len(labeled_data(sess)) == 150
    d = labeled_data(sess, propagated=True)
    assert len(d) == 152 and d.counts == {"labels": 150, "propagated": 2, "excluded": 0}
    w = dict(zip(d.ids.tolist(), d.weight.tolist()))
    assert w[200] == 0.25 and w[201] == 0.5 and w[0] == 1.0     # a person's label wins over the model's
    assert d.y[list(d.ids).index(0)] == sess.y_true[0]


def test_early_stopping_restores_the_best_epoch(sess):
    t = Trainer(sess, epochs=200, patience=2, lr=0.05, progress=False).fit()
    h = t.history_
    assert len(h) < 200
    best = h["val_loss"].min()
    assert t.evaluate()["loss"] == pytest.approx(best, rel=1e-4)


def test_stop_keeps_the_model_trained_so_far(sess):
    t = Trainer(sess, epochs=50, progress=False, callbacks=[lambda tr, row: tr.stop() if row["epoch"] == 2 else None])
    t.fit()
    assert t.stopped_ and len(t.history_) == 2
    assert t.predict_proba([0]).shape == (1, 3)


def test_save_and_load_weights_only(sess, tmp_path):
    t = Trainer(sess, epochs=3, progress=False).fit()
    t.save(tmp_path / "m.pt")
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(blob) == {"state_dict", "classes"}
    u = Trainer(sess, progress=False).load(tmp_path / "m.pt")
    assert np.allclose(u.predict_proba(), t.predict_proba())
    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a file written by Trainer.save"):
        Trainer(sess).load(tmp_path / "bad.pt")


def test_cnn_on_image_sessions_and_clear_errors(tmp_path, sess):
    s = dw.Session.demo(store=tmp_path / "d.db")
    s.label(np.arange(120), np.asarray(s.classes)[s.y_true[:120]], annotator="ann")
    t = Trainer(s, model="cnn", epochs=2, progress=False).fit()
    assert t.X_.ndim == 4 and t.predict_proba([0]).shape == (1, 10)
    with pytest.raises(ValueError, match="use model='mlp'"):
        Trainer(sess, model="cnn", progress=False).fit()
    with pytest.raises(ValueError, match="model='rnn'"):
        Trainer(sess, model="rnn", progress=False).fit()
    with pytest.raises(ValueError, match="epochs"):
        Trainer(sess, epochs=0).fit()
    with pytest.raises(ValueError, match="sources"):
        Trainer(sess, sources=("propagated",)).fit()
    empty = dw.Session.from_embeddings(blobs()[0], ["a", "b", "c"], store=tmp_path / "e.db")
    with pytest.raises(ValueError, match="nothing to train on"):
        Trainer(empty, progress=False).fit()


def test_fit_loop_rejects_a_bad_sampler():
    X, y = blobs(30)

    class Bad:
        def probabilities(self, *a):
            return np.zeros(3)

    with pytest.raises(ValueError, match="sampler must return 30"):
        fit_loop(torch.nn.Linear(8, 3), torch.from_numpy(X), torch.as_tensor(y), torch.ones(30), sampler=Bad())


def test_metastore_record_collects_factors_per_epoch_in_the_same_run(sess, tmp_path):
    from dcai_widgets.metastore import MetaStore
    from dcai_widgets.metastore.models import MLP

    model = MLP(8, 3, hidden=16)
    ms = MetaStore(model, layers=["fc1", "fc2"], path=tmp_path / "ms")
    try:
        t = Trainer(sess, model=model, epochs=2, lr=1e-3, holdout=0.2, patience=None, progress=False,
                    record=lambda ep: ms.record(f"epoch-{ep}", lr=1e-3)).fit()
        assert ms.checkpoints == ["epoch-1", "epoch-2"]
        assert set(ms.stored_ids().tolist()) == set(t.train_ids_.tolist())
        assert np.isfinite(ms.self_influence(t.train_ids_[:5])).all()
    finally:
        ms.close()


def test_ids_restrict_training_to_a_subset(sess):
    t = Trainer(sess, epochs=2, ids=list(range(0, 150, 3)) + [200], progress=False, name=None).fit()
    used = np.r_[t.train_ids_, t.val_ids_]
    assert len(used) == 50 and set(used.tolist()) <= set(range(0, 150, 3))    # 200 has no label


def test_accuracy_vs_labels_replays_the_label_history(sess):
    from dcai_widgets.train import accuracy_vs_labels

    sess.label(np.arange(150, 240), np.asarray(sess.classes)[sess.y_true[150:240]], annotator="ann")
    seen = []
    curve = accuracy_vs_labels(sess, points=3, epochs=10, on_point=seen.append, lr=0.01)
    assert list(curve["labels"]) == sorted(curve["labels"]) and curve["labels"].iloc[-1] == 240 - 48
    assert (curve["holdout"] == 48).all() and len(seen) == len(curve)
    assert curve["accuracy"].iloc[-1] > 0.9


def test_checkpoints_are_spread_over_training_and_end_at_the_kept_weights(sess):
    t = Trainer(sess, epochs=40, patience=None, progress=False, name=None, checkpoints=3).fit()
    eps = [int(k.split("-")[1]) for k in t.checkpoints_]
    assert len(eps) == 3 and eps == sorted(eps) and eps[-1] == 40 and eps[0] < 20      # bounded, spread out
    last = t.checkpoints_["epoch-40"]
    assert all(torch.equal(last[k], v) for k, v in t.model_.state_dict().items())
    early = Trainer(sess, epochs=200, patience=2, lr=0.05, progress=False, name=None).fit()
    kept = int(early.history_.loc[early.history_["val_loss"].idxmin(), "epoch"])
    assert len(early.history_) < 200 and list(early.checkpoints_)[-1] == f"epoch-{kept}"
    final = early.checkpoints_[f"epoch-{kept}"]
    assert all(torch.equal(final[k], v) for k, v in early.model_.state_dict().items())
    assert Trainer(sess, epochs=2, progress=False, name=None, checkpoints=0).fit().checkpoints_ == {}
    with pytest.raises(ValueError, match="checkpoints=-1"):
        Trainer(sess, checkpoints=-1).fit()


def test_refit_trains_a_fresh_copy_on_given_ids_and_stores_nothing(sess):
    t = Trainer(sess, epochs=5, progress=False).fit()
    a = t.refit(np.arange(0, 150, 2))
    b = t.refit(np.arange(0, 150, 2))
    assert sess.models == {"trainer": t} and a is not t and a.model_ is not t.model_
    assert set(np.r_[a.train_ids_, a.val_ids_].tolist()) == set(range(0, 150, 2))
    assert all(torch.equal(a.model_.state_dict()[k], v) for k, v in b.model_.state_dict().items())   # seeded
    from dcai_widgets.metastore.models import MLP

    own = MLP(8, 3, hidden=16)
    u = Trainer(sess, model=own, epochs=3, progress=False, name=None).fit()
    r = u.refit(np.arange(100))
    assert r.model_ is not own and not torch.equal(r.model_.fc1.weight, own.fc1.weight)
