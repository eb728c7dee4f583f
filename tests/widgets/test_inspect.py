"""InspectPanel driven from Python: lazy preparation, proponents/opponents, suspects review actions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import dcai_widgets as dw
from dcai_widgets.widgets.app import App
from dcai_widgets.widgets.inspect import InspectPanel


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)    # small convs: one thread avoids oversubscribing the 2-core CI box
    yield
    torch.set_num_threads(n)


def test_panel_queries_and_review_actions(demo, tmp_path):
    p = InspectPanel(demo, path=str(tmp_path / "ms"), background=False, k=6, n_suspects=8, epochs=6)
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
    # review actions through the Session
    sus = p.suspects_frame
    a, b, c = (int(i) for i in sus["id"][:3])
    p.relabel(a, int(sus["suggested"][0]))
    p.confirm(b)
    lab = demo.labeled().set_index("id")
    assert lab.loc[a, "source"] == "review" and lab.loc[a, "label"] == demo.classes[int(sus["suggested"][0])]
    assert lab.loc[b, "label"] == demo.classes[int(im.y[b])]
    # exclude through the row's button, then include again, then exclude for the retrain
    row = p.suspects_box.children[2]
    button = row.children[5]
    button.click()
    assert demo.excluded().tolist() == [c] and button.description == "include"
    button.click()
    assert demo.excluded().tolist() == []
    p.exclude(c)
    p.retrain()
    assert p.im is not im and c not in p.im.train_ids and c not in p.im.val_ids
    assert p.im.y[a] == int(sus["suggested"][0])          # the relabel is trained on


def test_app_builds_inspect_lazily(demo):
    app = App(demo)
    titles = [app.tabs.get_title(i) for i in range(len(app.tabs.children))]
    assert "Inspect" in titles
    idx = titles.index("Inspect")
    assert not isinstance(app.tabs.children[idx], InspectPanel)       # nothing trained at app start
    panel = app.show_tab(idx)
    assert isinstance(panel, InspectPanel)
    panel.wait(120)
    assert panel.im is not None, panel.status.value
    assert panel.progress.value == 1.0 and panel.items_list.options


def test_too_few_labels_is_reported_in_the_panel(tmp_path):
    rng = np.random.default_rng(0)
    s = dw.Session.from_embeddings(rng.normal(size=(40, 5)).astype(np.float32), ["a", "b"],
                                   store=tmp_path / "l.db")
    s.label([0, 1, 2], ["a", "b", "a"])
    p = InspectPanel(s, background=False)
    assert p.im is None and "at least 10" in p.status.value
    with pytest.raises(RuntimeError, match="preparing"):
        p.show_item(0)
