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
    if app.map_view is not None:  # until the SEALS ExplorePanel replaces it
        assert explore is app.map_view
        app.map_view.select([100, 101, 102])
        app.map_view.grid.label_selected("8")
        assert panel.progress.value == 3 and "8: 3" in panel.counts.value   # Label tab counters follow
        item = panel.current
        app.show_tab(0)
        panel.press("2")
        assert app.map_view.source.data["color"][item] == app.map_view.palette[2]  # map colours follow
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
