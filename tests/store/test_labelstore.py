import json
import multiprocessing as mp
import sqlite3

import pandas as pd
import pytest

from dcai_widgets.store import LabelStore, StoreMismatchError, open_store


def test_append_is_persisted_and_current_is_latest(tmp_path):
    path = tmp_path / "l.db"
    s = LabelStore(path)
    s.append([1, 2], ["a", "b"], annotator="ada")
    s.append([1], ["c"], annotator="bob")
    # a second, independent connection sees the committed rows immediately
    rows = sqlite3.connect(path).execute("SELECT item, label FROM events ORDER BY seq").fetchall()
    assert rows == [(1, "a"), (2, "b"), (1, "c")]
    cur = s.current()
    assert cur.set_index("id")["label"].to_dict() == {1: "c", 2: "b"}
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_undo_appends_a_retraction_and_restores_previous_label(make_store):
    s = make_store()
    s.append([1], ["a"], annotator="ada")
    s.append([1, 2, 3], ["b", "b", "b"], annotator="ada")  # one bulk action
    n_before = len(s)
    undone = s.undo("ada")
    assert sorted(undone["id"]) == [1, 2, 3]  # the whole batch is undone at once
    assert len(s) == n_before + 3  # nothing deleted: three retraction events appended
    assert s.current().set_index("id")["label"].to_dict() == {1: "a"}
    s.undo("ada")
    assert s.current().empty
    assert s.undo("ada").empty  # nothing left to undo is not an error
    all_events = s.events(include_retracted=True)
    assert all_events["retracts"].notna().sum() == 4


def test_undo_only_touches_that_annotator(make_store):
    s = make_store()
    s.append([1], ["a"], annotator="ada")
    s.append([2], ["b"], annotator="bob")
    s.undo("ada")
    assert s.current()["id"].tolist() == [2]


def test_agreement_and_progress(make_store):
    s = make_store()
    s.append([1, 2], ["a", "a"], annotator="ada")
    s.append([1, 2], ["a", "b"], annotator="bob")
    s.append([1], ["a"], annotator="cy")
    ag = s.agreement().set_index("id")
    assert ag.loc[1, "n_annotators"] == 3 and ag.loc[1, "agreement"] == 1.0
    assert ag.loc[2, "agreement"] == 0.5
    prog = s.progress().set_index("annotator")["items"].to_dict()
    assert prog == {"ada": 2, "bob": 2, "cy": 1}


def test_bind_refuses_a_store_of_another_dataset_and_keeps_its_labels(make_store):
    s = make_store()
    s.bind("aaaa", 10, ["x", "y"])
    s.append([1], ["x"])
    with pytest.raises(StoreMismatchError, match="another dataset"):
        open_store(s.target).bind("bbbb", 10, ["x", "y"])
    with pytest.raises(StoreMismatchError, match=r"\['x'\]"):
        open_store(s.target).bind("aaaa", 10, ["y", "z"])
    reopened = open_store(s.target)
    assert reopened.current()["label"].tolist() == ["x"]
    assert json.loads(reopened.meta()["classes"]) == ["x", "y"]


def test_bad_paths_and_files(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        LabelStore(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        LabelStore(tmp_path / "nope" / "l.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ValueError, match="not a dcai-widgets label store"):
        LabelStore(junk)
    s = LabelStore(tmp_path / "ok.db")
    with pytest.raises(ValueError, match="unknown source"):
        s.append([1], ["a"], source="robot")
    with pytest.raises(ValueError, match="one label per item"):
        s.append([1, 2], ["a"])


def _writer(target, worker, n):
    s = open_store(target, timeout=60.0)
    for i in range(n):
        s.append([worker * 1000 + i], [f"w{worker}"], annotator=f"w{worker}")


def test_concurrent_processes_lose_no_write(make_store):
    path = make_store().target
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 150)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ev = open_store(path).events()
    assert len(ev) == 600
    assert ev.groupby("annotator").size().to_dict() == {f"w{w}": 150 for w in range(4)}
    assert isinstance(ev, pd.DataFrame)


def test_current_propagated_table_matches_the_versions_and_is_rebuilt(make_store):
    s = make_store()
    s.append([1, 2, 3], ["a", "b", "c"], source="propagated", confidence=[0.5, 0.6, 0.7], model_version="m1")
    s.append([2], ["z"], source="propagated", confidence=[0.9], model_version="m2")
    s.append([2], ["h"], annotator="ada")  # human labels do not touch the propagated view
    got = s.current(("propagated",)).set_index("id")
    assert got["label"].to_dict() == {1: "a", 2: "z", 3: "c"}
    assert got.loc[2, "model_version"] == "m2" and got.loc[2, "confidence"] == 0.9
    s._write(lambda c: c.execute("DELETE FROM propagated_chunks"))      # lose the derived rows
    again = open_store(s.target).current(("propagated",)).set_index("id")
    assert again["label"].to_dict() == {1: "a", 2: "z", 3: "c"}
    with pytest.raises(ValueError, match="undo takes sources"):
        s.undo(sources=("propagated",))


def test_current_of_some_ids_matches_the_full_read_filtered(make_store):
    """A page's labels read by id (what the grids show) equal the full read, relabels, undos and the
    propagated table included, also for more ids than one query binds."""
    s = make_store()
    s.append(range(0, 3000, 2), ["a"] * 1500, annotator="ada")
    s.append([4, 6, 8], ["b"] * 3, annotator="bob")          # relabels
    s.append([10, 12], ["c", "c"], annotator="bob")
    s.undo("bob")                                            # 10, 12 back to "a"
    s.append(range(3000), ["p"] * 3000, source="propagated", confidence=[0.5] * 3000)
    s.append([1, 2], ["q", "q"], source="propagated", confidence=[0.9, 0.8])
    for sources in [("human", "review"), ("propagated",), ("human", "propagated")]:
        full = s.current(sources)
        for ids in ([4, 5, 10, 2999, 4], list(range(0, 3000, 3)), [], [123456]):
            got = s.current(sources, ids=ids)
            want = full[full["id"].isin(ids)].reset_index(drop=True)
            pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)
    page = s.current(("propagated",), ids=[1, 2, 3]).set_index("id")
    assert page["label"].to_dict() == {1: "q", 2: "q", 3: "p"}
    assert s.current(ids=[10, 12, 6]).set_index("id")["label"].to_dict() == {6: "b", 10: "a", 12: "a"}


def test_append_bulk_writes_every_part_and_lets_other_writes_go_first(make_store):
    """A model's labels: all land as one snapshot version (one batch), the current table is right, bad
    input writes nothing; and before it this process's other writes (a person's label) go first."""
    import threading

    s = make_store()
    assert s.append_bulk([], [], source="propagated") == 0
    with pytest.raises(ValueError, match="confidences"):
        s.append_bulk([1, 2], ["a", "b"], source="propagated", confidence=[0.5])
    with pytest.raises(ValueError, match="could not convert"):       # a bad value in a later part
        s.append_bulk(range(4), list("abcd"), rows=2, source="propagated", confidence=[0.5, 0.5, 0.5, "x"])
    with pytest.raises(ValueError, match="unknown source"):
        s.append_bulk([1], ["a"], source="model")
    assert len(s) == 0
    last = s.append_bulk(range(10), list("abcdefghij"), rows=3, source="propagated",
                         confidence=[0.1 * i for i in range(10)], model_version="m")
    ev = s.events(("propagated",), include_retracted=True)
    assert len(ev) == 10 and ev["batch"].nunique() == 1 and last == ev["batch"].max()
    assert s.propagated_versions()[["version", "n", "n_changed"]].values.tolist() == [[last, 10, 10]]
    assert s.current(("propagated",)).set_index("id")["label"].to_dict() == dict(enumerate("abcdefghij"))

    other = open_store(s.target)         # another writer, as another process would be: a person labels
    th = threading.Thread(target=lambda: s.append_bulk(range(6), ["z"] * 6, rows=2, source="propagated"))
    with other.person_writing():          # ... and is still writing: the model's parts must wait
        th.start()
        th.join(0.3)
        assert th.is_alive() and len(s) == 10      # nothing written while the person's write is pending
        other.append([7], ["human-label"], annotator="ada")
    th.join(30)
    assert not th.is_alive()
    ev = s.events(("human", "propagated"))
    human_seq = int(ev.loc[ev["source"] == "human", "seq"].iloc[0])
    assert (ev.loc[ev["label"] == "z", "seq"] > human_seq).all()
