"""Texts and table rows go through the same Label panel and map (texts escaped, rows as key/value)."""
import numpy as np
import pandas as pd

import dcai_widgets as dw
from dcai_widgets.widgets.label_panel import LabelPanel
from dcai_widgets.widgets.map_view import MapView


def test_text_session_labels_with_letter_keys(tmp_path):
    rng = np.random.default_rng(0)
    texts = [f"<i>post {i}</i> about {'cats' if i % 2 else 'dogs'}" for i in range(40)]
    X = rng.normal(size=(40, 8)).astype(np.float32)
    s = dw.Session.from_embeddings(X, ["cats", "dogs", "other"], items=texts, store=tmp_path / "t.db")
    p = LabelPanel(s, annotator="ada", background=False)
    assert p.shortcuts == ["1", "2", "3"] and p.buttons[1].description == "2 · dogs"
    i = p.current
    assert "&lt;i&gt;post" in p.card.body.value
    p.press("2")
    assert s.labeled().set_index("id").loc[i, "label"] == "dogs"


def test_table_rows_show_and_label(tmp_path):
    df = pd.DataFrame({"age": np.arange(15), "dose": np.linspace(0, 1, 15)})  # < 16 rows: no UMAP needed
    s = dw.Session.from_embeddings(df.to_numpy(np.float32), ["ok", "bad"], items=df, store=tmp_path / "r.db")
    p = LabelPanel(s, annotator="ada", background=False)
    assert "<th>age</th>" in p.card.body.value
    p.press("1")
    assert list(s.labeled()["label"]) == ["ok"]
    view = MapView(s)
    assert "desc" in view.source.data and "age=" in view.source.data["desc"][0]
