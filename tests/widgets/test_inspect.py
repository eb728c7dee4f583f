"""InspectPanel driven from Python: training set choice, proponents/opponents, suspects review actions
(annotator, no preset class, keyboard), retraining on label changes, temporary stores removed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import dcai_widgets as dw
from dcai_widgets.metastore.inspect_model import training_set
from dcai_widgets.widgets.app import App
from dcai_widgets.widgets.inspect import NO_CLASS, InspectPanel


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)    # small convs: one thread avoids oversubscribing the 2-core CI box
    yield
    torch.set_num_threads(n)


def test_panel_queries_and_review_actions(demo, tmp_path):
    p = InspectPanel(demo, path=str(tmp_path / "ms"), background=False, k=6, n_suspects=8, epochs=6,
                     train_on="people+import", annotator="expert")
    assert p.im is not None, p.status.value
    im = p.im
    # validation list: misclassified items first
    ids = [v for _, v in p.items_list.options]
    pred, _ = im.predict(ids)
    wrong = pred != im.y[ids]
    assert wrong.any() and not (np.diff(wrong.astype(int)) > 0).any()
    # the first item is shown with proponents (positive, descending) and opponents (negative, ascending)
    assert p.current == ids[0]
    assert len(p.pro_grid.ids) == 6 and len(p.opp_grid.ids) == 6
    assert all(s > 0 for s in p.pro_grid.scores) and p.pro_grid.scores == sorted(p.pro_grid.scores, reverse=True)
    assert all(s < 0 for s in p.opp_grid.scores) and p.opp_grid.scores == sorted(p.opp_grid.scores)
    assert set(p.pro_grid.ids) <= set(im.train_ids.tolist())
    # the layer selector changes the scores (fc2 alone is a part of the full TracIn sum)
    before = list(p.pro_grid.scores)
    p.layer_pick.value = "fc2"
    assert p.pro_grid.scores != before
    p.ckpt_pick.value = im.ms.checkpoints[-1]
    assert len(p.suspects_box.children) == 8
    with pytest.raises(ValueError, match="not a validation item"):
        p.show_item(int(im.train_ids[0]))
    # no class is preset: the relabel dropdown is empty and its button disabled until a class is chosen
    row0 = p.suspects_box.children[0]
    pick, relabel_button = row0.children[2], row0.children[3]
    # ("" and not None: a None value renders a blank box in the browser)
    assert pick.value == "" and pick.options[0] == (NO_CLASS, "") and relabel_button.disabled
    assert pick.label == NO_CLASS
    n_labeled = len(demo.labeled())
    relabel_button.click()                                # nothing chosen: writes nothing
    assert len(demo.labeled()) == n_labeled
    pick.value = demo.classes[3]
    assert not relabel_button.disabled
    pick.value = ""
    assert relabel_button.disabled
    pick.value = demo.classes[3]
    # the influence scores on the proponent/opponent cards are explained in the legend
    for grid in (p.pro_grid, p.opp_grid):
        assert grid.score_name and grid.score_name[0] == "influence"
        assert "influence" in grid.legend.value and "TracIn" in grid.legend.value
    # review actions through the Session, with the page's annotator
    sus = p.suspects_frame
    a, b, c = (int(i) for i in sus["id"][:3])
    p.relabel(a, int(sus["suggested"][0]))
    p.confirm(b)
    lab = demo.labeled().set_index("id")
    assert lab.loc[a, "source"] == "review" and lab.loc[a, "label"] == demo.classes[int(sus["suggested"][0])]
    assert lab.loc[b, "label"] == demo.classes[int(im.y[b])]
    assert lab.loc[a, "annotator"] == "expert" and lab.loc[b, "annotator"] == "expert"
    assert p.im is im and p.pending == 2          # the panel's own review labels wait for a retrain
    # exclude through the row's button, then include again, then exclude for the retrain
    row = p.suspects_box.children[2]
    button = row.children[5]
    button.click()
    assert demo.excluded().tolist() == [c] and button.description == "include"
    button.click()
    assert demo.excluded().tolist() == []
    p.exclude(c)
    old_path = im.ms.path
    p.retrain()
    assert p.im is not im and c not in p.im.train_ids and c not in p.im.val_ids
    assert p.im.y[a] == int(sus["suggested"][0])          # the relabel is trained on
    assert not Path(old_path).exists()                    # the previous model's factors are removed


def test_keyboard_moves_through_suspects_and_acts(demo, tmp_path):
    p = InspectPanel(demo, background=False, n_suspects=5, epochs=3, train_on="people+import",
                     annotator="kb", auto_retrain=False)
    assert p.im is not None, p.status.value
    ids = p.suspects_frame["id"].tolist()
    assert p.cursor == 0 and "dcai-selected" in p.suspects_box.children[0]._dom_classes
    p.keyboard.press("j")
    assert p.cursor == 1 and "dcai-selected" not in p.suspects_box.children[0]._dom_classes
    p.keyboard.press("k")
    p.keyboard.press("c")                     # confirm the first, move on
    p.keyboard.press("3")                     # relabel the second as class index 2 ("3" is the third key)
    p.keyboard.press("e")                     # exclude the third
    lab = demo.labeled(("review",)).set_index("id")
    assert lab.loc[ids[0], "label"] == demo.classes[int(p.im.y[ids[0]])]
    assert lab.loc[ids[1], "label"] == demo.classes[2] and set(lab["annotator"]) == {"kb"}
    assert demo.excluded().tolist() == [ids[2]]
    assert p.key_help.visible is False
    p.keyboard.press("?")
    assert p.key_help.visible and "relabel as" in p.key_help.table.value
    path = Path(p.im.ms.path)
    assert path.exists()
    p.close()
    assert not path.exists()                  # the temporary factor store is removed


def test_training_set_follows_the_users_choice(tmp_path):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(60, 6)) + 3 * np.eye(6)[np.arange(60) % 3]).astype(np.float32)
    y_true = np.asarray(["a", "b", "c"])[np.arange(60) % 3]
    s = dw.Session.from_embeddings(X, ["a", "b", "c"], y_true=y_true, store=tmp_path / "l.db")
    s.label(list(range(12)), [y_true[i] for i in range(12)], annotator="ann")
    s.set_propagated(list(range(40, 50)), ["a"] * 10, [0.5] * 10)
    mine = training_set(s, "people")
    assert mine.ids.tolist() == list(range(12)) and mine.counts == {"yours": 12}
    imp = training_set(s, "people+import")
    assert len(imp.ids) == 60 and imp.counts == {"yours": 12, "imported": 48}
    allp = training_set(s, "people+import+propagated")
    assert allp.counts["propagated"] == 0              # dataset labels win over propagated guesses
    s2 = dw.Session.from_embeddings(X, ["a", "b", "c"], store=tmp_path / "l2.db")
    s2.label(list(range(12)), [y_true[i] for i in range(12)])
    s2.set_propagated(list(range(40, 50)), ["a"] * 10, [0.5] * 10)
    p3 = training_set(s2, "people+import+propagated")
    assert p3.counts == {"yours": 12, "imported": 0, "propagated": 10}
    assert np.allclose(p3.weight[40:50], 0.5) and np.allclose(p3.weight[:12], 1.0)
    # the panel trains on what was chosen and says so
    p = InspectPanel(s, background=False, epochs=2, n_suspects=3)
    assert p.im is not None, p.status.value
    assert set(p.im.train_ids) | set(p.im.val_ids) == set(range(12))
    assert "12 labels (12 yours)" in p.training_info.value
    p.train_pick.value = "people+import"                 # choosing retrains on the new set
    assert len(p.im.train_ids) + len(p.im.val_ids) == 60
    assert "60 labels (12 yours, 48 imported)" in p.training_info.value
    p.close()
    with pytest.raises(ValueError, match="train_on"):
        training_set(s, "everything")


def test_retrains_when_labels_it_trains_on_change(tmp_path):
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(50, 4)) + 3 * np.eye(4)[np.arange(50) % 2][:, :4]).astype(np.float32)
    names = np.asarray(["x", "y"])[np.arange(50) % 2]
    s = dw.Session.from_embeddings(X, ["x", "y"], store=tmp_path / "l.db")
    s.label(list(range(10)), list(names[:10]))
    p = InspectPanel(s, background=False, epochs=2, n_suspects=3)
    first = p.im
    assert first is not None and len(first.train_ids) + len(first.val_ids) == 10
    s.label([20, 21, 22], list(names[20:23]), annotator="other")      # labeled in another panel
    assert p.im is not first and len(p.im.train_ids) + len(p.im.val_ids) == 13
    assert not Path(first.ms.path).exists()
    second = p.im
    s.set_propagated([30], ["x"], [0.9])                 # not part of "your labels": no retrain
    assert p.im is second
    p.close()


def test_app_builds_inspect_lazily_with_the_annotator(demo):
    demo.label(list(range(40)), [demo.classes[int(v)] for v in demo.y_true[:40]], annotator="lead-1")
    app = App(demo, annotator="lead-1")
    titles = [app.tabs.get_title(i) for i in range(len(app.tabs.children))]
    assert "Inspect" in titles
    idx = titles.index("Inspect")
    assert not isinstance(app.tabs.children[idx], InspectPanel)       # nothing trained at app start
    panel = app.show_tab(idx)
    assert isinstance(panel, InspectPanel) and panel.annotator == "lead-1"
    panel.wait(180)
    assert panel.im is not None, panel.status.value
    assert panel.progress.value == 1.0 and panel.items_list.options
    panel.close()


def test_too_few_labels_is_reported_in_the_panel(tmp_path):
    rng = np.random.default_rng(0)
    s = dw.Session.from_embeddings(rng.normal(size=(40, 5)).astype(np.float32), ["a", "b"],
                                   store=tmp_path / "l.db")
    s.label([0, 1, 2], ["a", "b", "a"])
    p = InspectPanel(s, background=False)
    assert p.im is None and "at least 10" in p.status.value and "your labels" in p.status.value
    with pytest.raises(RuntimeError, match="preparing"):
        p.show_item(0)


def test_temporary_store_is_removed_at_interpreter_exit(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import numpy as np, torch
        torch.set_num_threads(1)
        import dcai_widgets as dw
        from dcai_widgets.widgets.inspect import InspectPanel
        rng = np.random.default_rng(0)
        X = (rng.normal(size=(40, 4)) + 3 * np.eye(4)[np.arange(40) % 2]).astype(np.float32)
        s = dw.Session.from_embeddings(X, ["x", "y"], store={str(tmp_path / "l.db")!r})
        s.label(list(range(20)), ["x", "y"] * 10)
        p = InspectPanel(s, background=False, epochs=2, n_suspects=3)
        assert p.im is not None, p.status.value
        print(p.im.ms.path, flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path.name.startswith("dcai-inspect-") and not path.exists()


def test_proponents_and_opponents_stop_where_the_sign_of_the_influence_does(demo, tmp_path, monkeypatch):
    """The regenerated Inspect screenshot listed "influence -3.7" among the proponents ("push toward this
    label"): the top k by score were shown whatever their sign."""
    import pandas as pd

    p = InspectPanel(demo, path=str(tmp_path / "ms"), background=False, k=4, n_suspects=4, epochs=2,
                     train_on="people+import", annotator="expert")
    im = p.im
    t = [int(i) for i in im.train_ids[:4]]
    monkeypatch.setattr(im.ms, "proponents", lambda *a, **k: pd.DataFrame({"id": t, "score": [3.0, 1.0, -0.5, -2.0]}))
    monkeypatch.setattr(im.ms, "opponents", lambda *a, **k: pd.DataFrame({"id": t[::-1], "score": [-2.0, -0.5, 1.0, 3.0]}))
    p.show_item(p.current)
    assert p.pro_grid.ids == t[:2] and all(s > 0 for s in p.pro_grid.scores)
    assert p.opp_grid.ids == t[::-1][:2] and all(s < 0 for s in p.opp_grid.scores)
    assert "only 2 training items push toward this label" in p.query_info.value
    assert "only 2 training items push away from it" in p.query_info.value
