"""ExplorePanel from Python (no browser): neighbour search, replace-not-stack, bulk labels into the store,
"more like these", rare-concept mode with SEALS, clear messages, map clicks, text search."""
import numpy as np
import pytest

import dcai_widgets as dw
from dcai_widgets.widgets.explore import ExplorePanel


def test_neighbour_search_replaces_and_bulk_labels_go_to_the_store(demo):
    panel = ExplorePanel(demo, k=8, map=False, background=False, annotator="ada")
    got = panel.search([5])
    nbr, _ = demo.neighbors([5], 8)
    assert got == panel.grid.ids and len(got) == 8 and 5 not in got
    assert set(got) == set(nbr[0].tolist())
    assert panel.grid.scores is not None and all(-1 <= s <= 1.0001 for s in panel.grid.scores)
    assert panel.grid.scores == sorted(panel.grid.scores, reverse=True) or len(set(panel.grid.scores)) > 1
    again = panel.search([900])
    assert panel.grid.ids == again and len(again) == 8 and again != got      # replaced, not stacked
    panel.k_slider.value = 5                                                   # k adjustable: re-searches
    assert len(panel.grid.ids) == 5 and panel.grid.ids == again[:5]
    panel.grid.selected = panel.grid.ids[:3]
    labeled = panel.label_selected("4")
    cur = demo.labeled()
    assert sorted(cur["id"]) == sorted(labeled) == sorted(again[:3])
    assert set(cur["label"]) == {"4"} and set(cur["annotator"]) == {"ada"}
    assert demo.store.events()["ts"].nunique() == 1                            # one action, one write
    assert "dcai-human" in panel.grid._cells[0][1].badges.value                # labels shown on the cards
    assert "3 of 1,797 labeled" in panel.counters.value


def test_more_like_these_and_bad_input_messages(demo):
    panel = ExplorePanel(demo, k=6, map=False, background=False)
    panel.search([10])
    assert panel.more_like_these() == []
    assert "select one or more items" in panel.status.value
    panel.grid.selected = panel.grid.ids[:2]
    picked = list(panel.grid.selected)
    more = panel.more_like_these()
    assert panel.query_ids == picked and len(more) == 6 and not set(more) & set(picked)
    assert panel.search([len(demo) + 5]) == [] and "0.." in panel.status.value
    assert panel.search_vector(np.zeros(3)) == [] and "dimension 3" in panel.status.value
    assert panel.search_text("a seven") == [] and "text session" in panel.status.value
    with pytest.raises(ValueError, match="k must be"):
        ExplorePanel(demo, k=len(demo), map=False)


def test_rare_concept_mode_asks_for_a_seed_then_hunts_with_seals(demo):
    y = demo.y_true
    panel = ExplorePanel(demo, map=False, background=False, pool_k=30, page_size=12)
    assert panel.hunt("no-such-class") == [] and "unknown target class" in panel.status.value
    neg = [int(i) for i in np.flatnonzero(y != 7)[:20]]
    demo.label(neg, [int(y[i]) for i in neg])
    assert panel.hunt("7") == []
    assert "no positive of target &#x27;7&#x27;" in panel.status.value and "seed" in panel.status.value
    seed = int(np.flatnonzero(y == 7)[0])
    demo.label([seed], ["7"])                      # a label event refits in rare mode
    ids = panel.grid.ids
    assert len(ids) == 12 and seed not in ids
    assert (y[ids] == 7).mean() >= 0.75, y[ids]   # digits: one seed finds its class
    assert "Most-likely 7" in panel.grid.title.value
    n_ex = int((~panel.seals.pool_.mask()[ids]).sum())     # the batch quota's picks from outside the pool
    assert (f"{n_ex} from the exploration sample" in panel.grid.title.value) == (n_ex > 0)
    assert "candidate pool" in panel.counters.value and "scanned" in panel.counters.value
    last = panel.seals.rounds_[-1]          # kNN pool, and all scored (+ the exploration sample)
    assert f"data-pool='{last['pool_size']}' data-scored='{last['n_scored']}'" in panel.counters.value
    assert (f"+ {last['n_explore']:,} exploration" in panel.counters.value) == (last["n_explore"] > 0)
    pool0 = panel.seals.pool_size
    # label the shown positives in one action; the panel refits and counts found per label spent
    pos = [i for i in ids if y[i] == 7]
    panel.grid.selected = pos
    panel.label_selected("7")
    # the hunt counts every label given since it started: the seed, then the bulk label
    assert f"data-hunt-found='{len(pos) + 1}'" in panel.counters.value
    assert f"data-hunt-labels='{len(pos) + 1}'" in panel.counters.value
    assert f"data-found='{len(pos) + 1}'" in panel.counters.value
    assert panel.seals.report()["n_searched"].iloc[-1] == len(pos)         # only the new labels searched
    assert panel.seals.pool_size != pool0 and not set(panel.grid.ids) & set(pos)


def test_background_refit_and_map_click(demo):
    y = demo.y_true
    panel = ExplorePanel(demo, k=7, background=True, pool_k=20)
    assert panel.map_view is not None
    panel.map_view._set_selection([42])            # what a click on one point delivers
    assert panel.query_ids == [42] and len(panel.grid.ids) == 7
    panel.map_view._set_selection([1, 2, 3, 4])    # a lasso: the selection itself, ready to label
    assert panel.grid.ids == [1, 2, 3, 4] and panel.grid.selected == [1, 2, 3, 4]
    demo.label([int(np.flatnonzero(y == 2)[0]), int(np.flatnonzero(y == 5)[0])], ["2", "5"])
    panel.hunt("2")
    first = list(panel.grid.ids)
    demo.label(first[:3], [str(int(y[i])) for i in first[:3]])   # refit runs in a thread
    panel.wait(30)
    assert panel.seals.report()["n_labeled"].iloc[-1] == 5
    assert not set(panel.grid.ids) & set(first[:3])


def test_text_session_search(tmp_path):
    texts = ["the cat sat on the mat", "dogs bark at night", "a cat and a kitten", "stock markets fell",
             "kitten plays with a cat toy", "interest rates and markets", "the dog chased the cat"] * 3
    s = dw.Session.from_texts(texts, ["pets", "finance"], encoder="tfidf", store=tmp_path / "t.db")
    panel = ExplorePanel(s, k=4, map=False, background=False)
    assert panel.text_row.layout.display is None
    got = panel.search_text("kitten cat")
    assert len(got) == 4 and all("kitten" in texts[i] or "cat" in texts[i] for i in got)
    assert panel.search_text("  ") == [] and "type a few words" in panel.status.value
    panel.text_box.value = "markets"               # typing + Enter searches too
    assert all("markets" in texts[i] for i in panel.grid.ids[:3])


def test_seals_serves_as_the_label_panel_queue(demo):
    from dcai_widgets.widgets.label_panel import LabelPanel

    y = demo.y_true
    seeds = [int(np.flatnonzero(y == c)[0]) for c in range(10)]
    demo.label(seeds, [int(y[i]) for i in seeds])
    seals = dw.Seals(demo, k=20, batch=10)
    panel = LabelPanel(demo, queue=seals, background=False, refit_every=5)
    first_batch = seals.candidates()
    asked = []
    for _ in range(5):                               # the panel asks in SEALS' order
        asked.append(panel.current)
        panel.press(str(int(y[panel.current])))
    assert asked == first_batch[:5]
    rep = seals.report()                             # five labels: the panel refit SEALS
    assert len(rep) == 2 and rep["n_labeled"].tolist() == [10, 15] and rep["n_searched"].iloc[-1] == 5
    panel.press(str(int(y[panel.current])))
    assert panel.current in seals.candidates()       # and then follows the refit order


def test_text_query_embedded_by_the_sessions_encoder(tmp_path):
    words = ["cat", "kitten", "dog", "market", "rates"]

    def bag(texts):   # a tiny deterministic encoder: word counts
        return np.array([[t.split().count(w) + 0.01 for w in words] for t in texts], dtype=np.float32)

    texts = ["cat kitten cat", "dog dog", "market rates", "kitten cat", "rates market market", "dog cat"] * 4
    s = dw.Session.from_texts(texts, ["pets", "finance"], encoder=bag, store=tmp_path / "t.db")
    panel = ExplorePanel(s, k=6, map=False, background=False)
    got = panel.search_text("kitten cat")
    assert panel.grid.title.value.startswith("<b>Neighbours</b> of the query")   # the vector path
    assert {texts[i] for i in got} == {"cat kitten cat", "kitten cat"}
    assert max(panel.grid.scores) > 0.95


def test_label_as_starts_empty_and_rare_mode_presets_the_target(demo):
    """'select all, label 24 selected' must never tag items with a class nobody chose."""
    y = demo.y_true
    panel = ExplorePanel(demo, k=6, map=False, background=False, annotator="ada")
    panel.search([3])
    panel.grid.select_all()
    assert not panel.grid.class_pick.value and "choose" in panel.grid.class_pick.label and panel.grid.label_button.disabled
    assert panel.grid.label_selected(panel.grid.class_pick.value) == [] and demo.labeled().empty
    assert "choose a class" in panel.grid.status.value
    assert "choose" in panel.target_pick.label and panel.hunt() == [] and "target class first" in panel.status.value
    seed = int(np.flatnonzero(y == 8)[0])
    demo.label([seed], ["8"], annotator="ada")
    panel.hunt("8")
    assert panel.mode == "rare" and panel.grid.class_pick.value == "8"
    panel.set_mode("neighbors")
    assert not panel.grid.class_pick.value and "choose" in panel.grid.class_pick.label


def test_neighbours_are_sorted_by_the_cosine_shown_under_them(demo):
    panel = ExplorePanel(demo, k=40, map=False, background=False)
    for q in ([7], [100, 200, 300]):
        panel.search(q)
        s = panel.grid.scores
        assert s == sorted(s, reverse=True), s
    df = panel._searcher.similar(ids=[100, 200, 300], k=40)       # the engine orders by its own metric
    assert set(df["id"]) == set(panel.grid.ids)
    assert "cos 0." in panel.grid._cells[0][1].badges.value and "cosine similarity" in panel.grid.legend.value
    assert "propagated by the model" in panel.grid.legend.value and "labeled by a person" in panel.grid.legend.value


def test_explore_keys_confirm_before_labeling_and_undo_takes_back_the_batch(demo):
    panel = ExplorePanel(demo, k=5, map=False, background=False, annotator="kim")
    keys = panel.shortcuts
    panel.search([11])
    keys.press("a")                                          # select all
    assert panel.grid.selected == panel.grid.ids
    keys.press("4")                                          # asks first
    assert demo.labeled().empty and 'data-class="4"' in panel.status.value
    keys.press("Escape")                                     # cancelled
    keys.press("4")
    assert demo.labeled().empty
    keys.press("Enter")                                      # confirmed: one batch, with the annotator
    cur = demo.labeled()
    assert sorted(cur["id"]) == sorted(panel.grid.ids) and set(cur["annotator"]) == {"kim"}
    keys.press("Backspace")                                  # undo: the whole bulk batch goes
    assert demo.labeled().empty and 'data-count="5"' in panel.status.value
    keys.press("Escape")                                     # clears the selection
    assert panel.grid.selected == []
    keys.press("m")
    assert panel.mode == "rare"
    assert not panel.shortcuts.help.visible
    keys.press("?")
    assert panel.shortcuts.help.visible and "select all" in panel.shortcuts.help.table.value
    keys.press("Escape")
    assert not panel.shortcuts.help.visible


def test_switching_mode_clears_the_selection_message_and_the_grid(demo):
    panel = ExplorePanel(demo, k=5, background=False)
    panel.map_view.select(list(range(30, 60)))
    assert 'data-count="30"' in panel.map_view.info.value and len(panel.grid.ids) == 30
    panel.set_mode("rare")
    assert panel.map_view.info.value == "" and panel.map_view.selected == [] and panel.grid.ids == []
    assert panel.map_view.source.selected.indices == []


def test_refit_results_reach_the_widgets_through_background(demo):
    """The refit runs in the Background worker; only its on_done (main thread in a kernel) touches widgets."""
    import threading

    y = demo.y_true
    panel = ExplorePanel(demo, k=5, map=False, background=True, pool_k=20)
    demo.label([int(np.flatnonzero(y == 2)[0]), int(np.flatnonzero(y == 5)[0])], ["2", "5"])
    panel.hunt("2")
    seen = []
    work = panel._refitter.work

    def spy(job):
        seen.append(threading.current_thread())
        return work(job)

    panel._refitter.work = spy
    first = list(panel.grid.ids)
    demo.label(first[:2], [str(int(y[i])) for i in first[:2]])
    assert panel.wait(60) and panel._refitter.runs >= 1
    assert seen and all(t is not threading.main_thread() for t in seen)
    assert not set(panel.grid.ids) & set(first[:2])


def test_rare_mode_refits_without_items_excluded_elsewhere(demo):
    """The Clean tab excludes items shown as rare-concept candidates: the hunt refits and drops them."""
    y = demo.y_true
    panel = ExplorePanel(demo, map=False, background=False, pool_k=30, page_size=12)
    neg = [int(i) for i in np.flatnonzero(y != 7)[:20]]
    demo.label(neg + [int(np.flatnonzero(y == 7)[0])], [int(y[i]) for i in neg] + ["7"])
    assert panel.hunt("7")
    shown = list(panel.grid.ids[:5])
    demo.exclude(shown, reason="anomaly")
    assert panel.grid.ids and not set(panel.grid.ids) & set(shown)


def test_badges_say_uncertain_before_50_labels_and_show_the_calibrated_confidence_after(demo):
    """Like the Label tab: a propagated label's confidence is shown only for a model fit on 50 human
    labels or more (its version says how many), "uncertain" before; a model whose version does not say
    counts as fewer. SEALS's score is not presented as a probability."""
    from dcai_widgets.widgets.item_grid import fitted_labels, shown_confidence

    panel = ExplorePanel(demo, k=6, map=False, background=False, annotator="ada")
    ids = panel.search([3])
    demo.set_propagated(ids[:2], ["5", "6"], [0.97, 0.40], model_version="lancet-20-1")
    demo.set_propagated(ids[2:4], ["7", "8"], [0.83, 0.61], model_version="lancet-120-2")
    demo.set_propagated(ids[4:5], ["9"], [0.99])                       # no version: unknown label count
    panel.search([3])
    badges = [panel.grid._cells[k][1].badges.value for k in range(5)]
    assert "~5 uncertain<" in badges[0] and "~6 uncertain<" in badges[1]
    assert "0.97" not in badges[0] and "0.40" not in badges[1] and "1.00" not in badges[0]
    assert "~7 0.83<" in badges[2] and "~8 0.61<" in badges[3] and "calibrated confidence" in badges[2]
    assert "~9 uncertain<" in badges[4] and "0.99" not in badges[4]
    assert "uncertain" in panel.grid.legend.value and "calibrated" in panel.grid.legend.value
    assert fitted_labels("lancet-57-3") == 57 and fitted_labels(None) is None and fitted_labels("x") is None
    assert shown_confidence(0.5, "lancet-49-1") == "uncertain" and shown_confidence(0.5, "lancet-50-1") == "0.50"
    assert shown_confidence(float("nan"), "lancet-50-1") is None
    assert shown_confidence(0.998, "lancet-50-1") == ">0.99" and shown_confidence(0.994, "lancet-50-1") == "0.99"
    from dcai_widgets.calibration import show_confidence

    assert show_confidence(0.997, 60) == ">99%" and show_confidence(0.97, 60) == "97%"   # never "100%"
    from dcai_widgets.widgets.explore import PROBA

    assert PROBA[0] != "p" and "not calibrated" in PROBA[1]


def test_typing_then_clicking_search_embeds_the_query_once_and_says_it_is_searching(tmp_path):
    """On the walk's text set the text box's change (on blur) and the button's click each embedded the
    query (the first loads the text model: 10 s each on a 2-core box), with nothing on the page meanwhile."""
    calls, said = [], []
    words = ["cat", "kitten", "dog", "market", "rates"]

    def bag(texts):
        calls.append(len(texts))
        return np.array([[t.split().count(w) + 0.01 for w in words] for t in texts], dtype=np.float32)

    texts = ["cat kitten cat", "dog dog", "market rates", "kitten cat", "rates market market", "dog cat"] * 4
    s = dw.Session.from_texts(texts, ["pets", "finance"], encoder=bag, store=tmp_path / "t.db")
    panel = ExplorePanel(s, k=6, map=False, background=False)
    _ = s.embeddings
    panel.status.observe(lambda ch: said.append(ch["new"]), names="value")
    calls.clear()
    panel.text_box.value = "kitten cat"            # the box loses focus as the button is clicked…
    first = list(panel.grid.ids)
    panel.text_button.click()                      # …and the click asks for the same search
    assert calls == [1] and panel.grid.ids == first
    assert any("searching for" in v for v in said)
    panel.k_slider.value = 3
    panel.text_button.click()                      # another k: a new search
    assert calls == [1, 1] and len(panel.grid.ids) == 3
    panel.search([0])                              # the grid shows something else: the text searches again
    panel.text_button.click()
    assert calls == [1, 1, 1]
