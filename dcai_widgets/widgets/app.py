"""App: the Label | Explore | Inspect tabs over one Session, and `app_from_env` used by the served notebook."""
from __future__ import annotations

import html
import importlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import ipywidgets as W

from .label_panel import LabelPanel
from .style import style_widget

_NAME = re.compile(r"^[\w.@+-][\w .@+-]{0,63}$")


def _optional_panel(module: str, name: str) -> type | None:
    """The panel class `name` from `dcai_widgets.widgets.<module>` if that module exists yet, else None."""
    full = f"dcai_widgets.widgets.{module}"
    try:
        mod = importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name == full:
            return None
        raise
    return getattr(mod, name, None)


class App(W.VBox):
    """Label | Explore | Inspect tabs sharing one Session; panels stay in sync through Session events.

    Explore shows the SEALS `ExplorePanel` when it exists, else the MapView with its selection grid;
    Inspect appears only when the MetaStore `InspectPanel` exists. Explore and Inspect are built on
    first view, so the Label tab is ready at once. Keyboard shortcuts are active on the Label tab only.
    """

    def __init__(self, session: Any, annotator: str | None = None, queue: Any = None,
                 extras: W.Widget | None = None, role: str | None = None, team: bool | None = None,
                 overlap: float | int | None = None) -> None:
        from .map_view import load_bokehjs

        load_bokehjs()  # while the building cell executes, so lazily built map tabs can render
        self.session = session
        self.annotator = annotator
        self.role = role  # "annotator" | "lead" (a team link's role; the single user is "lead")
        if queue is None:  # LANCET is the default Label queue, with its view beside the panel
            from ..lancet import Lancet
            from .lancet_view import LancetView

            # the view shows the retrain progress, the Label panel the engine's notes
            queue = Lancet(session, progress=False, warn=False)
            if extras is None:
                extras = LancetView(session, queue)
        from .team import team_label_panel, team_mode

        self.team = team_mode(team)  # `team=True`, or env DCAI_TEAM=1 from `dcai-widgets serve`
        if self.team:  # every item shown is claimed in the store (dcai_widgets.team.SharedQueue)
            if role not in (None, "annotator", "lead"):
                raise ValueError(f"role must be 'annotator' or 'lead', got {role!r}")
            self.label_panel = team_label_panel(session, queue, annotator, extras, overlap)
        else:
            self.label_panel = LabelPanel(session, queue=queue, extras=extras, annotator=annotator,
                                          initial_fit="background")  # the page shows at once
        self.map_view = None
        self._builders: dict[int, Callable[[], W.Widget]] = {}
        self._built: dict[int, W.Widget] = {}
        children: list[W.Widget] = [self.label_panel]
        titles = ["Label"]
        explore_cls = _optional_panel("explore", "ExplorePanel")
        self._builders[len(children)] = (lambda: explore_cls(session)) if explore_cls else self._build_map
        children.append(W.HTML("<i>building the map…</i>"))
        titles.append("Explore")
        inspect_cls = _optional_panel("inspect", "InspectPanel")
        if inspect_cls is not None:
            self._builders[len(children)] = lambda: inspect_cls(   # review labels carry the page's annotator
                session, annotator=self.annotator or getattr(self.label_panel, "annotator", None))
            children.append(W.HTML("<i>loading…</i>"))
            titles.append("Inspect")
        self._review_tab = None
        if self.team:  # Team tab for everyone; Review only for a lead
            from .team import TeamPanel

            self._builders[len(children)] = lambda: TeamPanel(session)
            children.append(W.HTML("<i>loading…</i>"))
            titles.append("Team")
            if role == "lead":
                from .review import ReviewPanel

                self._review_tab = len(children)
                self._builders[len(children)] = lambda: ReviewPanel(session, annotator=self.label_panel.annotator)
                children.append(W.HTML("<i>loading…</i>"))
                titles.append("Review")
        self.tabs = W.Tab(children=children, titles=titles)
        self.tabs.observe(self._on_tab, names="selected_index")
        self.label_panel.on_show(self._on_item_shown)
        super().__init__([style_widget(), self.tabs])
        self.add_class("dcai-app")

    def _build_map(self) -> W.Widget:
        from .map_view import MapView

        self.map_view = MapView(self.session, annotator=self.annotator or self.label_panel.annotator)
        if self.label_panel.current is not None:
            self.map_view.highlight([self.label_panel.current])
        return self.map_view

    def _on_item_shown(self, item_id: int | None) -> None:
        if self.map_view is not None:
            self.map_view.highlight([] if item_id is None else [item_id])

    def show_tab(self, index: int) -> W.Widget:
        """Select tab `index` (building its panel on first view) and return the panel."""
        self.tabs.selected_index = index
        return self.tabs.children[index]

    def _on_tab(self, change: dict) -> None:
        idx = change["new"]
        self.label_panel.keyboard.enabled = idx == 0
        if idx in self._builders and idx not in self._built:
            try:
                panel = self._builders[idx]()
            except Exception as e:  # show the reason in the tab instead of a blank page
                panel = W.HTML(f"<pre>could not build this panel: {html.escape(repr(e))}</pre>")
            self._built[idx] = panel
            kids = list(self.tabs.children)
            kids[idx] = panel
            self.tabs.children = kids
        elif self.team and idx in self._built and callable(getattr(self._built[idx], "refresh", None)):
            self._built[idx].refresh()  # Team/Review: other kernels' labels arrive through the store
        if self._review_tab is not None and self._review_tab in self._built:
            self._built[self._review_tab].keyboard.enabled = idx == self._review_tab


def _annotator_from_query(query: str) -> str | None:
    """The page's `?annotator=NAME` (single-user mode only: in team mode the token decides)."""
    vals = parse_qs(query.lstrip("?")).get("annotator")
    return vals[0] if vals else None


def app_from_env(environ: Mapping[str, str] | None = None) -> App:
    """Build the App from the settings `dcai-widgets serve` passes in the environment.

    DCAI_DATA ("digits" or a path Session.open reads), DCAI_STORE (label store file or URL; default
    ./dcai-labels.db, or ~/dcai-labels.db where the working folder is read-only).
    Team mode (DCAI_TEAM=1): the page's `?token=` (Voila puts the query string in QUERY_STRING) is
    looked up in the store's annotator registry (sha256 of the token); it names the annotator and
    their role, and `?annotator=` is ignored. No valid token: PermissionError (the server's gate has
    already refused such a page; this is the second lock).
    Single-user mode: DCAI_ANNOTATOR, overridden by the page's `?annotator=NAME`; role "lead".
    """
    from ..serve.identity import identity_from_query
    from ..session import Session

    env = os.environ if environ is None else environ
    data = env.get("DCAI_DATA", "digits") or "digits"
    store = env.get("DCAI_STORE") or None
    team = env.get("DCAI_TEAM", "") not in ("", "0")
    if team and store is None:
        raise ValueError("team mode needs DCAI_STORE (the store that holds the annotator registry)")
    annotator = None if team else (_annotator_from_query(env.get("QUERY_STRING", ""))
                                   or env.get("DCAI_ANNOTATOR") or None)
    if annotator is not None and not _NAME.match(annotator):
        raise ValueError(f"annotator name {annotator!r} is not allowed; use up to 64 letters, digits, "
                         "spaces or . _ - @ +")
    if store is None:  # never a temporary store in the app: labels must outlive the kernel
        here = Path.cwd()
        store = (here if os.access(here, os.W_OK) else Path.home()) / "dcai-labels.db"
    if "://" not in str(store):
        store = str(Path(store).expanduser())
    session = Session.open(data, store=store)
    role = "lead"
    if team:
        who = identity_from_query(session.store, env.get("QUERY_STRING", ""))
        if who is None:
            session.store.close()
            raise PermissionError("this page needs your personal link; the link is missing, wrong or revoked")
        annotator, role = who
    return App(session, annotator=annotator, role=role)
