"""Lancet on a Session: queue protocol, bad input, and a short end-to-end fit on digits."""
import warnings

import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.lancet import Lancet

FAST = dict(steps=120, dmn_steps=80, progress=False)


def test_bad_parameters_fail_at_construction(blobs_session):
    s = blobs_session()
    with pytest.raises(ValueError, match="batch"):
        Lancet(s, batch=0)
    with pytest.raises(ValueError, match="alpha_t"):
        Lancet(s, alpha_t=2)
    with pytest.raises(ValueError, match="backbone"):
        Lancet(s, backbone="resnet")
    with pytest.raises(TypeError, match="Session"):
        Lancet(object())


def test_not_fitted_is_clear(blobs_session):
    with pytest.raises(RuntimeError, match="fit"):
        Lancet(blobs_session()).candidates()


def test_session_without_embeddings(tmp_path):
    class NoEmb:
        has_embeddings = False
        classes = ["a", "b"]
        embeddings = None

        def __len__(self):
            return 4

        def label_vector(self):
            return np.full(4, -1)

    with pytest.raises(ValueError, match="no embeddings"):
        Lancet(NoEmb()).fit()


def test_cold_start_covers_clusters(blobs_session):
    s = blobs_session()
    lan = Lancet(s, batch=3, **FAST).fit()
    c = lan.candidates()
    assert len(c) == 3 and len(set(s.y_true[c])) == 3  # one per cluster, no labels needed
    assert lan.propagated().empty
    assert not lan.should_stop().stop and "no human labels" in lan.should_stop().reason
    assert s.models["lancet"] is lan


def test_missing_class_warns_and_propagates_seen_classes(blobs_session):
    s = blobs_session()
    ids = [0, 1, 40, 41]  # classes c0 and c1 only
    s.label(ids, s.y_true[ids])
    with pytest.warns(UserWarning, match="1 of 3 classes have no labels"):
        lan = Lancet(s, batch=5, **FAST).fit()
    p = lan.propagated()
    assert set(p["label"]) <= {"c0", "c1"} and len(p) == len(s) - 4
    # the unlabeled cluster c2 is far from every label: the DMN sends its items first
    assert (s.y_true[lan.candidates()] == 2).mean() >= 0.6
    # nothing lost: the human labels are intact and propagated ones are stored with a model version
    assert sorted(s.labeled()["id"]) == ids
    stored = s.propagated()
    assert len(stored) == len(p) and (stored["model_version"] == lan.model_version_).all()


def test_warn_false_keeps_notes_in_warnings_only(blobs_session):
    import warnings

    s = blobs_session()
    s.label([0, 1, 40, 41], s.y_true[[0, 1, 40, 41]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        lan = Lancet(s, batch=5, warn=False, **FAST).fit()
    assert any("1 of 3 classes have no labels" in w for w in lan.warnings_)


def test_batch_larger_than_unlabeled_and_all_labeled(blobs_session):
    s = blobs_session(n_per=6)
    s.label(list(range(15)), s.y_true[:15])
    with pytest.warns(UserWarning, match="larger than the 3 unlabeled"):
        lan = Lancet(s, batch=10, **FAST).fit()
    assert sorted(lan.candidates()) == [15, 16, 17]
    with pytest.warns(UserWarning, match="only 3 items are unlabeled"):
        assert len(lan.candidates(8)) == 3
    s.label([15, 16, 17], s.y_true[15:])
    with pytest.warns(UserWarning, match="already labeled"):
        lan.fit()
    assert lan.candidates() == [] and lan.propagated().empty and lan.should_stop().stop


def test_candidates_drop_items_labeled_since_fit(blobs_session):
    s = blobs_session()
    s.label([0, 40, 80], s.y_true[[0, 40, 80]])
    lan = Lancet(s, batch=4, **FAST).fit()
    first = lan.candidates()
    s.label(first[:1], s.y_true[first[:1]])
    assert first[0] not in lan.candidates() and lan.candidates() == first[1:]
    with pytest.raises(ValueError, match="non-negative"):
        lan.candidates(-1)


def test_end_to_end_digits(tmp_path):
    s = dw.Session.demo(store=tmp_path / "d.db")
    lan = Lancet(s, batch=20, **FAST)
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            c = lan.fit().candidates()
            assert len(c) == 20 and not (set(c) & seen)
            seen |= set(c)
            s.label(c, s.y_true[c], annotator="oracle")
        lan.fit()
    p = lan.propagated()
    assert len(p) == len(s) - 60
    acc = (p["label"].map(s.classes.index).to_numpy() == s.y_true[p["id"]]).mean()
    assert acc > 0.8, acc  # 60 labels; the benchmark measures the real figures
    assert p["confidence"].between(0, 1).all()
    r = lan.should_stop()
    assert {"stop", "dmn_loss", "chance", "min_weight", "alpha_t"} <= set(r.to_dict())
    assert len(lan.history_) == 4
