"""A page reopened after a server restart shows the item it showed before (its claims come back in the
team's last ranking, not in item-number order)."""
from __future__ import annotations

import numpy as np

import dcai_widgets as dw
from dcai_widgets.queue import UncertaintyQueue
from dcai_widgets.team import SharedQueue


def test_a_restarted_page_shows_the_item_it_showed(tmp_path):
    """Seen in the served app: ada looked at #1482 (her top-ranked claim), the server was SIGKILLed and
    restarted, and her reopened page showed #196, the lowest-numbered of her claims: a page shows its
    first item before its queue's first fit, and the held claims were then in item-number order."""
    path = tmp_path / "labels.db"
    s = dw.Session.demo(store=path)
    ids = np.arange(0, 400, 20)
    s.label(ids, [s.classes[k] for k in s.y_true[ids]], annotator="bo")
    q = SharedQueue(s, UncertaintyQueue(s, cold_start=5), annotator="ada", heartbeat_s=0).fit()
    got = q.candidates(6)
    assert got != sorted(got), "the test needs a ranking that is not the item order"
    shown = got[0]
    s.store.close()
    s2 = dw.Session.demo(store=path)                      # the restarted server's new kernel
    q2 = SharedQueue(s2, UncertaintyQueue(s2, cold_start=5), annotator="ada", heartbeat_s=0)
    first = q2.candidates(1)                              # the page's first item, before any fit
    assert first == [shown], f"showed {first} after the restart, {shown} before"
    claims = s2.store.claims()
    assert set(got) <= set(claims[claims["annotator"] == "ada"]["id"])   # every claim is still ada's


def test_a_page_restarted_before_any_fit_shows_the_item_it_showed(tmp_path):
    """The served app's case: ada's page had claimed in the fixed fallback order (no fit published
    yet) when the server was killed; after the restart it showed her lowest-numbered claim instead."""
    path = tmp_path / "labels.db"
    s = dw.Session.demo(store=path)
    q = SharedQueue(s, UncertaintyQueue(s, cold_start=5), annotator="ada", heartbeat_s=0)   # never fitted
    got = q.candidates(6)
    assert got != sorted(got)
    s.store.close()
    s2 = dw.Session.demo(store=path)
    q2 = SharedQueue(s2, UncertaintyQueue(s2, cold_start=5), annotator="ada", heartbeat_s=0)
    assert q2.candidates(1) == [got[0]]
