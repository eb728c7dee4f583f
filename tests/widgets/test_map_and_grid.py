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
    demo.set_propagated(np.arange(len(demo)), labels, rng.uniform(0.2, 1.0, len(demo)),
                        model_version="lancet-60-1")   # fit on 60 human labels: the grid shows the numbers
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


# -- large maps: density image + level-of-detail points, full points when zoomed, lasso over all ---------
def _naive_points_in_polygon(xy, px, py):
    """The plain even-odd rule over every point and every edge (the reference)."""
    x, y = xy[:, 0], xy[:, 1]
    inside = np.zeros(len(xy), dtype=bool)
    j = len(px) - 1
    for i in range(len(px)):
        with np.errstate(divide="ignore", invalid="ignore"):
            xcross = (px[j] - px[i]) * (y - py[i]) / (py[j] - py[i]) + px[i]
        inside ^= ((py[i] > y) != (py[j] > y)) & (x < xcross)
        j = i
    return inside


def test_fast_polygon_test_equals_the_plain_rule_on_hand_drawn_lassos():
    rng = np.random.default_rng(3)
    xy = rng.normal(size=(20_000, 2))
    for trial in range(20):   # star-shaped, self-crossing and axis-aligned polygons, 3-300 vertices
        m = int(rng.integers(3, 300))
        t = np.sort(rng.uniform(0, 2 * np.pi, m)) if trial % 3 else rng.uniform(0, 2 * np.pi, m)
        r = rng.uniform(0.2, 2.5, m)
        px, py = r * np.cos(t) + rng.normal(0, 0.3), r * np.sin(t)
        if trial == 5:
            px, py = np.round(px), np.round(py)       # repeated y values, horizontal edges
        assert np.array_equal(points_in_polygon(xy, px, py), _naive_points_in_polygon(xy, px, py)), trial
    assert not points_in_polygon(xy, np.array([0, 1.0]), np.array([0, 1.0])).any()


def test_a_large_map_sends_a_density_image_of_all_items_and_a_lod_sample(demo):
    from dcai_widgets.widgets.map_density import density_rgba

    view = MapView(demo, max_points=300, lod_points=100, grid=False)
    assert view.density and view.downsampled and len(view.source.data["x"]) == 100
    img = view.density_source.data["image"][0]
    assert img.shape == view._image_shape and view._image.visible
    # every item, drawn or not, lights its pixel; nothing else is lit
    x0, x1, y0, y1 = view.view_range
    h, w = img.shape
    ix = np.floor((view.xy[:, 0] - x0) * w / (x1 - x0)).astype(int)
    iy = np.floor((view.xy[:, 1] - y0) * h / (y1 - y0)).astype(int)
    alpha = img.view(np.uint8).reshape(h, w, 4)[..., 3]
    lit = np.zeros((h, w), bool)
    lit[iy, ix] = True
    assert (alpha[lit] > 0).all() and (alpha[~lit] == 0).all()
    assert "shading: all 1,797 in view" in view.figure.title.text
    # colours are the count-weighted mix of the items' class colours
    two = density_rgba(np.array([[0.1, 0.1], [0.2, 0.2], [0.9, 0.9]]), np.array([0, 1, 1]),
                       np.array([[255, 0, 0], [0, 0, 255.0]]), (0, 1), (0, 1), (1, 2))
    px = two.view(np.uint8).reshape(1, 2, 4)
    assert px[0, 0, :3].tolist() == [128, 0, 128] and px[0, 1, :3].tolist() == [0, 0, 255]
    assert px[0, 1, 3] < px[0, 0, 3]     # fewer items, fainter
    with pytest.raises(ValueError, match="x0 < x1"):
        density_rgba(view.xy, np.zeros(len(view.xy), int), np.zeros((1, 3)), (1, 0), (0, 1), (4, 4))


def test_zooming_in_draws_every_point_in_view_and_keeps_the_lod_points(demo):
    view = MapView(demo, max_points=300, lod_points=100, grid=False)
    overview = set(view.shown.tolist())
    xy = view.xy
    cx, cy = np.median(xy, axis=0)
    # a view holding more than max_points: a LOD sample of the items in it, keeping the overview's ones
    order = np.argsort(np.abs(xy[:, 0] - cx) + np.abs(xy[:, 1] - cy))
    r = np.abs(xy[order[600]] - [cx, cy]).max()
    view.show_range(cx - r, cx + r, cy - r, cy + r)
    inside = set(np.flatnonzero((np.abs(xy[:, 0] - cx) <= r) & (np.abs(xy[:, 1] - cy) <= r)).tolist())
    drawn = set(view.source.data["id"].tolist())
    assert len(inside) > 300 and len(drawn) == 100 and drawn <= inside
    assert overview & inside <= drawn
    assert view._image.visible and f"shading: all {len(inside):,} in view" in view.figure.title.text
    # a view holding at most max_points: all of them drawn, the shading hidden
    r2 = np.abs(xy[order[150]] - [cx, cy]).max()
    view.show_range(cx + r2, cx - r2, cy - r2, cy + r2)        # reversed bounds are sorted
    inside2 = np.flatnonzero((np.abs(xy[:, 0] - cx) <= r2) & (np.abs(xy[:, 1] - cy) <= r2))
    assert sorted(view.source.data["id"].tolist()) == inside2.tolist() and not view._image.visible
    assert f"all {len(inside2):,} in view drawn" in view.figure.title.text
    ids = view.source.data["id"]
    assert np.array_equal(view.source.data["x"], xy[ids, 0]) and (view._pos[ids] == np.arange(len(ids))).all()
    # back to the whole map (reset): the LOD sample again
    view.show_range(*view._home)
    assert set(view.source.data["id"].tolist()) == overview and view._image.visible


def test_the_lasso_selects_items_not_drawn_and_the_selection_survives_a_zoom(demo):
    view = MapView(demo, max_points=300, lod_points=100, grid=True)
    xy = view.xy
    cx, cy = np.median(xy, axis=0)
    sx, sy = xy.std(0)
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    poly = {"type": "poly", "x": (cx + sx * np.cos(t)).tolist(), "y": (cy + sy * np.sin(t)).tolist()}

    class Event:  # what the browser sends after a lasso
        geometry = poly

    view._on_geometry(Event())
    want = np.flatnonzero(points_in_polygon(xy, np.array(poly["x"]), np.array(poly["y"])))
    assert view.selected == want.tolist() and view.grid.ids == want.tolist()
    not_drawn = np.setdiff1d(want, view.shown)
    assert len(not_drawn) > 3 * len(np.intersect1d(want, view.shown))
    assert f'data-count="{len(want)}"' in view.info.value and "over all points" in view.info.value
    # zoom onto part of it: the selection is unchanged and marked on every drawn selected point
    view.show_range(cx - sx / 3, cx + sx / 3, cy - sy / 3, cy + sy / 3)
    assert view.selected == want.tolist()
    marked = set(view.shown[view.source.selected.indices].tolist())
    assert marked == set(view.shown.tolist()) & set(want.tolist()) and marked


def test_density_follows_labels(demo):
    view = MapView(demo, max_points=300, lod_points=100, grid=False)
    before = view.density_source.data["image"][0].copy()
    rng = np.random.default_rng(0)
    demo.set_propagated(np.arange(len(demo)), [str(c) for c in rng.integers(0, 10, len(demo))],
                        np.full(len(demo), 0.9))
    # up to 2,000 items: the drawn points change at once, the shading at the next pan or zoom
    assert view._density_stale and np.array_equal(view.density_source.data["image"][0], before)
    assert view.source.data["label"][0].startswith("~")
    view.show_range(*view._home)
    after = view.density_source.data["image"][0]
    assert not view._density_stale and not np.array_equal(before, after)
    fresh = MapView(demo, max_points=300, lod_points=100, grid=False)
    assert np.array_equal(fresh.density_source.data["image"][0], after)
    # more (or unknown) changes: shaded again at once
    demo.label(list(range(200)), "3", annotator="ada")
    view._on_labels(ids=None)
    fresh = MapView(demo, max_points=300, lod_points=100, grid=False)
    assert np.array_equal(view.density_source.data["image"][0], fresh.density_source.data["image"][0])
    assert not np.array_equal(view.density_source.data["image"][0], after)


def test_density_false_keeps_the_fixed_random_subset(demo):
    view = MapView(demo, max_points=300, density=False, grid=False)
    assert view.downsampled and not view.density and len(view.source.data["x"]) == 300
    shown = view.shown.copy()
    view.show_range(0, 1, 0, 1)    # no zoom handling in this mode
    assert np.array_equal(view.shown, shown) and "(showing 300)" in view.figure.title.text
    with pytest.raises(ValueError, match="lod_points"):
        MapView(demo, lod_points=0)


def test_a_card_shows_no_older_rounds_guess_for_an_item_a_person_labeled_since(demo):
    """Seen in the served app: '6 ~8 uncertain' on an Inspect card: the person's 6 beside the guess of a
    round fitted on 14 labels, before that person labeled it (later rounds skip labeled items, so that
    old row stays the item's latest propagated one)."""
    demo.set_propagated([1, 2], ["8", "8"], [0.3, 0.4], model_version="lancet-60-1")
    demo.label([1], ["6"], annotator="ada")
    grid = ItemGrid(demo, [1, 2])
    first, second = (cell[1].badges.value for cell in grid._cells[:2])
    assert ">6</span>" in first and "~8" not in first and "dcai-prop" not in first
    assert "~8 0.40" in second


def test_map_legend_counts_items_with_only_a_models_guess_apart_from_items_with_no_label(demo):
    """The legend said "unlabeled (1737)" in grey while no point was grey: all had propagated labels."""
    view = MapView(demo, grid=False)
    demo.label([0, 5], ["3", "4"])
    assert f"no label ({len(demo) - 2})" in view.legend.value
    rest = np.arange(10, len(demo))
    demo.set_propagated(rest, ["1"] * len(rest), [0.5] * len(rest), model_version="lancet-60-1")
    assert "no label (8)" in view.legend.value and f'data-count="{len(rest)}"' in view.legend.value


def test_points_outside_a_selection_keep_their_solid_or_faint_look(demo):
    """The legend says faint = propagated by the model; bokeh's default faded every point outside a
    selection to 0.3, so after a lasso of two, the walk's text map showed 43 people-labeled items faint
    beside "faint: propagated by the model (0)". Outside a selection a point keeps its own alpha."""
    view = MapView(demo, grid=True)
    demo.label([0], ["3"])
    view.source.selected.indices = [5]
    glyph = view.renderer.nonselection_glyph
    assert glyph.fill_alpha == "alpha"                            # the column, as unselected points use
    assert view.source.data["alpha"][view._pos[0]] == 0.95       # a person's label: solid
