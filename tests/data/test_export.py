"""Session.export: every format read back, with the same label columns, ISO 8601 timestamps, annotator and
source; the folder layouts per modality."""
import json
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import dcai_widgets as dw
from dcai_widgets.data.export import COLUMNS


@pytest.fixture
def labeled(tmp_path):
    s = dw.Session.demo(store=tmp_path / "labels.db")
    s.label([0, 1, 2], ["0", "1", "2"], annotator="ada")
    s.label([5], "7", annotator="bob", source="review")
    s.set_propagated([1, 3, 4], ["9", "3", "4"], [0.9, 0.8, 0.7], model_version="m1")
    s.exclude([4], annotator="ada", reason="blurry")
    return s


EXPECTED = {0: ("0", "ada", "human"), 1: ("1", "ada", "human"), 2: ("2", "ada", "human"),
            3: ("3", None, "propagated"), 4: ("4", None, "propagated"), 5: ("7", "bob", "review")}


def _check(df):
    assert list(df.columns[:len(COLUMNS)]) == COLUMNS
    got = {int(r.id): (r.label, None if pd.isna(r.annotator) else r.annotator, r.source) for r in df.itertuples()}
    assert got == EXPECTED
    assert df.set_index("id").loc[3, "confidence"] == pytest.approx(0.8)
    assert df.set_index("id")["excluded"].to_dict() == {0: False, 1: False, 2: False, 3: False, 4: True, 5: False}


def _iso(values):
    for v in values:
        t = datetime.fromisoformat(v)                   # ISO 8601 with an explicit UTC offset
        assert t.utcoffset().total_seconds() == 0 and abs((datetime.now(t.tzinfo) - t).total_seconds()) < 600


def test_csv_parquet_jsonl(labeled, tmp_path):
    _check(pd.read_csv(labeled.export(tmp_path / "l.csv"), dtype={"label": str}))   # names, not numbers
    _iso(pd.read_csv(tmp_path / "l.csv")["ts"])
    pq = pd.read_parquet(labeled.export(tmp_path / "l.parquet"))
    _check(pq)
    assert str(pq["ts"].dt.tz) == "UTC"
    rows = [json.loads(line) for line in labeled.export(tmp_path / "l.jsonl").read_text().splitlines()]
    _check(pd.DataFrame(rows))
    _iso(r["ts"] for r in rows)
    only_people = pd.read_csv(labeled.export(tmp_path / "h.csv", sources=("human", "review")))
    assert sorted(only_people["id"]) == [0, 1, 2, 5]


def test_hugging_face_datasets_with_images(labeled, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = labeled.export(tmp_path / "hf", format="hf")
    ds = datasets.load_from_disk(str(out))
    df = ds.remove_columns("image").to_pandas()
    _check(df)
    assert str(df["ts"].dt.tz) == "UTC"
    img = ds[0]["image"]
    assert img.size == (8, 8) and np.array_equal(np.asarray(img), labeled.items.images[ds[0]["id"]])


def test_imagefolder_layout(labeled, tmp_path):
    out = labeled.export(tmp_path / "folder", format="imagefolder")
    meta = pd.read_csv(out / "metadata.csv", dtype={"label": str})
    _check(meta.drop(columns="file_name"))
    _iso(meta["ts"])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["0", "1", "2", "3", "4", "7"]
    for r in meta.itertuples():
        assert r.file_name.split("/")[0] == r.label
        assert np.array_equal(np.asarray(Image.open(out / r.file_name)), labeled.items.images[r.id])
    with pytest.raises(ValueError, match="not an empty folder"):
        labeled.export(out, format="imagefolder")          # never mixes with an earlier export
    assert len(list((out / "0").iterdir())) == 1


def test_text_and_table_folders_and_jsonl_items(tmp_path):
    t = dw.Session.from_texts(["red apple", "blue sky", "a/b ../c"], ["fruit", "sky/../x"], encoder="tfidf",
                              store=tmp_path / "t.db")
    t.label([0, 1, 2], ["fruit", "sky/../x", "fruit"], annotator="ada")
    out = t.export(tmp_path / "texts", format="imagefolder")
    meta = pd.read_csv(out / "metadata.csv")
    assert (out / meta.loc[1, "file_name"]).read_text() == "blue sky"
    assert all((out / f).resolve().is_relative_to(out.resolve()) for f in meta["file_name"])   # no escape
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["fruit", "sky_.._x"]
    rows = [json.loads(x) for x in t.export(tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["red apple", "blue sky", "a/b ../c"]
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "label": ["x", "y", "x"]})
    tab = dw.Session.from_table(frame[["a"]], ["x", "y"], store=tmp_path / "tab.db")
    tab.label([0, 2], "x", annotator="ada")
    out = tab.export(tmp_path / "tables", format="imagefolder")
    assert pd.read_csv(out / "x" / "rows.csv").to_dict("list") == {"a": [1.0, 3.0], "id": [0, 2]}


def test_export_errors(labeled, tmp_path):
    with pytest.raises(ValueError, match="can't tell the format"):
        labeled.export(tmp_path / "labels.txt")
    with pytest.raises(ValueError, match="unknown export format"):
        labeled.export(tmp_path / "x", format="xml")
    with pytest.raises(ValueError, match="does not exist"):
        labeled.export(tmp_path / "nope" / "l.csv")
    with pytest.raises(ValueError, match="sources"):
        labeled.export(tmp_path / "l.csv", sources=("oracle",))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []    # no temp files left
