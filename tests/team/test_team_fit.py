"""One fit per team (dcai_widgets.team.team_fit) on a real SQLite file and a real PostgreSQL server: the
store's lease goes to exactly one holder at a time and lapses on its own; one page fits the engine and
publishes its ranking and suggestions, the others adopt them without fitting; a fit is due again only
after enough new labels; a page whose fit is under way elsewhere waits for it; a published fit of
another engine is not adopted; the panel's keypress path works from the adopted ranking."""
from __future__ import annotations

import threading
import time

import pytest
from test_shared_queue import CLASSES, blobs  # the same three blobs (pytest puts this folder on sys.path)

import dcai_widgets as dw
from dcai_widgets.queue import UncertaintyQueue
from dcai_widgets.store import open_store
from dcai_widgets.team import SharedQueue
from dcai_widgets.team.team_fit import TeamFit


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """Where a store lives (a path or a URL): each Session opening it gets its own connection."""
    if request.param == "sqlite":
        return str(tmp_path / "l.db")
    return request.getfixturevalue("pg_server").new_database()


def session(target, n=300):
    X, y = blobs(n)
    return dw.Session.from_embeddings(X, CLASSES, y_true=y, store=target)


class CountingQueue(UncertaintyQueue):
    """UncertaintyQueue counting its fits (to see which page did the work)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.fits = 0

    def fit(self):
        self.fits += 1
        return super().fit()


def page(s, who, **kw):
    kw.setdefault("heartbeat_s", 0)
    kw.setdefault("fit_share", 1.0)
    return SharedQueue(s, CountingQueue(s, cold_start=5), annotator=who, **kw)


def label_some(s, ids, who):
    y = s.y_true
    s.label(list(ids), [CLASSES[int(y[i])] for i in ids], annotator=who)


def test_lease_has_one_holder_at_a_time_and_lapses(target):
    st = open_store(target)
    other = open_store(target)                           # another process's connection
    assert st.lease_holder("queue-fit") is None
    assert st.try_lease("queue-fit", "ada#1", 0.5)
    assert not other.try_lease("queue-fit", "bo#1", 60)  # held by ada
    assert st.try_lease("queue-fit", "ada#1", 0.5)       # the holder renews
    assert other.lease_holder("queue-fit") == "ada#1"
    time.sleep(0.7)                                      # ada's lease runs out
    assert other.lease_holder("queue-fit") is None
    assert other.try_lease("queue-fit", "bo#1", 60)
    assert not st.release_lease("queue-fit", "ada#1")    # not ada's to give back any more
    assert other.release_lease("queue-fit", "bo#1") and st.lease_holder("queue-fit") is None
    st.publish("queue-fit", {"ranking": [3, 1, 2], "note": "<b>x</b>"})
    assert other.published("queue-fit") == {"ranking": [3, 1, 2], "note": "<b>x</b>"}
    assert st.published("nothing") is None
    with pytest.raises(ValueError, match="holder"):
        st.try_lease("queue-fit", "", 1)
    st.close(), other.close()


def test_concurrent_lease_requests_give_it_to_exactly_one(target):
    open_store(target).close()
    wins, errors = [], []
    barrier = threading.Barrier(6)

    def ask(k):
        try:
            st = open_store(target)
            barrier.wait()
            if st.try_lease("queue-fit", f"p{k}", 60):
                wins.append(k)
            st.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(wins) == 1


def test_one_page_fits_for_the_team_and_the_others_adopt(target):
    s1, s2, s3 = session(target), session(target), session(target)   # three kernels on one store
    label_some(s1, range(12), "ada")
    a, b, c = page(s1, "ada"), page(s2, "bo"), page(s3, "cy")
    a.fit()
    assert a.team_.fits_ == 1 and a.queue.fits == 1 and a.changed_
    b.fit(), c.fit()
    assert b.queue.fits == 0 and c.queue.fits == 0          # nobody else fitted
    assert b.team_.adopted_ == 1 and b.changed_ and b.order_ == a.order_ == c.order_
    assert b.n_labeled_ == a.n_labeled_ == 12 and b.classes_seen_ == [0, 1, 2]
    ranked = a.order_[:5]
    assert [b.suggest(i) for i in ranked] == [pytest.approx(a.suggest(i)) for i in ranked]
    assert b.suggest(ranked[0])[0] in CLASSES
    b.fit()
    assert not b.changed_ and b.team_.adopted_ == 1           # nothing new: unchanged
    # claims come from the adopted ranking, still one annotator per item
    ga, gb, gc = a.candidates(), b.candidates(), c.candidates()
    assert not (set(ga) & set(gb) or set(gb) & set(gc) or set(ga) & set(gc))
    assert set(gb) <= set(a.order_[:20])


def test_a_fit_is_due_again_only_after_enough_new_labels(target):
    s1, s2 = session(target), session(target)
    label_some(s1, range(10), "ada")
    a, b = page(s1, "ada", refit_labels=3), page(s2, "bo", refit_labels=3)
    a.fit(), b.fit()
    label_some(s2, [20, 21], "bo")                    # two new labels: not yet due
    b.fit()
    assert b.queue.fits == 0 and not b.changed_
    label_some(s2, [22], "bo")                        # the third: due; bo's page fits now
    b.fit()
    assert b.queue.fits == 1 and b.team_.fits_ == 1 and b.n_labeled_ == 13
    a.fit()
    assert a.queue.fits == 1 and a.team_.adopted_ == 1 and a.order_ == b.order_
    assert a.suggest(a.order_[0]) == pytest.approx(b.suggest(a.order_[0]))
    assert not (set(range(10)) | {20, 21, 22}) & set(a.order_)   # labeled items are not ranked


def test_fits_are_throttled_by_their_cpu_share(target):
    s1 = session(target)
    label_some(s1, range(10), "ada")
    a = page(s1, "ada", refit_labels=1, fit_share=0.001)     # fits may take 0.1% of a core
    a.fit()
    label_some(s1, [30, 31], "ada")
    a.fit()
    assert a.queue.fits == 1 and not a.changed_             # due by labels, but not by CPU share
    st = s1.store.published("queue-fit")
    assert st["next_fit_at"] - st["fitted_at"] == pytest.approx(st["fit_cpu_s"] * 999, rel=1e-6)


def test_a_page_waits_for_the_first_fit_under_way_elsewhere(target):
    s1, s2 = session(target), session(target)
    label_some(s1, range(10), "ada")
    b = page(s2, "bo")
    assert s1.store.try_lease("queue-fit", "ada#elsewhere", 30)    # ada's page is fitting

    def ada_publishes():
        time.sleep(0.4)
        a = page(s1, "ada")
        a.team_.member = "ada#elsewhere"
        a.fit()                                      # holds the lease already: fits and publishes

    t = threading.Thread(target=ada_publishes)
    t.start()
    t0 = time.monotonic()
    b.fit()
    t.join()
    assert b.queue.fits == 0 and b.team_.adopted_ == 1 and b.order_
    assert 0.3 < time.monotonic() - t0 < 10
    # later fits are not waited for: while one is under way, a page takes the latest published one
    label_some(s2, [40, 41, 42, 43, 44], "bo")
    assert s1.store.try_lease("queue-fit", "ada#elsewhere", 30)
    version = b.team_.state_["version"]
    t0 = time.monotonic()
    b.fit()
    assert b.queue.fits == 0 and not b.changed_ and b.team_.state_["version"] == version
    assert time.monotonic() - t0 < 5


def test_a_dead_fitters_lease_does_not_stop_the_team_for_long(target):
    s1 = session(target)
    label_some(s1, range(10), "ada")
    assert s1.store.try_lease("queue-fit", "crashed#page", 0.3)    # a page died mid-fit
    a = page(s1, "ada")
    a.fit()                                          # waits, finds nothing, the lease lapses
    assert a.queue.fits == 0 and a.order_ is None
    time.sleep(0.4)
    a.fit()
    assert a.queue.fits == 1 and a.order_


def test_a_published_fit_of_another_engine_is_not_adopted(target):
    s1, s2 = session(target), session(target)
    label_some(s1, range(10), "ada")
    page(s1, "ada").fit()
    other = TeamFit(s2.store, "some.OtherEngine", "bo#1")
    assert other.step(lambda: {"ranking": [1, 2]}) == "fitted"    # due for its engine: fits its own
    assert s2.store.published("queue-fit")["engine"] == "some.OtherEngine"
    q = page(s2, "bo")
    q.fit()
    assert q.queue.fits == 1                         # UncertaintyQueue's page refits, not adopting
    with pytest.raises(ValueError, match="fit_share"):
        TeamFit(s2.store, "x", "y", fit_share=0)


def test_without_team_fit_every_page_fits_its_own(target):
    s1, s2 = session(target), session(target)
    label_some(s1, range(10), "ada")
    a, b = page(s1, "ada", team_fit=False), page(s2, "bo", team_fit=False)
    a.fit(), b.fit()
    assert a.queue.fits == b.queue.fits == 1 and a.team_ is None
    assert s1.store.published("queue-fit") is None


def test_team_panels_label_from_the_adopted_ranking(target):
    """Two team Label panels: one page fits, the other adopts; both label through the keyboard, every
    label lands with its annotator and no item is shown to both."""
    from dcai_widgets.widgets.team import TeamLabelPanel

    s1, s2 = session(target), session(target)
    label_some(s1, range(12), "lead")
    pa = TeamLabelPanel(s1, page(s1, "ada"), annotator="ada", background=False, refit_every=2)
    pb = TeamLabelPanel(s2, page(s2, "bo"), annotator="bo", background=False, refit_every=2)
    fits = pa.queue.queue.fits + pb.queue.queue.fits
    assert fits == 1 and pb.queue.team_.adopted_ + pa.queue.team_.adopted_ == 1
    shown = {"ada": [], "bo": []}
    for _ in range(6):
        for who, p in (("ada", pa), ("bo", pb)):
            i = p.current
            shown[who].append(i)
            p.press(p.shortcuts[int(s1.y_true[i])])
    assert not set(shown["ada"]) & set(shown["bo"])
    lab = s1.labeled().set_index("id")
    for who, ids in shown.items():
        assert (lab.loc[ids, "annotator"] == who).all()
    assert pa.queue.queue.fits + pb.queue.queue.fits >= 2   # refits happened, in one page at a time
    pa.queue.close(), pb.queue.close()


def test_a_store_without_team_state_falls_back_to_a_fit_per_page(tmp_path):
    """A store offering claims but not leases or published values (another implementation): each page
    fits its own engine, as before one fit per team."""
    s = session(str(tmp_path / "l.db"))
    label_some(s, range(10), "ada")

    class ClaimsOnly:
        def __init__(self, st):
            for m in ("claim", "renew_claims", "release_claims", "claims"):
                setattr(self, m, getattr(st, m))

    class Sess:
        def __init__(self, inner):
            self._inner, self.store = inner, ClaimsOnly(inner.store)

        def __getattr__(self, k):
            return getattr(self._inner, k)

        def __len__(self):
            return len(self._inner)

    q = SharedQueue(Sess(s), CountingQueue(s, cold_start=5), annotator="ada", heartbeat_s=0, watch_s=0)
    assert q.team_ is None
    q.fit()
    assert q.queue.fits == 1 and q.changed_ and len(q.candidates()) == q.ahead
