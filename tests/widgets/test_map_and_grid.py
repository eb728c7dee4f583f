"""MapView and ItemGrid from Python: palette, selection round trip (as jupyter_bokeh delivers it), bulk
labeling, colours following labels, downsampled maps that still select every point."""
import numpy as np
import pytest

from dcai_widgets.widgets.item_grid import ItemGrid
from dcai_widgets.widgets.map_view import MapView, class_palette, geometry_mask, points_in_polygon


@pytest.mark.parametrize("n", [3, 10, 15, 20, 40, 100])
def test_palette_gives_distinct_colours_beyond_20_classes(n):
    pal = class_palette(n)
    assert len(pal) == n and len(set(pal)) == n


def test_points_in_polygon_matches_a_square_and_a_triangle():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-2, 2, size=(2000, 2))
    sq = points_in_polygon(xy, np.array([-1, 1, 1, -1.0]), np.array([-1, -1, 1, 1.0]))
    assert np.array_equal(sq, (np.abs(xy) < 1).all(axis=1))
    tri = points_in_polygon(xy, np.array([0, 1, 0.0]), np.array([0, 0, 1.0]))
    assert np.array_equal(tri, (xy[:, 0] > 0) & (xy[:, 1] > 0) & (xy.sum(axis=1) < 1))
    rect = geometry_mask(xy, {"type": "rect", "x0": 1, "x1": -1, "y0": -1, "y1": 1})
    assert np.array_equal(rect, sq)


def browser_selects(view, rows):
    """Deliver a selection exactly as jupyter_bokeh does when the user lassos in the browser."""
    sel = view.source.selected
    view.plot._sync_model(view.plot, {"event": "jsevent", "kind": "ModelChanged", "model": {"id": sel.id},
                                      "attr": "indices", "new": list(rows)}, [])


def test_lasso_selection_fills_the_grid_and_bulk_labels_in_one_batch(demo):
    view = MapView(demo, annotator="ada")
    rows = [5, 17, 40, 41]
    browser_selects(view, rows)
    ids = sorted(int(view.shown[r]) for r in rows)
    assert view.selected == ids and view.grid.ids == ids and sorted(view.grid.selected) == ids
    assert 'data-count="4"' in view.info.value
    # deselect one card, then bulk label the rest
    _box, card, toggle = view.grid._cells[0]
    toggle.value = False
    assert card.item_id not in view.grid.selected
    view.grid.class_pick.value = "6"
    view.grid.label_button.click()
    cur = demo.labeled()
    assert sorted(cur["id"]) == [i for i in ids if i != card.item_id]
    assert set(cur["label"]) == {"6"} and set(cur["annotator"]) == {"ada"}
    assert demo.store.events()["ts"].nunique() == 1  # one transaction
    # colours and legend follow the store
    pos = {int(i): k for k, i in enumerate(view.shown)}
    assert view.source.data["color"][pos[ids[-1]]] == view.palette[6]
    assert view.source.data["color"][pos[card.item_id]] == "#bdbdbd"
    assert "6 (3)" in view.legend.value
    # the grid cards show the new labels
    assert "dcai-human" in view.grid._cells[1][1].badges.value


def test_colours_follow_labels_made_elsewhere_and_undo(demo):
    view = MapView(demo, grid=False)
    demo.label([3], "2", annotator="ada")
    assert view.source.data["color"][3] == view.palette[2] and view.source.data["label"][3] == "2"
    demo.undo("ada")
    assert view.source.data["color"][3] == "#bdbdbd"
    demo.set_propagated([4], ["1"], [0.7])
    assert view.source.data["color"][4] == view.palette[1] and view.source.data["alpha"][4] < 0.5


def test_downsampled_map_still_selects_every_point_in_the_region(demo):
    view = MapView(demo, max_points=300, grid=True)
    assert view.downsampled and len(view.source.data["x"]) == 300
    xy = view.xy
    box = {"type": "rect", "x0": np.percentile(xy[:, 0], 20), "x1": np.percentile(xy[:, 0], 80),
           "y0": np.percentile(xy[:, 1], 20), "y1": np.percentile(xy[:, 1], 80)}
    want = np.flatnonzero(geometry_mask(xy, box))

    class Event:  # a bokeh SelectionGeometry event as the browser sends it
        geometry = box

    view._on_geometry(Event())
    assert view.selected == sorted(want.tolist()) and len(want) > (np.isin(want, view.shown)).sum()
    # the same lasso also arrives as indices of the drawn subset: the full selection stays
    drawn = [int(r) for r in view._pos[want] if r >= 0]
    browser_selects(view, drawn)
    assert view.selected == sorted(want.tolist())


def test_select_and_highlight_from_python(demo):
    view = MapView(demo, grid=True)
    got = []
    view.on_select(got.append)
    view.select([9, 3])
    assert view.selected == [3, 9] and got == [[3, 9]] and sorted(view.source.selected.indices) == [3, 9]
    view.highlight([7])
    assert view.hl_source.data["x"] == [float(view.xy[7, 0])]
    with pytest.raises(ValueError, match="within"):
        view.highlight([len(demo)])
    with pytest.raises(ValueError, match="geometry"):
        view.select_region({"type": "circle"})


def test_grid_paging_scores_and_bad_input(demo):
    grid = ItemGrid(demo, range(30), scores=np.linspace(0, 1, 30), page_size=12)
    assert len(grid.cards_box.children) == 12 and "page 1/3" in grid.page_text.value
    grid.show_page(2)
    assert len(grid.cards_box.children) == 6 and grid._cells[0][1].item_id == 24
    assert "dcai-score" in grid._cells[0][1].badges.value
    grid.select_none()
    assert grid.label_button.disabled and grid.label_selected("1") == []
    with pytest.raises(ValueError, match="out of range"):
        grid.set_ids([0, len(demo)])
    with pytest.raises(ValueError, match="one score per id"):
        grid.set_ids([1, 2], scores=[0.5])
    grid.set_ids([1, 2])  # replaces, never stacks
    assert grid.ids == [1, 2] and grid.selected == [1, 2]
    assert demo.labeled().empty


def test_labels_propagated_to_every_item_update_map_and_grid_like_a_fresh_read(demo):
    """A model propagating to all N items: the map recolours from the event (no read of N rows), the
    grid reads only its page; both show what a view built fresh from the store shows."""
    view = MapView(demo, grid=True)
    demo.label([0, 5], ["3", "4"])
    rng = np.random.default_rng(0)
    labels = [str(c) for c in rng.integers(0, 10, len(demo))]
    demo.set_propagated(np.arange(len(demo)), labels, rng.uniform(0.2, 1.0, len(demo)))
    fresh = MapView(demo, grid=False)
    for key in ("color", "alpha", "label"):
        assert list(view.source.data[key]) == list(fresh.source.data[key])
    assert view.source.data["label"][0] == "3" and view.source.data["label"][1] == f"~{labels[1]}"
    grid = ItemGrid(demo, [5, 1, 2])
    badges = [cell[1].badges.value for cell in grid._cells[:3]]
    conf = demo.propagated(ids=[1, 2])["confidence"].tolist()
    assert 'dcai-human" title="labeled by a person">4</span>' in badges[0]
    assert all("dcai-human" not in b for b in badges[1:])
    assert f'confidence">~{labels[1]} {conf[0]:.2f}<' in badges[1]
    assert f'confidence">~{labels[2]} {conf[1]:.2f}<' in badges[2]


def test_class_colours_are_fixed_by_index_and_the_highlight_is_no_class_colour(demo):
    from dcai_widgets.widgets.style import SELECTION, STYLE_CSS, UNLABELED, class_colour

    assert class_palette(10) == class_palette(25)[:10] == class_palette(3) + class_palette(10)[3:]
    big = class_palette(60)
    assert len(set(big)) == 60 and UNLABELED not in big and SELECTION not in big
    view = MapView(demo, grid=True)
    classes = set(class_palette(len(demo.classes)))
    assert view._hl.glyph.line_color not in classes and view._hl.glyph.line_color == SELECTION
    assert view.renderer.selection_glyph.line_color not in classes
    sel_css = STYLE_CSS.split(".dcai-card.dcai-selected")[1].split("}")[0]
    assert not any(c in sel_css for c in classes), sel_css        # the grid's selection outline too
    demo.label([0], ["3"])
    before = view.source.data["color"][0]
    demo.set_propagated([0, 1, 2], ["1", "2", "3"], [0.9, 0.8, 0.7])   # a refit: human colours stay
    demo.set_propagated([1, 2], ["5", "6"], [0.9, 0.8])
    assert view.source.data["color"][0] == before == class_colour(3)
    assert view.source.data["color"][1] == class_colour(5)


def test_grid_needs_a_chosen_class_before_it_labels(demo):
    grid = ItemGrid(demo, [1, 2, 3], annotator="ada")
    assert grid.selected == [1, 2, 3] and not grid.class_pick.value and "choose" in grid.class_pick.label and grid.label_button.disabled
    grid.class_pick.value = "2"
    assert not grid.label_button.disabled
    grid.label_button.click()
    assert set(demo.labeled()["annotator"]) == {"ada"}
    with pytest.raises(ValueError, match="unknown class"):
        grid.set_default_class("nope")


def test_small_sets_get_a_tsne_map_that_keeps_neighbours(demo):
    """Digits (1,797): t-SNE, no UMAP JIT; it keeps at least as much of each item's 10-NN as UMAP."""
    from dcai_widgets.mapping import map_method, neighbour_preservation, project_2d

    assert [map_method(n) for n in (10, 16, 1797, 3000, 3001)] == ["pca", "tsne", "tsne", "tsne", "umap"]
    X = demo.embeddings
    m = demo.map
    assert m.shape == (len(demo), 2) and np.isfinite(m).all()
    assert neighbour_preservation(X, m) > 0.45            # UMAP on the same kNN: 0.49 (benchmarks/app_latency.py)
    tiny = project_2d(X[:40], metric="cosine")
    assert tiny.shape == (40, 2) and np.isfinite(tiny).all()
    with pytest.raises(ValueError, match="kNN graph"):
        project_2d(np.random.default_rng(0).normal(size=(3001, 4)))
