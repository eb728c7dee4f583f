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
    if panel._refit_thread is not None:
        panel._refit_thread.join()
    panel.press("2")
    panel.press("3")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)   # a warning from the refit would fail it
        panel.refit(wait=True)
    assert "refit failed" not in panel.status.value
    assert "classes have no labels yet" in panel.status.value, panel.status.value
    assert panel.queue.warnings_ and not panel.queue.warn
