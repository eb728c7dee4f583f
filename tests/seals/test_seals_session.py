"""Seals over a Session: reads embeddings, the saved index and the label store; labels round-trip."""
import numpy as np
import pytest

import dcai_widgets as dw


def test_seals_on_demo_session_follows_the_store(demo):
    s = demo
    y = s.y_true
    seeds = [int(np.flatnonzero(y == c)[0]) for c in range(len(s.classes))]
    s.label(seeds, [int(y[i]) for i in seeds])
    seals = dw.Seals(s, k=15, strategy="entropy").fit()
    first = seals.candidates()
    assert len(first) == 10 and not set(first) & set(seeds)
    # at most k neighbours per label, plus the exploration sample (1% of the items)
    assert 0 < seals.pool_fraction <= (10 * 15 + len(seals.explore_ids_)) / len(s)
    s.label(first, [int(y[i]) for i in first])           # the expert answers the queue
    seals.fit()
    rep = seals.report()
    assert rep["n_labeled"].tolist() == [10, 20] and rep["n_searched"].tolist() == [10, 10]
    assert not set(seals.candidates(30)) & set(seeds + first)
    # an undo in the store shrinks the pool on the next fit
    s.undo()
    seals.fit()
    assert seals.report()["n_labeled"].iloc[-1] == 10


def test_session_target_by_class_name(demo):
    s = demo
    cls = s.classes[3]
    with pytest.raises(ValueError, match="unknown target class"):
        dw.Seals(s, strategy="most_likely_positive", target="no-such-class")
    with pytest.raises(ValueError, match=f"k={len(s)}"):
        dw.Seals(s, k=len(s))
    seals = dw.Seals(s, k=30, strategy="most_likely_positive", target=cls, batch=20)
    neg = [int(i) for i in np.flatnonzero(s.y_true != 3)[:10]]
    s.label(neg, [int(s.y_true[i]) for i in neg])
    with pytest.raises(ValueError, match="seed"):
        seals.fit()
    pos = int(np.flatnonzero(s.y_true == 3)[0])
    s.label([pos], [cls])
    got = seals.fit().candidates()
    hits = int((s.y_true[got] == 3).sum())
    assert hits >= 10, hits                              # digits: one seed finds its class quickly
    assert seals.report()["positives_found"].iloc[-1] == 1
