"""Team mode in the App, driven through the widgets: two annotators' pages never show the same item and
show only items they hold a claim on; skip releases; the Team tab shows kappa and alpha with names
escaped; only a lead gets Review, where keys write review labels that win."""
from __future__ import annotations

import html

import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.queue import UncertaintyQueue
from dcai_widgets.widgets import App
from dcai_widgets.widgets.review import ReviewPanel, review_keys
from dcai_widgets.widgets.team import TeamPanel, overlap_from_env, team_mode


def team_app(s, who, role="annotator", overlap=0.0):
    app = App(s, annotator=who, queue=UncertaintyQueue(s, cold_start=5), role=role, team=True, overlap=overlap)
    app.label_panel.refit(wait=True)
    return app


def test_two_pages_show_only_their_own_claimed_items(demo):
    a, b = team_app(demo, "ada"), team_app(demo, "bo")
    seen = {"ada": [], "bo": []}
    for _ in range(12):
        for who, app in (("ada", a), ("bo", b)):
            i = app.label_panel.current
            claims = demo.store.claims()
            assert i in set(claims[claims["annotator"] == who]["id"]), "an item was shown without a claim"
            seen[who].append(i)
            app.label_panel.press(str(demo.y_true[i]))
    assert not set(seen["ada"]) & set(seen["bo"])
    ev = demo.store.events(("human",))
    assert set(ev[ev["annotator"] == "ada"]["id"]) == set(seen["ada"])
    # skip gives the claim back
    i = b.label_panel.current
    b.label_panel.press(" ")
    assert i not in set(demo.store.claims()["id"]) and b.label_panel.current != i
    b.label_panel.queue.close()
    assert "bo" not in set(demo.store.claims()["annotator"])


def test_tabs_by_mode_and_role(demo, monkeypatch):
    titles = lambda app: list(app.tabs.titles)  # noqa: E731
    assert "Team" not in titles(App(demo, annotator="x", queue=UncertaintyQueue(demo), team=False))
    assert titles(team_app(demo, "ada"))[-1] == "Team"
    lead = team_app(demo, "lee", role="lead")
    assert titles(lead)[-2:] == ["Team", "Review"]
    assert team_mode(None, {"DCAI_TEAM": "1"}) and not team_mode(None, {"DCAI_TEAM": "0"})
    assert overlap_from_env({"DCAI_TEAM_OVERLAP": "2"}) == 2
    assert overlap_from_env({"DCAI_TEAM_OVERLAP": "0.25"}) == 0.25
    with pytest.raises(ValueError, match="DCAI_TEAM_OVERLAP"):
        overlap_from_env({"DCAI_TEAM_OVERLAP": "lots"})
    with pytest.raises(ValueError, match="role"):
        App(demo, annotator="x", queue=UncertaintyQueue(demo), role="boss", team=True)


@pytest.fixture
def disputed(demo):
    """ada and a name with HTML label items 0..59 the same way except 0..9, where they differ."""
    y, names = demo.y_true, demo.classes
    ids = np.arange(60)
    demo.label(ids, [names[k] for k in y[ids]], annotator="ada")
    other = y[ids].copy()
    other[:10] = (other[:10] + 1) % 10
    demo.label(ids, [names[k] for k in other], annotator="<img src=x>")
    return demo


def test_team_panel_shows_kappa_alpha_and_escapes_names(disputed):
    panel = TeamPanel(disputed, background=False)
    rep = panel.report
    k = rep.kappa.loc["ada", "<img src=x>"]
    assert 0.7 < k < 0.9
    page = panel.table.value + panel.kappa_table.value + panel.summary.value
    assert "<img" not in page and html.escape("<img src=x>") in page
    assert f'data-kappa="{k:.4f}"' in panel.kappa_table.value
    assert 'class="dcai-team-alpha"' in panel.summary.value and 'data-count="10"' in panel.summary.value
    fl = rep.fleiss.iloc[0]                                     # 60 items, each labeled by the two
    assert (int(fl["raters"]), int(fl["items"])) == (2, 60) and 0.7 < fl["kappa"] < 0.9
    kf = float(fl["kappa"])
    assert f'class="dcai-team-fleiss" data-raters="2" data-items="60" data-kappa="{kf:.4f}"' in panel.summary.value
    assert panel.figures["kappa"].x_range.factors == ["<img src=x>", "ada"]
    disputed.label([100, 101], ["1", "1"], annotator="cy")       # a label event refreshes the tab
    assert "cy" in set(panel.report.annotators["annotator"])


def test_lead_resolves_conflicts_by_keyboard(disputed):
    r = ReviewPanel(disputed, annotator="lee", background=False)
    assert len(r.conflicts) == 10 and r.current in range(10)
    first = r.current
    r.press("n")
    assert r.current != first
    r.press("p")
    assert r.current == first
    key = r.shortcuts[int(disputed.y_true[first])]
    r.press(key)
    cur = disputed.labeled(ids=[first])
    assert cur["source"].tolist() == ["review"] and cur["annotator"].tolist() == ["lee"]
    assert cur["label"].tolist() == [disputed.classes[int(disputed.y_true[first])]]
    assert first not in [c["id"] for c in r.conflicts] and len(r.conflicts) == 9
    r.refresh()        # recomputed from the store: the resolved item stays settled
    assert len(r.conflicts) == 9 and first not in [c["id"] for c in r.conflicts]
    assert "n" not in review_keys([f"c{k}" for k in range(20)]) and len(set(review_keys([f"c{k}" for k in range(20)]))) == 20


def test_throttle_merges_a_burst_into_one_deferred_call():
    import time

    from dcai_widgets.widgets.team import Throttle

    calls = []
    t = Throttle(lambda: calls.append(time.monotonic()), interval_s=0.3)
    for _ in range(20):
        t()
    assert len(calls) == 1
    time.sleep(0.5)
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.25


def test_review_escapes_class_and_annotator_names(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    s = dw.Session.from_embeddings(X, ["<b>a</b>", "b&c"], store=tmp_path / "l.db")
    s.label([0, 1, 2], ["<b>a</b>"] * 3, annotator="<i>ann</i>")
    s.label([0, 1, 2], ["b&c", "<b>a</b>", "b&c"], annotator="bo")
    r = ReviewPanel(s, annotator="lee", background=False)
    assert len(r.conflicts) == 2
    page = r.labels_html.value + r.list_html.value
    assert "<b>a</b>" not in page and "<i>ann</i>" not in page
    assert html.escape("<b>a</b>") in page and html.escape("<i>ann</i>") in page and "b&amp;c" in page
    r.press(r.shortcuts[1])
    (item, label), = r.resolved.items()
    assert label == "b&c" and s.labeled(ids=[item])["label"].tolist() == ["b&c"]


def test_one_fit_per_team_and_the_per_page_cadence_without_it(demo):
    """Team pages share one fit (the App's default): the second page adopts the first one's ranking.
    A SharedQueue without the team fit keeps the older rule: each page refits every 5 x (annotators
    holding claims) of its own labels."""
    from dcai_widgets.team import SharedQueue
    from dcai_widgets.widgets.team import TeamLabelPanel

    a = team_app(demo, "ada")
    a.label_panel._refitter.wait(120)
    b = team_app(demo, "bo")
    b.label_panel._refitter.wait(120)
    ta, tb = a.label_panel.queue.team_, b.label_panel.queue.team_
    assert ta.fits_ == 1 and tb.fits_ == 0 and tb.adopted_ == 1
    assert b.label_panel.queue.order_ == a.label_panel.queue.order_
    assert a.label_panel.refit_every == b.label_panel.refit_every == 5
    q = SharedQueue(demo, UncertaintyQueue(demo, cold_start=5), annotator="cy", heartbeat_s=0, team_fit=False)
    c = TeamLabelPanel(demo, q, annotator="cy", background=False)
    c.refit(wait=True)
    assert c.refit_every == 5 * int(demo.store.claims()["annotator"].nunique()) == 15
    q.close()


def test_late_label_after_lease_expiry_is_refused_and_the_page_moves_on(demo):
    """ada's page sits idle past its lease, bo claims her item, then ada presses a key: the store's claim
    check refuses the label (nothing written), the panel names bo and shows ada another item."""
    import time

    from dcai_widgets.store import ClaimLostError
    from dcai_widgets.team import SharedQueue
    from dcai_widgets.widgets.team import TeamLabelPanel

    qa = SharedQueue(demo, UncertaintyQueue(demo, cold_start=5), annotator="ada", lease_s=0.5, heartbeat_s=0)
    ada = TeamLabelPanel(demo, qa, annotator="ada", background=False)
    i = ada.current
    assert i is not None and i in set(demo.store.claims().query("annotator == 'ada'")["id"])
    time.sleep(0.7)                                         # no heartbeat: ada's lease runs out
    qb = SharedQueue(demo, UncertaintyQueue(demo, cold_start=5), annotator="bo", lease_s=60, heartbeat_s=0)
    assert demo.store.claim("bo", [i], n=1, lease_s=60, per_item=qb.per_item) == [i]
    n_before = len(demo.store.events(("human",)))
    ada.press(str(demo.y_true[i]))
    assert len(demo.store.events(("human",))) == n_before   # nothing written
    assert i not in set(demo.labeled()["id"])
    err = html.unescape(ada.error.value)
    assert "NOT saved" in err and "'bo'" in err and f"#{i}" in err
    assert ada.current is not None and ada.current != i     # the page moved on
    assert i in set(demo.store.claims().query("annotator == 'bo'")["id"])   # bo keeps the item
    # the same check straight through the Session (the keyword the panel uses)
    with pytest.raises(ClaimLostError, match="'bo'"):
        demo.label([i], [demo.classes[0]], annotator="ada", claimed=True)
    demo.label([i], [demo.classes[int(demo.y_true[i])]], annotator="bo", claimed=True)
    assert demo.labeled().set_index("id").loc[i, "annotator"] == "bo"
    qa.close(), qb.close()


def test_team_panel_claims_again_while_half_its_claims_are_left(demo):
    """At flat out a claim under way outlasted the one item left (most keypresses over the p95 waited
    for it): the panel claims again while half of the queue's ``ahead`` items are still upcoming."""
    from dcai_widgets.team import SharedQueue
    from dcai_widgets.widgets.team import TeamLabelPanel

    q = SharedQueue(demo, UncertaintyQueue(demo, cold_start=5), annotator="ada", heartbeat_s=0, watch_s=0)
    panel = TeamLabelPanel(demo, q, annotator="ada", background=False)
    assert q.ahead == 8
    for _ in range(20):
        upcoming = panel._upcoming(q.ahead)
        assert len(upcoming) >= q.ahead // 2 - 1, upcoming          # never down to the last item
        i = panel.current
        panel.press(str(demo.y_true[i]))
        assert panel.current != i
    q.close()


def test_a_team_annotators_inspect_relabel_is_their_own_label_not_a_review(demo, monkeypatch):
    """A "review" label wins over everyone's labels in the store, so in a team only a lead's Inspect
    relabel is one; an annotator's relabel is a "human" label (a vote the Review view weighs)."""
    import dcai_widgets.widgets.inspect as inspect_mod
    made = {}

    class Recorder:
        def __init__(self, session, **kw):
            made[kw["annotator"]] = kw.get("label_source", "review")

    monkeypatch.setattr(inspect_mod, "InspectPanel", Recorder)
    for who, role in (("ada", "annotator"), ("lee", "lead")):
        app = App(demo, annotator=who, queue=UncertaintyQueue(demo, cold_start=5), role=role, team=True)
        app._builders[list(app.tabs.titles).index("Inspect")]()
    assert made == {"ada": "human", "lee": "review"}
    monkeypatch.undo()
    p = inspect_mod.InspectPanel(demo, auto_start=False, annotator="ada", label_source="human")
    i = int(np.setdiff1d(np.arange(len(demo)), demo.labeled()["id"])[0])
    p.relabel(i, 1)
    row = demo.store.events(("human", "review")).iloc[-1]
    assert (int(row["id"]), row["source"], row["annotator"]) == (i, "human", "ada")
    with pytest.raises(ValueError, match="label_source"):
        inspect_mod.InspectPanel(demo, auto_start=False, label_source="lead")
