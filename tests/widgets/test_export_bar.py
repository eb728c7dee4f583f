"""ExportBar: the served page's only way to get the labels out (the Label tab's "Export with
session.export(path)" asked a browser user to run Python). People's labels by default; propagated ones
only when asked; the file comes as a download link."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd

import dcai_widgets as dw
from dcai_widgets.queue import UncertaintyQueue
from dcai_widgets.widgets import App
from dcai_widgets.widgets.export_bar import ExportBar


def _download(bar) -> tuple[str, bytes]:
    m = re.search(r'download="([^"]+)" href="data:[^;]+;base64,([^"]+)"', bar.link.value)
    assert m, bar.link.value
    return m.group(1), base64.b64decode(m.group(2))


def test_the_page_exports_peoples_labels_as_a_download_and_propagated_ones_only_when_asked(tmp_path):
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    s = dw.Session.from_embeddings(X, ["1", "2", "3"], store=tmp_path / "l.db")
    s.label([0, 1, 2], ["1", "2", "3"], annotator="ann")
    s.set_propagated([5, 6], ["1", "1"], [0.8, 0.6], model_version="lancet-3-1")
    bar = ExportBar(s, background=False)
    bar.export()
    name, data = _download(bar)
    df = pd.read_csv(io.BytesIO(data), dtype={"label": str})
    assert name == "labels.csv" and sorted(df["id"]) == [0, 1, 2] and set(df["annotator"]) == {"ann"}
    assert df["label"].tolist() == ["1", "2", "3"] and "3 items" in bar.link.value
    bar.propagated.value, bar.format.value = True, "jsonl"
    bar.export()
    name, data = _download(bar)
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert name == "labels.jsonl" and sorted(r["id"] for r in rows) == [0, 1, 2, 5, 6]
    assert {r["source"] for r in rows if r["id"] in (5, 6)} == {"propagated"} and not bar.button.disabled


def test_only_a_lead_or_the_single_user_gets_the_export_bar(demo):
    q = UncertaintyQueue(demo, cold_start=5)
    assert App(demo, queue=q, prepare=False).export_bar is not None
    assert App(demo, annotator="lee", queue=q, role="lead", team=True, prepare=False).export_bar is not None
    assert App(demo, annotator="ada", queue=q, role="annotator", team=True, prepare=False).export_bar is None
