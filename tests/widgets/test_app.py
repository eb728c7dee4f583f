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


_FIRST_ITEM = r"""
import asyncio, json, os, sys
os.environ["DCAI_BOKEHJS"] = "page"       # as `dcai-widgets serve` sets it: the page's template has BokehJS
store = sys.argv[1]

async def main():   # in a running event loop, as in a kernel: the App defers what the page waits for
    import dcai_widgets as dw
    from dcai_widgets.widgets.app import App

    s = dw.Session.open("digits", store=store)
    app = App(s, annotator="t", prepare=False)
    heavy = ("torch", "sklearn", "umap", "faiss", "bokeh", "jupyter_bokeh", "scipy.sparse.csgraph",
             "dcai_widgets.lancet", "dcai_widgets.seals", "dcai_widgets.widgets.explore")
    print(json.dumps({"item": app.label_panel.current, "queue_built": app.label_panel.queue.built,
                      "lancet_view": app.lancet_view is not None,
                      "heavy": sorted(m for m in heavy if m in sys.modules)}))

asyncio.run(main())
"""


def test_the_first_item_needs_no_heavy_import(tmp_path):
    """Building the page's App (in an event loop, as in a served kernel) shows an item without importing
    torch, scikit-learn, UMAP, FAISS, bokeh or LANCET: those come after the first paint."""
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _FIRST_ITEM, str(tmp_path / "l.db")], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["item"] is not None and not out["queue_built"] and not out["lancet_view"]
    assert out["heavy"] == [], out["heavy"]


def test_deferred_queue_builds_its_engine_on_the_first_fit_after_the_start_signal():
    import threading

    from dcai_widgets.widgets.first_paint import DeferredQueue

    class Engine:
        def __init__(self):
            self.fits, self.n_labeled_ = 0, 7

        def fit(self):
            self.fits += 1
            return self

        def candidates(self, n=None):
            return [3, 1, 2][:n]

        def suggest(self, i):
            return ("x", 0.5)

    made = []
    start = threading.Event()
    q = DeferredQueue(lambda: made.append(Engine()) or made[-1], start=start)
    assert q.candidates() == [] and q.suggest(1) is None and not q.built and not made
    assert getattr(q, "n_labeled_", None) is None          # the panels' optional reads before a fit
    t = threading.Thread(target=q.fit)
    t.start()
    t.join(0.3)
    assert t.is_alive() and not made                       # waits for the start signal
    start.set()
    t.join(10)
    assert len(made) == 1 and made[0].fits == 1 and q.built
    assert q.candidates() == [3, 1, 2] and q.candidates(2) == [3, 1] and q.suggest(0) == ("x", 0.5)
    assert q.n_labeled_ == 7 and q.fit() is q and len(made) == 1 and made[0].fits == 2
    with pytest.raises(TypeError, match="factory"):
        DeferredQueue(None)


def test_paint_signal_runs_its_callbacks_once_on_the_page_message():
    import asyncio

    from dcai_widgets.widgets.first_paint import PaintSignal

    calls = []

    async def in_a_kernel():   # a running loop: the signal waits for the page
        sig = PaintSignal(timeout_s=60)
        sig.on_painted(lambda: calls.append("a"))
        assert not sig.painted.is_set() and calls == []
        sig._on_msg(sig, {"type": "other"}, [])
        assert calls == []
        sig._on_msg(sig, {"type": "painted"}, [])
        sig._on_msg(sig, {"type": "painted"}, [])
        sig.on_painted(lambda: calls.append("b"))            # after the paint: at once
        return sig

    sig = asyncio.run(in_a_kernel())
    assert sig.painted.is_set() and calls == ["a", "b"]
    assert PaintSignal().painted.is_set()                   # no event loop (a script): nothing to wait for


def test_lancet_and_its_view_arrive_after_the_first_item(demo):
    """The App's default queue is LANCET behind a DeferredQueue; its view replaces the placeholder."""
    from dcai_widgets.lancet import Lancet
    from dcai_widgets.widgets.lancet_view import LancetView

    app = App(demo, annotator="ada", prepare=False)
    assert app.label_panel.current is not None
    assert app._lancet_view.wait(120) and isinstance(app.lancet_view, LancetView)
    assert isinstance(app.lancet_view.lancet, Lancet) and app.lancet_view.lancet is app.label_panel.queue.engine()
    app.label_panel.press("3")
    app.label_panel.refit(wait=True)
    assert app.label_panel.queue.engine().n_labeled_ == 1   # the first fit ran, on the label given


def test_lancets_view_is_built_at_a_pause_in_typing(demo):
    """Building LANCET's view holds the kernel ~0.3 s: it waits until the Label tab has had no key for
    QUIET_S seconds, so it never lands between two keystrokes."""
    import asyncio
    import time

    from dcai_widgets.widgets.lancet_view import LancetView

    async def in_a_kernel():
        app = App(demo, annotator="ada", prepare=False)
        app.QUIET_S = 4.0                                 # long enough for a loaded box's sleep overshoot
        ran = []
        app.label_panel.press("4")
        first_key = app._last_key
        app._when_quiet(lambda: ran.append(time.monotonic()))
        await asyncio.sleep(0.3)
        assert ran == []                                  # 0.3 s after a key: still waiting
        app.label_panel.press("s")                        # another key postpones it
        second_key = app._last_key
        for _ in range(200):
            await asyncio.sleep(0.05)
            if ran:
                break
        app._lancet_go.set()
        for _ in range(1200):                             # and the real view arrives once typing stopped
            await asyncio.sleep(0.05)
            if app.lancet_view is not None:
                break
        return app, ran, first_key, second_key

    app, ran, first_key, second_key = asyncio.run(in_a_kernel())
    assert second_key > first_key and len(ran) == 1 and ran[0] - second_key >= app.QUIET_S
    assert isinstance(app.lancet_view, LancetView)


def test_a_tab_that_does_not_apply_says_why_in_words_not_an_exception_repr(demo):
    """docs/clean.png showed 'could not build this panel: ValueError("the Clean tab needs ...")' on digits."""
    app = App(demo, annotator="ada")
    titles = [app.tabs.get_title(i) for i in range(len(app.tabs.children))]
    if "Clean" not in titles:
        pytest.skip("no Clean tab in this build")
    tab = app.show_tab(titles.index("Clean"))
    assert "does not apply to this project" in tab.value and "'normal'" in tab.value.replace("&#x27;", "'")
    assert "ValueError" not in tab.value and "could not build" not in tab.value and "0, 1, 2" in tab.value
