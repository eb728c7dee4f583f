"""SharedQueue over a real SQLite store: annotators never get the same item outside the overlap, also
when they draw at the same time from separate connections; leases lapse without a heartbeat and hold
with one; a restarted kernel gets its claims back first; skip and close release claims."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.queue import UncertaintyQueue
from dcai_widgets.team import SharedQueue, overlap_rule, unit_hash

CLASSES = ["a", "b", "c"]


def blobs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = (rng.normal(size=(n, 4)) + 3 * np.eye(4)[y]).astype(np.float32)
    return X, y


def session(store, n=300):
    X, y = blobs(n)
    return dw.Session.from_embeddings(X, CLASSES, y_true=y, store=store)


def shared(s, who, **kw):
    kw.setdefault("heartbeat_s", 0)
    return SharedQueue(s, UncertaintyQueue(s, cold_start=5), annotator=who, **kw).fit()


def test_two_annotators_get_disjoint_claims_and_labels_consume_them(tmp_path):
    s = session(tmp_path / "l.db")
    qa, qb = shared(s, "ada"), shared(s, "bo")
    a, b = qa.candidates(), qb.candidates()
    assert len(a) == len(b) == qa.ahead == 8 and not set(a) & set(b)
    assert qa.candidates() == a               # asking again returns the claims already held
    s.label(a[:1], ["a"], annotator="ada")
    assert a[0] not in set(s.store.claims()["id"])
    assert a[0] not in qb.candidates(50) and a[0] not in qa.candidates(50)


def test_concurrent_draws_from_separate_connections_never_share_an_item(tmp_path):
    path = tmp_path / "l.db"
    session(path)                                   # bind the store once
    shown: dict[str, list[int]] = {}
    errors = []

    def annotator(name):
        try:
            s = session(path)                       # its own Session and SQLite connection, like a kernel
            q = shared(s, name, ahead=2)
            mine = []
            for _ in range(40):
                got = q.candidates()
                if not got:
                    break
                mine.append(got[0])
                s.label([got[0]], ["a"], annotator=name)
            shown[name] = mine
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=annotator, args=(f"w{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    allshown = [i for v in shown.values() for i in v]
    assert len(allshown) == 160 and len(set(allshown)) == 160   # every draw distinct across annotators
    ev = dw.LabelStore(path).events(("human",))
    assert ev.groupby("id")["annotator"].nunique().max() == 1


def test_overlap_fraction_and_count(tmp_path):
    rule = overlap_rule(0.3)
    picked = [i for i in range(2000) if rule(i) == 2]
    assert 0.25 < len(picked) / 2000 < 0.35 and picked == [i for i in range(2000) if unit_hash(i) < 0.3]
    assert overlap_rule(3) == 3 and overlap_rule(0.0) == 1
    for bad in (-0.1, 1.5, 0, True, "x"):
        with pytest.raises((ValueError, TypeError), match="overlap"):
            overlap_rule(bad)

    s = session(tmp_path / "l.db", n=60)
    for who in ("ada", "bo"):        # one after the other: bo gets the overlap items ada labeled
        q = shared(s, who, overlap=0.3)
        while True:
            got = q.candidates(10)
            if not got:
                break
            s.label(got, ["a"] * len(got), annotator=who)
    per_item = s.store.events(("human",)).groupby("id")["annotator"].nunique()
    assert len(per_item) == 60
    twice = set(per_item[per_item == 2].index)
    assert twice == {i for i in range(60) if unit_hash(i) < 0.3} and twice

    s2 = session(tmp_path / "l2.db", n=30)
    for who in ("ada", "bo", "cy"):
        q = shared(s2, who, overlap=2)
        got = q.candidates(30)
        s2.label(got, ["b"] * len(got), annotator=who)
    per_item = s2.store.events(("human",)).groupby("id")["annotator"].nunique()
    assert (per_item == 2).all() and len(per_item) == 30


def test_leases_lapse_without_heartbeat_and_hold_with_one(tmp_path):
    s = session(tmp_path / "l.db")
    qa = shared(s, "ada", lease_s=0.6)
    a = qa.candidates()
    qb = shared(s, "bo")
    assert not set(qb.candidates(10)) & set(a)
    time.sleep(0.8)                               # ada's page died: no heartbeat
    assert set(a) <= set(qb.candidates(20))

    s2 = session(tmp_path / "l2.db")
    qc = shared(s2, "cy", lease_s=0.6, heartbeat_s=0.1)
    c = qc.candidates()
    time.sleep(1.2)                               # heartbeat renews well past the lease
    assert not set(shared(s2, "dee").candidates(20)) & set(c)
    qc.close()                                    # a page closed cleanly gives its items back at once
    assert "cy" not in set(s2.store.claims()["annotator"])


def test_restart_gets_own_claims_back_first_and_skip_releases(tmp_path):
    path = tmp_path / "l.db"
    s = session(path)
    q = shared(s, "ada", lease_s=60)
    before = q.candidates(5)
    s.label(before[:2], ["a", "b"], annotator="ada")
    del q
    s2 = session(path)                            # a new kernel after a server restart
    q2 = SharedQueue(s2, UncertaintyQueue(s2, cold_start=5, random_state=7), annotator="ada",
                     heartbeat_s=0).fit()
    assert sorted(q2.candidates(3)) == sorted(before[2:5])
    q2.skip(before[2])
    assert before[2] not in set(s2.store.claims()["id"])
    assert before[2] not in q2.candidates(10)
    assert before[2] in shared(s2, "bo").candidates(400)


def test_bad_arguments_are_named(tmp_path):
    s = session(tmp_path / "l.db")
    with pytest.raises(ValueError, match="annotator"):
        SharedQueue(s, annotator=" ")
    with pytest.raises(ValueError, match="lease_s"):
        SharedQueue(s, annotator="a", lease_s=0)
    with pytest.raises(TypeError, match="candidates"):
        SharedQueue(s, queue=object(), annotator="a")
    early = SharedQueue(s, annotator="a", heartbeat_s=0).candidates(2)   # before fit: the fixed order
    assert len(early) == 2 and set(early) <= set(s.store.claims()["id"])

    class NoClaims:
        store = object()
        annotator = "a"

    with pytest.raises(TypeError, match="claims"):
        SharedQueue(NoClaims())


def test_close_releases_only_this_pages_claims(tmp_path):
    s = session(tmp_path / "l.db")
    page1, page2 = shared(s, "ada"), shared(s, "ada")       # the same person in two tabs
    one = page1.candidates(4)
    two = page2.candidates(6)               # resumes the person's held claims first, then 3 more
    assert set(one) < set(two)
    page1.close()
    left = set(s.store.claims()["id"])
    assert left == set(two) - set(one)


def test_seals_and_lancet_rank_a_shared_queue(tmp_path):
    s = session(tmp_path / "l.db")
    s.label([0, 1, 2, 3, 4, 5], ["a", "b", "c", "a", "b", "c"], annotator="seed")
    qa = SharedQueue(s, dw.Seals(s, k=10), annotator="ada", heartbeat_s=0).fit()
    qb = SharedQueue(s, dw.Lancet(s, steps=30, dmn_steps=20, progress=False, warn=False, calibration=None), annotator="bo", heartbeat_s=0).fit()
    a, b = qa.candidates(20), qb.candidates(20)
    assert len(a) == len(b) == 20 and not set(a) & set(b)
    assert a[:5] == [i for i in qa.order_ if i not in b][:5]     # in SEALS' order, minus bo's claims
