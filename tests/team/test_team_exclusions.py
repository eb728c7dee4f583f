"""Items excluded while team pages hold claims on them (issue 13 with issue 16's exclusions), on a real
SQLite file and a real PostgreSQL server: the exclusion ends every claim on the item in the same
transaction, the store never claims an excluded item, and a team page in another kernel stops showing
it (the one on screen is passed over, claimed-ahead ones are never shown) — found by its next claim or
by the queue's watch, without any event from the kernel that excluded it."""
from __future__ import annotations

import time

import pytest
from test_shared_queue import CLASSES, blobs  # the same three blobs (pytest puts this folder on sys.path)

import dcai_widgets as dw
from dcai_widgets.queue import UncertaintyQueue
from dcai_widgets.team import SharedQueue
from dcai_widgets.widgets.team import TeamLabelPanel


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "l.db")
    return request.getfixturevalue("pg_server").new_database()


def session(target):
    X, y = blobs()
    return dw.Session.from_embeddings(X, CLASSES, y_true=y, store=target)


def held(s, who):
    c = s.store.claims()
    return set(c[c["annotator"] == who]["id"].astype(int))


def test_excluding_ends_every_claim_and_excluded_items_are_never_claimed(target):
    s = session(target)
    st = s.store
    assert st.claim("ada", [1, 2, 3], n=3) == [1, 2, 3]
    assert st.claim("bo", [2, 5], n=2, per_item=2) == [2, 5]         # overlap: two people on item 2
    mark = st.exclusions_mark()
    s.exclude([2, 9], annotator="lead", reason="anomaly")
    assert st.exclusions_mark() > mark
    assert held(s, "ada") == {1, 3} and held(s, "bo") == {5}         # both claims on item 2 ended
    assert st.claim("cy", [2, 9, 4], n=3) == [4]                      # never claimed while excluded
    s.exclude([2], excluded=False)                                    # brought back: claimable again
    assert st.claim("cy", [2], n=1) == [2]
    assert held(s, "ada") == {1, 3}                                   # bringing back takes nobody's claim


def test_a_page_in_another_kernel_passes_over_items_excluded_there(target):
    ada_s, lead_s = session(target), session(target)                 # two kernels on one store
    q = SharedQueue(ada_s, UncertaintyQueue(ada_s, cold_start=5), annotator="ada", heartbeat_s=0, watch_s=0)
    ada = TeamLabelPanel(ada_s, q, annotator="ada", background=False)
    shown = ada.current
    ahead = ada._upcoming(3)
    assert shown is not None and ahead and {shown, *ahead} <= held(ada_s, "ada")
    gone = [shown, ahead[0]]
    lead_s.exclude(gone, annotator="lead")                            # the lead's Clean tab, elsewhere
    assert not set(gone) & held(ada_s, "ada")                         # the store released them at once
    assert ada.current == shown                                       # no event reached ada's kernel yet
    q.watch_exclusions()                                              # the queue's watch (heartbeat thread)
    assert ada.current is not None and ada.current not in gone
    assert "excluded" in ada.status.value
    seen = [ada.current]
    for _ in range(8):
        i = ada.current
        ada.press(ada.shortcuts[int(ada_s.y_true[i])])
        seen.append(ada.current)
    assert not set(gone) & set(seen)
    assert not set(gone) & set(ada_s.labeled()["id"])                 # never labeled from the page
    q.close()


def test_the_heartbeat_watch_finds_exclusions_by_itself(target):
    ada_s, lead_s = session(target), session(target)
    q = SharedQueue(ada_s, UncertaintyQueue(ada_s, cold_start=5), annotator="ada", heartbeat_s=0, watch_s=0.1)
    found = []
    q.on_exclusions(lambda ids, excluded: found.append((ids, excluded)))
    got = q.fit().candidates(3)
    lead_s.exclude(got[:2])
    deadline = time.monotonic() + 20
    while not found and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found == [(sorted(got[:2]), True)]
    lead_s.exclude(got[:1], excluded=False)
    deadline = time.monotonic() + 20
    while len(found) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found[1] == ([got[0]], False)
    q.close()


def test_excluding_the_shown_item_in_the_same_kernel_releases_it(target):
    s = session(target)
    q = SharedQueue(s, UncertaintyQueue(s, cold_start=5), annotator="ada", heartbeat_s=0, watch_s=0)
    ada = TeamLabelPanel(s, q, annotator="ada", background=False)
    i = ada.current
    s.exclude([i])                                                    # e.g. the Clean tab of this page
    assert ada.current != i and i not in held(s, "ada")
    assert i not in q.candidates(20)
    q.close()
