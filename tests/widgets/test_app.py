"""App: tabs, lazily built Explore, keyboard only on the Label tab, panels in sync through events."""
import pytest

from dcai_widgets.widgets.app import App, app_from_env


def test_tabs_and_cross_panel_sync(demo):
    app = App(demo, annotator="ada")
    titles = [app.tabs.get_title(i) for i in range(len(app.tabs.children))]
    assert titles[:2] == ["Label", "Explore"]
    panel = app.label_panel
    assert panel.keyboard.enabled
    explore = app.show_tab(1)
    assert not panel.keyboard.enabled
    view = app.map_view or getattr(explore, "map_view", None)   # MapView, alone or inside ExplorePanel
    grid = view.grid if app.map_view is not None else explore.grid
    view.select([100, 101, 102])
    assert view.selected == [100, 101, 102] and grid.ids[:3] == [100, 101, 102]
    grid.selected = [100, 101, 102]
    grid.label_selected("8")
    assert panel.progress.value == 3 and "8: 3" in panel.counts.value   # Label tab counters follow
    item = panel.current
    app.show_tab(0)
    panel.press("2")
    assert view.source.data["color"][item] == view.palette[2]             # map colours follow
    if app.map_view is not None:                                         # the shown item is ringed
        assert app.map_view.hl_source.data["x"] == [float(app.map_view.xy[panel.current, 0])]
    assert app.show_tab(0) is panel and panel.keyboard.enabled


def test_app_from_env_reads_cli_settings_and_the_url_query(tmp_path):
    env = {"DCAI_DATA": "digits", "DCAI_STORE": str(tmp_path / "l.db"), "DCAI_ANNOTATOR": "cli-name",
           "QUERY_STRING": "annotator=zoe&x=1"}
    app = app_from_env(env)
    assert app.label_panel.annotator == "zoe"
    app.label_panel.press("1")
    assert (tmp_path / "l.db").exists() and list(app.session.labeled()["annotator"]) == ["zoe"]
    env.pop("QUERY_STRING")
    assert app_from_env(env).label_panel.annotator == "cli-name"
    with pytest.raises(ValueError, match="annotator name"):
        app_from_env({**env, "QUERY_STRING": "annotator=%3Cscript%3E"})


def test_lancet_notes_go_to_the_label_panel_not_to_stderr(demo):
    """A background refit's notes (e.g. classes with no labels yet) are shown in the panel's status line;
    as Python warnings they would be printed on the served page as stderr."""
    import warnings

    app = App(demo, annotator="ada")
    panel = app.label_panel
    refitter = getattr(panel, "_refitter", None)        # the first fit runs in the background
    if refitter is not None:
        refitter.wait()
    elif getattr(panel, "_refit_thread", None) is not None:
        panel._refit_thread.join()
    panel.press("2")
    panel.press("3")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)   # a warning from the refit would fail it
        panel.refit(wait=True)
    assert "refit failed" not in panel.status.value
    assert "classes have no labels yet" in panel.status.value, panel.status.value
    assert panel.queue.warnings_ and not panel.queue.warn


def _widgets(root):
    """Every widget under `root` (children, tab pages)."""
    seen, todo = [], [root]
    while todo:
        w = todo.pop()
        seen.append(w)
        todo.extend(getattr(w, "children", ()) or ())
    return seen


def test_explore_labels_carry_the_page_annotator_and_counters_agree(demo):
    import ipywidgets as W

    from dcai_widgets.widgets.explore import ExplorePanel

    app = App(demo, annotator="kim")
    explore = app.show_tab(1)
    assert isinstance(explore, ExplorePanel) and explore.annotator == "kim" and explore.grid.annotator == "kim"
    assert explore.keyboard.enabled and not app.label_panel.keyboard.enabled   # only the shown tab's keys
    explore.map_view.select([5, 6, 7])
    explore.grid.class_pick.value = "9"
    explore.grid.label_button.click()
    assert set(demo.labeled()["annotator"]) == {"kim"}                     # not NULL
    app.show_tab(0)
    assert app.label_panel.keyboard.enabled and not explore.keyboard.enabled
    app.label_panel.press("1")
    n = app.label_panel.progress.value
    assert n == 4
    # one definition of "labeled" on every counter of the page
    assert f'data-labeled="{n}"' in explore.counters.value
    assert f'data-labeled="{n}"' in explore.map_view.legend.value
    assert "labeled by people" in explore.counters.value
    if hasattr(demo, "counts"):
        assert demo.counts().labeled == n                                   # the Session's definition
    from ipywidgets.embed import embed_data

    assert embed_data(views=[app])["manager_state"]["state"]      # every widget's state serialises (the page)
    # no Font Awesome icons (they come from a CDN and fail offline)
    buttons = [w for w in _widgets(app) if isinstance(w, W.Button)]
    assert buttons and all(not b.icon for b in buttons), [b.description for b in buttons if b.icon]


def test_guidelines_are_shown_escaped_and_collapsible(demo, tmp_path, monkeypatch):
    from dcai_widgets.widgets.guidelines import render_markdown

    md = ("# Digits\nLabel **what you see**, not what you *expect*.\n\n- a `7` with a bar is 7\n"
          "- <script>alert(1)</script> [x](javascript:alert(1)) [docs](https://example.org/a?b=1&c=2)")
    out = render_markdown(md)
    assert "<script>" not in out and "&lt;script&gt;" in out and 'href="javascript' not in out
    assert "<b>what you see</b>" in out and "<i>expect</i>" in out and "<code>7</code>" in out
    assert '<a href="https://example.org/a?b=1&amp;c=2"' in out and "<ul>" in out and "<h3>Digits</h3>" in out
    app = App(demo, guidelines=md, prepare=False)
    assert app.children[1] is app.guidelines and "<details" in app.guidelines.value
    path = tmp_path / "g.md"
    path.write_text("## From the file\nbe careful")
    monkeypatch.setenv("DCAI_GUIDELINES", str(path))
    assert "From the file" in App(demo, prepare=False).guidelines.value
    monkeypatch.setenv("DCAI_GUIDELINES", str(tmp_path / "missing.md"))
    with pytest.raises(ValueError, match="guidelines file"):
        App(demo, prepare=False)


def test_question_mark_lists_the_keys_of_the_label_tab(demo):
    app = App(demo, prepare=False)
    helper = app.label_help or __import__("dcai_widgets.widgets.keyboard", fromlist=["x"]).find_key_help(
        app.label_panel)
    assert helper is not None and not helper.visible
    app.label_panel.keyboard.press("?")
    assert helper.visible and "label as 7" in helper.table.value and "undo" in helper.table.value
    app.label_panel.keyboard.press("Escape")
    assert not helper.visible


def test_a_click_on_explore_while_it_is_prepared_does_not_block_the_kernel(demo):
    """The browser's click (selected_index) returns at once with a note; the panel appears when ready."""
    import threading

    import ipywidgets as W

    from dcai_widgets.widgets.explore import ExplorePanel

    app = App(demo, annotator="kim", prepare=False)
    gate = threading.Event()
    work = app._prepare.work
    app._prepare.work = lambda job: (gate.wait(60), work(job))[1]
    app._prepare.request()
    app.tabs.selected_index = 1                      # what a click in the page does
    page = app.tabs.children[1]
    assert isinstance(page, W.HTML) and "building the map" in page.value and app._prepare.running
    gate.set()
    assert app._prepare.wait(120)
    assert isinstance(app.tabs.children[1], ExplorePanel) and app.tabs.children[1].annotator == "kim"
