"""LabelPanel driven from Python: keys, buttons, undo, skip, accept/reject, resume, queue protocol."""
import re
import threading

import numpy as np
import pytest

from dcai_widgets.widgets.label_panel import LabelPanel, class_keys


class FixedQueue:
    """A queue that offers items in a fixed order and counts its fits."""

    def __init__(self, order, gate=None):
        self.order, self.fits, self.gate = list(order), 0, gate

    def fit(self):
        if self.gate is not None and self.fits > 0:
            assert self.gate.wait(timeout=30)
        self.fits += 1
        return self

    def candidates(self, n=None):
        return self.order if n is None else self.order[:n]


def store_labels(s, annotator=None):
    df = s.store.current(("human",))
    if annotator is not None:
        df = df[df["annotator"] == annotator]
    return dict(zip(df["id"].astype(int), df["label"]))


def test_class_keys_digits_use_their_names_others_get_numbers_then_letters():
    assert class_keys([str(d) for d in range(10)]) == [str(d) for d in range(10)]
    keys = class_keys([f"class {i}" for i in range(12)])
    assert keys[:9] == [str(d) for d in range(1, 10)] and keys[9:] == ["b", "c", "d"]
    assert not {"a", "x", "s"} & set(class_keys(["cat", "dog", "x", "y"]))  # 'x' is reserved: no name keys


def test_each_label_is_on_disk_before_the_next_item_is_shown(demo):
    p = LabelPanel(demo, queue=FixedQueue([10, 11, 12, 13]), annotator="ada", background=False)
    seen_on_disk = []
    p.on_show(lambda i: seen_on_disk.append(dict(store_labels(demo))))
    assert p.current == 10
    p.press("3")
    assert p.current == 11 and seen_on_disk[-1] == {10: "3"}
    p.buttons[7].click()  # the button for class "7"
    assert p.current == 12 and seen_on_disk[-1] == {10: "3", 11: "7"}
    assert p.progress.value == 2 and 'data-labeled="2"' in p.progress_text.value
    assert "3: 1" in p.counts.value and "7: 1" in p.counts.value
    assert store_labels(demo, "ada") == {10: "3", 11: "7"}


def test_undo_with_backspace_retracts_and_shows_the_item_again(demo):
    p = LabelPanel(demo, queue=FixedQueue([1, 2, 3]), annotator="ada", background=False)
    p.press("5")
    p.press("6")
    assert p.current == 3
    p.press("Backspace")
    assert p.current == 2 and store_labels(demo) == {1: "5"}
    assert p.progress.value == 1
    ev = demo.store.events(include_retracted=True)
    assert ev["retracts"].notna().sum() == 1  # undo appended a retraction; nothing deleted
    p.press("9")
    assert store_labels(demo) == {1: "5", 2: "9"} and p.current == 3
    p.undo(), p.undo(), p.undo()
    assert store_labels(demo) == {} and "nothing to undo" in p.status.value


def test_skip_prev_next_and_relabel_from_history(demo):
    p = LabelPanel(demo, queue=FixedQueue([4, 5, 6, 7]), annotator="ada", background=False)
    p.press(" ")           # skip 4
    assert p.current == 5 and store_labels(demo) == {}
    p.press("1")           # label 5, now at 6
    p.press("ArrowLeft")
    assert p.current == 5
    p.press("2")           # relabel 5, forward to 6
    assert store_labels(demo) == {5: "2"} and p.current == 6
    p.press("ArrowLeft"), p.press("ArrowLeft")
    assert p.current == 4
    p.press("ArrowRight")
    assert p.current == 5


def test_accept_and_reject_a_suggestion(demo):
    order = list(range(40))
    p = LabelPanel(demo, annotator="ada", background=False, refit_every=5)
    y = demo.y_true
    for _ in range(10):        # label by the oracle until the queue can predict
        p.label_current(int(y[p.current]))
    assert p.queue.proba_ is not None and p._suggestion is not None
    sug, item = p._suggestion[0], p.current
    assert p.buttons[p.classes.index(sug)].button_style == "warning"
    p.press("a")
    assert store_labels(demo)[item] == sug
    item = p.current
    assert p._suggestion is not None
    p.press("x")
    assert p._suggestion is None and p.current == item and item not in store_labels(demo)
    assert "rejected" in p.suggestion.value
    p.press("a")               # nothing to accept any more
    assert item not in store_labels(demo)
    del order


def test_resume_from_the_store_skips_labeled_items(demo, tmp_path):
    demo.label([0, 1, 2], ["0", "1", "2"], annotator="ada")
    p = LabelPanel(demo, queue=FixedQueue([0, 1, 2, 3]), annotator="ada", background=False)
    assert p.current == 3 and p.progress.value == 3 and "you: 3" in p.progress_text.value


def test_two_annotators_keep_their_own_progress(demo):
    a = LabelPanel(demo, queue=FixedQueue([1, 2, 3]), annotator="ada", background=False)
    b = LabelPanel(demo, queue=FixedQueue([7, 8]), annotator="bob", background=False)
    a.press("1"), a.press("2"), b.press("3")
    ev = demo.store.events(("human",))
    assert sorted(ev.loc[ev.annotator == "ada", "id"]) == [1, 2]
    assert list(ev.loc[ev.annotator == "bob", "id"]) == [7]
    assert "you: 2" in a.progress_text.value and "you: 1" in b.progress_text.value
    assert a.progress.value == 3 and b.progress.value == 3  # each sees everyone's labels via events
    b.press("Backspace")                                    # bob's undo leaves ada's labels alone
    assert store_labels(demo) == {1: "1", 2: "2"}
    # the per-annotator count rides on the fit's status line: it says when it was counted, and is left
    # out for one annotator alone (where it showed 'expert 60' beside 'you: 66' after six spot checks)
    assert "per annotator" not in a.status.value
    b.press("4")
    a._refit_done_now({"labels": 3, "classes": 3, "seconds": 0.0, "notes": []})
    assert "items labeled per annotator at this fit: ada 2, bob 1" in a.status.value


def test_refit_runs_in_the_background_without_blocking_labels(demo):
    gate = threading.Event()
    q = FixedQueue(list(range(100, 140)), gate=gate)
    p = LabelPanel(demo, queue=q, annotator="ada", refit_every=2)
    for k in "12345":          # the refit after 2 labels is blocked on the gate, labels still go through
        p.press(k)
    assert len(store_labels(demo)) == 5 and q.fits == 1 and "refitting" in p.status.value
    gate.set()
    assert p._refitter.wait(timeout=30)
    # the refit asked for after label 4 arrived during the first one: merged into one more run
    # (#1 is the first fit at start); the last one fitted all 5 labels
    assert q.fits == 3 and 'data-fits="3"' in p.status.value and 'data-labels="5"' in p.status.value


def test_bad_input_is_named(demo):
    with pytest.raises(TypeError, match="candidates"):
        LabelPanel(demo, queue=object())
    with pytest.raises(ValueError, match="annotator"):
        LabelPanel(demo, annotator="  ")
    p = LabelPanel(demo, queue=FixedQueue([1]), background=False)
    with pytest.raises(ValueError, match="not among the classes"):
        p.label_current("cat")
    assert store_labels(demo) == {}


def test_labels_made_elsewhere_update_the_counters(demo):
    p = LabelPanel(demo, queue=FixedQueue([1, 2]), annotator="ada", background=False)
    demo.label(np.arange(50, 60), "4", annotator="bulk")
    assert p.progress.value == 10 and "4: 10" in p.counts.value


def test_the_end_of_the_queue_says_so(demo):
    demo.label(np.arange(2, len(demo)), "0", annotator="import")
    p = LabelPanel(demo, queue=FixedQueue([0, 1]), annotator="ada", background=False)
    p.press("1"), p.press("1")
    assert p.current is None and "Nothing left" in p.suggestion.value and "export bar" not in p.suggestion.value
    assert "the bar below the tabs" in p.suggestion.value   # a browser user cannot run session.export


def test_background_first_fit_and_a_dry_queue_never_block_or_repeat(demo):
    gate = threading.Event()

    class SlowQueue(FixedQueue):
        def fit(self):
            assert gate.wait(timeout=30)
            self.fits += 1
            return self

    q = SlowQueue([500, 501, 502])
    p = LabelPanel(demo, queue=q, annotator="ada", initial_fit="background", refit_every=100)
    first = p.current
    assert first is not None and q.fits == 0          # an item is shown before the first fit ends
    for k in "0123":
        p.press(k)
    assert len(store_labels(demo)) == 4 and len(set(store_labels(demo))) == 4 and q.fits == 0
    gate.set()
    assert p._refitter.wait(timeout=30)
    assert q.fits >= 1
    p.press("5")
    assert p.current in (500, 501, 502)                # the queue's order takes over once fitted
    with pytest.raises(ValueError, match="initial_fit"):
        LabelPanel(demo, queue=FixedQueue([1]), initial_fit="later")


def test_skipped_items_come_back_when_nothing_else_is_left(demo):
    demo.label(np.arange(2, len(demo)), "0", annotator="import")
    p = LabelPanel(demo, queue=FixedQueue([0, 1]), annotator="ada", background=False)
    p.press(" ")
    assert p.current == 1
    p.press("1")
    assert p.current == 0   # the skipped item, asked again at the end


def test_overlap_lets_a_second_annotator_label_the_same_items(demo):
    demo.label([1, 2], ["1", "2"], annotator="ada")
    solo = LabelPanel(demo, queue=FixedQueue([1, 2, 3]), annotator="bob", background=False)
    assert solo.current == 3
    both = LabelPanel(demo, queue=FixedQueue([1, 2, 3]), annotator="cy", background=False, overlap=True)
    assert both.current == 1
    both.press("7")
    assert both.current == 2
    ev = demo.store.events(("human",))
    assert sorted(ev.loc[ev["id"] == 1, "annotator"]) == ["ada", "cy"]   # both labels kept
    agree = demo.store.agreement().set_index("id")
    assert agree.loc[1, "n_annotators"] == 2 and agree.loc[1, "agreement"] == 0.5


# -- issue 14: calibrated suggestions, honest status, store failures, undo of any batch, "?" ---------

class SuggestingQueue(FixedQueue):
    """A queue that suggests class '6' at 99% and reports what its fit used."""

    def __init__(self, order, n_labeled=0, seen=0, notes=()):
        super().__init__(order)
        self.n_labeled_, self.classes_seen_, self.warnings_ = n_labeled, list(range(seen)), list(notes)

    def suggest(self, item_id):
        return "6", 0.99


def audit_agrees(p, n=20):
    """The panel's audit has checked ``n`` suggestions shown at 99%, all right (consistent with 99%)."""
    for _ in range(n):
        p.audit.record(0.99, True)


def test_suggestion_says_uncertain_before_fifty_labels_then_a_percentage(demo):
    p = LabelPanel(demo, queue=SuggestingQueue([1, 2, 3], n_labeled=20, seen=10), annotator="ada", background=False)
    assert "uncertain" in p.suggestion.value and "%" not in p.suggestion.value
    p.queue.n_labeled_ = 50
    p.refit()   # 50 labels, but no suggestion shown here has been checked yet: still no percentage
    assert "uncertain — 0 of 20 suggestions checked" in p.suggestion.value and "%" not in p.suggestion.value
    audit_agrees(p)
    p.refit()
    assert "99%" in p.suggestion.value and "uncertain" not in p.suggestion.value


def test_an_uncalibrated_queues_suggestion_shows_no_percentage(demo):
    """A queue built with ``calibration=None`` suggests with its raw top probability: the Label tab printed
    it as "99%" like a calibrated one once the audit agreed; it now says "uncalibrated", with the reason."""

    class RawQueue(SuggestingQueue):
        calibration = None

    p = LabelPanel(demo, queue=RawQueue([1, 2, 3], n_labeled=60, seen=10), annotator="ada", background=False)
    audit_agrees(p)
    p.refit()
    assert "uncalibrated" in p.suggestion.value and "without calibration" in p.suggestion.value
    assert "%" not in p.suggestion.value
    p2 = LabelPanel(demo, queue=SuggestingQueue([1, 2, 3], n_labeled=60, seen=10), annotator="bo", background=False)
    audit_agrees(p2)
    p2.refit()
    assert "99%" in p2.suggestion.value


def test_the_item_shown_before_the_first_fit_gets_its_suggestion_when_the_fit_lands(demo):
    """The App shows the first item before LANCET's first fit: once a fit can suggest, the shown item
    gets its suggestion, without being shown anew (the page's item counter does not move)."""

    class LateQueue(SuggestingQueue):
        def suggest(self, item_id):
            return ("6", 0.99) if self.fits >= 2 else None

    p = LabelPanel(demo, queue=LateQueue([1, 2, 3], n_labeled=60, seen=10), annotator="ada", background=False)
    audit_agrees(p)
    assert p.current == 1 and p.suggestion.value == "" and p.accept_button.disabled
    seq = p.card.shown_count
    p.refit()
    assert "suggested: <b>6</b>" in p.suggestion.value and "99%" in p.suggestion.value
    assert not p.accept_button.disabled and p.current == 1 and p.card.shown_count == seq
    p.press("a")
    assert store_labels(demo) == {1: "6"}


def test_status_reports_what_the_fit_used_not_the_panels_count(demo):
    demo.label(np.arange(100, 120), [str(i % 10) for i in range(20)], annotator="ada")   # 20 labels, 10 classes
    q = SuggestingQueue([1, 2], n_labeled=5, seen=3, notes=["7 of 10 classes have no labels yet"])
    p = LabelPanel(demo, queue=q, annotator="ada", background=False)
    assert 'data-labels="5"' in p.status.value and "fitted on 5 labels from people, 3 of 10 classes" in p.status.value
    assert "15 newer labels wait for the next fit" in p.status.value   # 20 stored, the fit used 5
    assert "7 of 10 classes" in p.status.value       # the note belongs to that same fit
    assert "20 of 1,797 labeled by people" in p.progress_text.value


def test_a_store_error_keeps_the_item_and_says_so_in_red(demo, monkeypatch):
    from dcai_widgets.store.errors import StoreFullError

    p = LabelPanel(demo, queue=FixedQueue([10, 11]), annotator="ada", background=False)
    real = demo.store.append

    def full(*a, **k):
        raise StoreFullError("label store x.db: the disk is full; the label was NOT saved")

    monkeypatch.setattr(demo.store, "append", full)
    p.press("3")
    assert p.current == 10 and store_labels(demo) == {}            # not saved, still on screen
    assert "dcai-error" in p.error.value and "disk is full" in p.error.value and "NOT saved" in p.error.value
    assert p.progress.value == 0
    monkeypatch.setattr(demo.store, "append", real)
    p.press("3")
    assert store_labels(demo) == {10: "3"} and p.current == 11 and p.error.value == ""


def test_a_busy_store_is_retried_with_saving_shown(demo, monkeypatch):
    from dcai_widgets.store.errors import StoreBusyError

    p = LabelPanel(demo, queue=FixedQueue([10, 11, 12]), annotator="ada", background=False)
    p._saver.delay = 0.0
    real, calls, shown = demo.store.append, [], []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) <= 2:
            shown.append(p.error.value)
            raise StoreBusyError("label store x.db stayed locked by another writer")
        return real(*a, **k)

    monkeypatch.setattr(demo.store, "append", flaky)
    p.press("4")
    assert len(calls) == 3 and "saving…" in shown[-1]          # "saving…" while the write was retried
    assert store_labels(demo) == {10: "4"} and p.current == 11 and "after retrying" in p.status.value
    calls.clear()
    monkeypatch.setattr(demo.store, "append", lambda *a, **k: (_ for _ in ()).throw(StoreBusyError("locked")))
    p.press("5")                                               # retries spent: red, not saved, item kept
    assert p.current == 11 and 11 not in store_labels(demo) and "NOT saved" in p.error.value


def test_backspace_undoes_a_bulk_label_made_elsewhere(demo):
    p = LabelPanel(demo, queue=FixedQueue([1, 2, 3]), annotator="expert", background=False)
    p.press("5")
    bulk = list(range(200, 224))
    demo.label(bulk, "8", annotator="expert")                 # e.g. Explore: select all, label 24 as 8
    assert p.progress.value == 25
    undone = p.press("Backspace")
    assert store_labels(demo) == {1: "5"}                       # the whole bulk batch, not the older label
    assert "batch of 24" in p.status.value and "#200" in p.status.value and p.current == 200
    assert p.progress.value == 1
    p.press("Backspace")
    assert store_labels(demo) == {}
    del undone


def test_question_mark_shows_the_keys(demo):
    p = LabelPanel(demo, queue=FixedQueue([1, 2]), annotator="ada", background=False)
    assert not p.help.visible
    p.press("?")
    assert p.help.visible and "Backspace" in p.help.table.value and "label as 7" in p.help.table.value
    p.press("Escape")
    assert not p.help.visible and p.current == 1


def test_label_panel_modules_stay_small_and_keep_the_names_team_mode_uses():
    """label_panel.py was one 524-line class; its parts live in label_view / label_order / label_keys,
    each under ~400 lines, and TeamLabelPanel's overrides and calls still resolve on LabelPanel."""
    import inspect
    from pathlib import Path

    import dcai_widgets.widgets.label_panel as lp
    from dcai_widgets.widgets.label_keys import RESERVED, class_keys
    from dcai_widgets.widgets.team import TeamLabelPanel

    here = Path(lp.__file__).parent
    sizes = {f: len((here / f).read_text().splitlines()) for f in
             ("label_panel.py", "label_view.py", "label_order.py", "label_keys.py")}
    assert max(sizes.values()) <= 400, sizes
    assert lp.RESERVED is RESERVED and lp.class_keys is class_keys          # old import paths still work
    for name in ("_write", "label_current", "refit", "_next_open", "_upcoming", "skip", "undo", "_saved",
                 "_show", "_refresh_counts", "_load_mine", "current", "handle_key", "press"):
        assert hasattr(lp.LabelPanel, name), name
    overridden = [n for n, f in vars(TeamLabelPanel).items()
                  if inspect.isfunction(f) and hasattr(lp.LabelPanel, n) and n != "__init__"]
    assert {"_write", "label_current", "refit", "_next_open", "skip", "undo"} <= set(overridden)
    for n in overridden:   # same parameters as the method it overrides
        base = inspect.signature(getattr(lp.LabelPanel, n))
        assert list(inspect.signature(getattr(TeamLabelPanel, n)).parameters)[:len(base.parameters)] == \
            list(base.parameters), n


def test_after_wrong_confident_suggestions_the_panel_says_uncertain_with_the_true_count(demo):
    """Issue 14: suggestions shown at 99% that people then label otherwise close the audit gate: the panel
    shows "uncertain" and what happened (right k/n), counted from the labels given on this page."""
    order = list(range(1, 80))
    p = LabelPanel(demo, queue=SuggestingQueue(order, n_labeled=60, seen=10), annotator="ada", background=False)
    audit_agrees(p)
    p.refit()
    assert "99%" in p.suggestion.value
    for _ in range(15):          # the person labels each suggested '6' as '3'
        p.label_current("3")
    for _ in range(5):           # and accepts five
        p.accept()
    v = p.audit.verdict()
    assert (v.k, v.n, v.open) == (15, 30, False)   # the audit's window: the last 30 records
    assert ">uncertain — recent suggestions right 15/30</span>" in p.suggestion.value
    assert ">99%<" not in p.suggestion.value   # (the tooltip says why: mean shown 99%, right 15/30)
    assert "suggested: <b>6</b>" in p.suggestion.value and not p.accept_button.disabled
    assert store_labels(demo) == {**{i: "3" for i in range(1, 16)}, **{i: "6" for i in range(16, 21)}}


def test_a_rejected_suggestion_counts_as_wrong_and_a_reloaded_panel_resumes_its_audit(demo):
    """The audit's records are kept in the store per annotator: a reload (a new panel on the same store)
    resumes them instead of starting at "0 of 20 checked"; another annotator's audit is their own."""
    p = LabelPanel(demo, queue=SuggestingQueue([1, 2, 3], n_labeled=60, seen=10), annotator="ada", background=False)
    p.press("x")
    p.label_current("3")
    assert list(p.audit.correct_) == [False] and list(p.audit.conf_) == [0.99]
    p.prev()
    p.label_current("4")          # relabeling an item no longer suggested records nothing
    assert p.audit.total_ == 1
    again = LabelPanel(demo, queue=SuggestingQueue([2, 3], n_labeled=60, seen=10), annotator="ada", background=False)
    assert again.audit.total_ == 1 and list(again.audit.correct_) == [False] and list(again.audit.fit_) == [60]
    assert "1 of 20 suggestions checked" in again.suggestion.value
    again.label_current("6")      # one more suggestion, labeled as suggested: recorded and stored
    reloaded = LabelPanel(demo, queue=SuggestingQueue([3], n_labeled=60, seen=10), annotator="ada", background=False)
    assert reloaded.audit.total_ == 2 and list(reloaded.audit.correct_) == [False, True]
    bo = LabelPanel(demo, queue=SuggestingQueue([3], n_labeled=60, seen=10), annotator="bo", background=False)
    assert bo.audit.total_ == 0


def test_an_unreadable_stored_audit_starts_empty_and_the_page_opens(demo):
    demo.store.publish("audit:ada", {"records": [["x", True]]})
    p = LabelPanel(demo, queue=SuggestingQueue([1, 2], n_labeled=60, seen=10), annotator="ada", background=False)
    assert p.audit.total_ == 0 and "0 of 20 suggestions checked" in p.suggestion.value
    p.label_current("6")
    assert demo.store.published("audit:ada")["records"] == [[0.99, True, 60]]


def test_status_before_any_label_says_so_plainly(demo):
    # seen on the served demo: "queue refit #2 on 0 labels of 0 of 10 classes in 0.04 s"
    q = SuggestingQueue([1, 2], n_labeled=0, seen=0)
    p = LabelPanel(demo, queue=q, annotator="ada", background=False)
    text = re.sub("<[^>]+>", "", p.status.value)
    assert "has no labels from people to learn from yet" in text, text
    assert "of 0 of" not in text and "#" not in text and "0 labels" not in text
