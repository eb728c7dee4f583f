"""DataNotes above the tabs (found on a new user's walk through the served app): a folder of images of
mixed sizes says it was resized (and each card its file's size), and labels a user's file brought (a CSV
label column, class folders) are said and offered for import instead of silently unused."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dcai_widgets.widgets.app import app_from_env
from dcai_widgets.widgets.data_notes import DataNotes


def _serve(data, store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the loader's warning goes to the server's terminal only
        return app_from_env({"DCAI_DATA": str(data), "DCAI_STORE": str(store), "DCAI_ANNOTATOR": "ann"})


def test_a_folder_of_mixed_sizes_says_on_the_page_what_resizing_did(tmp_path):
    for c, colour in (("cat", 60), ("dog", 200)):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for k, size in enumerate([(16, 16), (16, 16), (40, 20)]):
            Image.new("L", size, colour + k).save(tmp_path / "imgs" / c / f"{k}.png")
    app = _serve(tmp_path / "imgs", tmp_path / "l.db")
    note = app.data_notes.resized.value
    assert "2 of 6 images were resized to 16x16 (from 40x20 (2))" in note and "image_size" in note
    assert app.data_notes.layout.display != "none"
    resized = int(app.session.items.resized_["id"].iloc[0])
    card = app.label_panel.card
    card.show(resized)
    assert "resized from 40x20" in card.caption.value
    card.show(0)
    assert "resized" not in card.caption.value
    # class folders are the user's labels: said, and offered
    assert 'data-known="6"' in app.data_notes.known.value
    # `serve --image-size 24`: the size the person chose, said as well
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sized = app_from_env({"DCAI_DATA": str(tmp_path / "imgs"), "DCAI_STORE": str(tmp_path / "m.db"),
                              "DCAI_IMAGE_SIZE": "24"})
    assert sized.session.items.images.shape[1:3] == (24, 24)
    assert "6 of 6 images were resized to 24x24" in sized.data_notes.resized.value


def test_a_csvs_label_column_is_offered_for_import_and_never_overwrites_a_label_made_here(tmp_path):
    rng = np.random.default_rng(0)
    pd.DataFrame({"label": [1, 2, 3] * 4, "size": rng.random(12), "weight": rng.random(12)}).to_csv(
        tmp_path / "t.csv", index=False)
    app = _serve(tmp_path / "t.csv", tmp_path / "l.db")
    s, notes = app.session, app.data_notes
    assert "comes with labels for 12 of 12 items" in notes.known.value and "not counted" in notes.known.value
    assert notes.import_button.description == "import 12 labels" and notes.import_button.layout.display == ""
    i = app.label_panel.current
    other = next(c for c in s.classes if c != s.classes[s.y_true[i]])
    app.label_panel.press(str(s.classes.index(other) + 1))          # a person's label, unlike the file's
    assert notes.import_button.description == "import 11 labels"
    notes.import_button.click()
    cur = s.labeled().set_index("id")
    assert len(cur) == 12 and (cur["source"] == "import").sum() == 11
    assert cur.loc[i, "label"] == other and cur.loc[i, "source"] == "human"   # not overwritten
    assert set(cur.loc[cur["source"] == "import", "annotator"]) == {"ann"}
    assert "are imported" in notes.known.value and notes.import_button.layout.display == "none"
    s.label([i], [s.classes[s.y_true[i]]], annotator="ann")             # a later label still wins
    assert s.labeled(ids=[i])["source"].tolist() == ["human"] and "are imported" in notes.known.value


def test_nothing_to_say_hides_the_notes_and_an_annotator_cannot_import(demo):
    assert DataNotes(demo).layout.display == "none"          # the digits demo: its y_true is an answer key
    notes = DataNotes(demo, offer_import=True, can_import=False)
    assert "a lead can import them" in notes.known.value and notes.import_button.layout.display == "none"
    with pytest.raises(PermissionError):
        notes.import_labels()


def test_a_text_files_other_columns_are_said_to_be_unused(tmp_path):
    """A CSV with a text column and other columns ("id", "date"): the text session embeds and shows only
    the text, and the page said nothing of the rest (found on a new user's walk); now the notes name them."""
    import dcai_widgets as dw

    frame = pd.DataFrame({"id": range(4), "text": ["late fee", "paid", "refund please", "thanks"],
                          "label": ["bill", "bill", "ask", "ask"], "date": ["2026-01-0%d" % k for k in range(1, 5)]})
    s = dw.Session.from_table(frame, label_column="label", text_column="text", store=tmp_path / "l.db")
    assert s.items.unused_columns_ == ["id", "date"]
    notes = DataNotes(s)
    assert "<code>id</code>, <code>date</code> are not used" in notes.unused.value
    assert notes.layout.display != "none"
    only = dw.Session.from_table(frame[["text", "label"]], label_column="label", text_column="text",
                                 store=tmp_path / "m.db")
    assert DataNotes(only).unused.value == "" and DataNotes(only).layout.display == "none"
