"""App: the Label | Explore | Inspect tabs over one Session, and `app_from_env` used by the served notebook."""
from __future__ import annotations

import html
import importlib
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import ipywidgets as W

from .label_panel import LabelPanel
from .style import style_widget
from .threads import Background, kernel_loop

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


def _has_panel(module: str) -> bool:
    """Whether `dcai_widgets.widgets.<module>` exists, without importing it (its imports, e.g.
    scikit-learn for Explore, would otherwise delay the first item)."""
    import importlib.util

    return importlib.util.find_spec(f"dcai_widgets.widgets.{module}") is not None


class App(W.VBox):
    """Label | Explore | Inspect tabs sharing one Session; panels stay in sync through Session events.

    Explore shows the SEALS `ExplorePanel` when it exists, else the MapView with its selection grid;
    Inspect appears only when the MetaStore `InspectPanel` exists. Explore and Inspect are built on
    first view (their modules are not even imported before), so the Label tab is ready at once; once the
    building cell has finished a `Background` job prepares Explore (the map, its imports, the hover
    thumbnails) so the first click finds it ready. The default Label queue, LANCET, and its view beside
    the panel come after that and after the page's first paint (`first_paint.py`): the first item is
    shown from a fixed random order without torch, scikit-learn, FAISS or bokeh. Each tab's keyboard shortcuts are active only while that tab is shown; "?" lists them.
    Every panel that labels gets the page's annotator. `guidelines`: markdown text (or a Path to a file;
    default: the file named by env DCAI_GUIDELINES) shown collapsible above the tabs, rendered safely.
    Above the tabs `DataNotes` says what opening the data did (images resized); `offer_import`: the
    session's `y_true` are the user's own labels (a CSV label column, class folders), not a demo's answer
    key: say so and let a lead or the single user import them.
    """

    def __init__(self, session: Any, annotator: str | None = None, queue: Any = None,
                 extras: W.Widget | None = None, role: str | None = None, team: bool | None = None,
                 overlap: float | int | None = None, guidelines: str | os.PathLike | None = None,
                 prepare: bool = True, offer_import: bool = False) -> None:
        from .data_notes import DataNotes
        from .first_paint import DeferredQueue, PaintSignal
        from .guidelines import guidelines_widget, load_guidelines

        if os.environ.get("DCAI_BOKEHJS") != "page":   # served: the page's template brings BokehJS
            from .map_view import load_bokehjs

            load_bokehjs()  # while the building cell executes, so lazily built map tabs can render
        self.session = session
        self.annotator = annotator
        self.role = role  # "annotator" | "lead" (a team link's role; the single user is "lead")
        # the first item is shown before anything the Label tab does not need (first_paint.py): LANCET
        # (its imports and first fit) and its bokeh view wait for the Explore preparation and the page's
        # first paint (or the Explore build, or the first label, or LANCET_DELAY_S)
        self.paint = PaintSignal()
        self._lancet_go = threading.Event()
        if kernel_loop() is None:   # a script or test: no page to wait for
            self._lancet_go.set()
        self._lancet_slot: W.Box | None = None
        # LANCET's first fit starts once its view is built (a view built during a fit read a half-fitted
        # engine: "Lancet is not fitted"), or at _lancet_go when it has no view here
        self._fit_go = threading.Event()
        if queue is None:  # LANCET is the default Label queue, with its view beside the panel
            if extras is None:   # spot checks carry the annotator; built once LANCET may start
                extras = self._lancet_slot = W.VBox([W.HTML('<i class="dcai-lancet-loading">LANCET starts after '
                                                            "the first item…</i>")])
            # the view shows the retrain progress, the Label panel the engine's notes
            queue = DeferredQueue(lambda: _lancet(session),
                                  start=self._fit_go if self._lancet_slot is not None else self._lancet_go,
                                  timeout_s=None if self._lancet_slot is not None else self.LANCET_DELAY_S)
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
        self._explore_tab = len(children)
        self._builders[len(children)] = self._build_explore if _has_panel("explore") else self._build_map
        children.append(W.HTML('<i class="dcai-building">building the map…</i>'))
        titles.append("Explore")
        if _has_panel("inspect"):
            # a team annotator's relabel is their own label; only a lead's (or the single user's) is a review
            self._builders[len(children)] = lambda: _optional_panel("inspect", "InspectPanel")(
                session, annotator=self.annotator or getattr(self.label_panel, "annotator", None),
                label_source=self._label_source)
            children.append(W.HTML("<i>loading…</i>"))
            titles.append("Inspect")
        if _has_panel("clean"):   # ELITE; needs the session's "normal" and "anomaly" classes (says so if not)
            self._builders[len(children)] = lambda: _optional_panel("clean", "CleanPanel")(
                session, annotator=self.label_panel.annotator)
            children.append(W.HTML("<i>loading…</i>"))
            titles.append("Clean")
        if _has_panel("train"):   # the final model on the chosen labels (dcai_widgets.train.Trainer)
            self._builders[len(children)] = lambda: _optional_panel("train", "TrainPanel")(session)
            children.append(W.HTML("<i>loading…</i>"))
            titles.append("Train")
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
        self._last_key = float("-inf")   # when the Label tab last got a key (deferred UI work waits for a pause)
        self.label_panel.keyboard.on_key(self._on_label_key)
        text = load_guidelines(guidelines)
        self.guidelines = guidelines_widget(text) if text and text.strip() else None
        # what opening the data did (images resized) and labels the data brought (import them, or not)
        self.data_notes = DataNotes(session, offer_import=offer_import, can_import=self._label_source == "review",
                                    annotator=self.annotator or getattr(self.label_panel, "annotator", None))
        top = [style_widget()] + ([self.guidelines] if self.guidelines is not None else []) + [self.data_notes]
        self.label_help = self._label_key_help()
        if self.label_help is not None:
            top += [self.label_help.button, self.label_help]
        # the labels as a file, from the page (a lead's or the single user's: a team annotator's page has none)
        self.export_bar = None
        if self._label_source == "review":
            from .export_bar import ExportBar

            self.export_bar = ExportBar(session)
        super().__init__(top + [self.tabs] + ([self.export_bar] if self.export_bar is not None else []) + [self.paint])
        self.add_class("dcai-app")
        self._build_lock = threading.Lock()
        self._explore_wanted = False   # the Explore tab was clicked before its preparation finished
        self._explore_clicked = threading.Event()   # set by the Explore click or the first label
        self._map_ready = threading.Event()
        # set when the cell that builds the App has finished (the kernel's loop runs its next callback):
        # from then on the kernel waits for the browser, which renders the page on the other core
        self._cell_done = threading.Event()
        loop = kernel_loop()
        if loop is None:
            self._cell_done.set()
        else:
            loop.call_soon(self._cell_done.set)
        session.on("labels", lambda **_: self._explore_clicked.set())   # thread-safe, touches no widget
        session.on("labels", lambda **_: self._lancet_go.set())
        # at normal priority: an Explore click right after the first item waits for the module locks this
        # job holds while importing, and a lowered thread on a busy box held them for seconds (10.4 s
        # first Explore at load ~36); it starts only once the page's cell has run, so it does not slow that
        self._prepare = Background(self._prepare_explore, on_done=self._explore_prepared,
                                   on_error=self._explore_prepared, name="dcai-prepare-explore", nice=0)
        self._lancet_view = Background(self._lancet_view_work, on_done=self._lancet_view_done,
                                       on_error=self._lancet_view_failed, name="dcai-lancet-view")
        if self._lancet_slot is not None:
            self._lancet_view.request()
        if prepare:
            self._prepare.request()

    def _label_key_help(self) -> Any:
        """The "?" overlay for the Label tab, unless the Label panel brings its own (keyboard.KeyHelp)."""
        from .keyboard import KeyHelp, find_key_help
        from .label_panel import RESERVED

        panel = self.label_panel
        kb = getattr(panel, "keyboard", None)
        if kb is None or find_key_help(panel) is not None:
            return None
        names = {"accept": "accept the suggestion", "reject": "reject the suggestion", "skip": "skip this item",
                 "undo": "undo your latest label (a bulk label too)", "prev": "previous item", "next": "next item"}
        rows = [(k, f"label as {c}") for k, c in zip(getattr(panel, "shortcuts", []), panel.classes) if k]
        rows += [(k, names.get(v, v)) for k, v in RESERVED.items()]
        return KeyHelp(rows, title="Label: keyboard shortcuts").attach(kb)

    # after the map, the preparation waits until the building cell has finished (or the first label or
    # the Explore click), at most this long, so that its imports and thumbnails, which hold the GIL much
    # of the time, do not compete with building the page
    PREPARE_DELAY_S = 10.0
    # LANCET's imports, first fit and view wait for the Explore preparation or build (or the first label)
    # at most this long
    LANCET_DELAY_S = 20.0

    def _prepare_explore(self, job: Any) -> None:
        """Background: what the Explore tab needs before its widgets (imports, the map, the index)."""
        xy = self.session.map   # at once: milliseconds from a warm cache; a cold one computes it here,
        self._map_ready.set()   # in compiled code that mostly leaves the GIL to the page's first render
        idle = self._cell_done
        t_end = time.monotonic() + self.PREPARE_DELAY_S
        while not (idle.is_set() or self._explore_clicked.is_set()) and time.monotonic() < t_end:
            idle.wait(0.05)
        job.check()
        if _has_panel("explore"):
            importlib.import_module("dcai_widgets.widgets.explore")
        job.check()
        from . import map_view
        from jupyter_bokeh import BokehModel  # noqa: F401  (imported here, not on the first click)

        job.check()
        self.session.index
        job.check()
        if self.session.items.kind == "image" and len(xy) <= 20_000:   # MapView's hover thumbnails
            map_view.thumbnail_urls(self.session, range(len(xy)))
        self.paint.painted.wait(self.LANCET_DELAY_S)
        self._lancet_go.set()   # LANCET's turn (or when Explore is built, or at the first label)

    def _lancet_view_work(self, job: Any) -> Any:
        """Background: wait for LANCET's turn, then import the view and build the engine (no widget)."""
        self._lancet_go.wait(self.LANCET_DELAY_S)
        from .lancet_view import LancetView

        job.check()
        return LancetView, self.label_panel.queue

    # main-thread work that is not a response (building LANCET's view: ~0.3 s of bokeh, more on a busy box)
    # waits until the Label tab has had no key for this long, so it never lands between two keystrokes
    QUIET_S = 1.5

    def _on_label_key(self, _key: str) -> None:
        self._last_key = time.monotonic()

    def _when_quiet(self, fn: Callable[[], Any]) -> None:
        """Run `fn()` on the main thread once no key has reached the Label tab for QUIET_S seconds."""
        wait = self._last_key + self.QUIET_S - time.monotonic()
        loop = kernel_loop()
        if wait <= 0 or loop is None:
            fn()
        else:
            loop.call_later(wait, self._when_quiet, fn)

    def _lancet_view_done(self, result: Any) -> None:
        """Main thread: put LANCET's view beside the Label panel (at a pause in typing)."""
        self._when_quiet(lambda: self._build_lancet_view(result))

    def _build_lancet_view(self, result: Any) -> None:
        from .first_paint import DeferredQueue

        view_cls, queue = result
        if not isinstance(queue, DeferredQueue):   # team mode: a SharedQueue around the DeferredQueue
            queue = getattr(queue, "queue", queue)
        try:
            engine = queue.engine() if isinstance(queue, DeferredQueue) else queue
            view = view_cls(self.session, engine, annotator=self.annotator or self.label_panel.annotator,
                            label_source=self._label_source)
        except Exception as e:  # shown in its place; LANCET still fits
            self._lancet_view_failed(e)
            return
        self._lancet_slot.children = [view]
        self._fit_go.set()   # now LANCET may fit: the view follows it through its events

    def _lancet_view_failed(self, e: BaseException) -> None:
        self._lancet_slot.children = [W.HTML(f'<span class="dcai-error">LANCET\'s view could not be built: '
                                             f"{html.escape(str(e) or repr(e))}</span>")]
        self._fit_go.set()

    @property
    def _label_source(self) -> str:
        """Source of a page's corrections (Inspect's relabel/confirm, LANCET's spot checks): a team
        annotator's are their own "human" labels; only a lead's (or the single user's) is a "review",
        which overrides colleagues' labels."""
        return "human" if self.team and self.role != "lead" else "review"

    @property
    def lancet_view(self) -> Any:
        """LANCET's view beside the Label panel once built (None before, or with another queue)."""
        kids = self._lancet_slot.children if self._lancet_slot is not None else ()
        return kids[0] if kids and not isinstance(kids[0], W.HTML) else None

    def _explore_prepared(self, _result: Any = None) -> None:
        """Main thread: build Explore now if it was clicked while being prepared (an error shows there)."""
        if self._explore_wanted and self.tabs.selected_index == self._explore_tab:
            self._build_tab(self._explore_tab)

    def _build_explore(self) -> W.Widget:
        from .explore import ExplorePanel

        return ExplorePanel(self.session, annotator=self.label_panel.annotator)

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
        """Select tab `index` (building its panel on first view, waiting for its preparation) and return
        the panel."""
        self.tabs.selected_index = index
        if index == self._explore_tab and index not in self._built:
            self._explore_clicked.set()
            self._prepare.wait()
            self._build_tab(index)
        return self.tabs.children[index]

    def _build_tab(self, idx: int) -> None:
        with self._build_lock:   # once, even if the preparation ends while show_tab builds it
            if idx in self._built or idx not in self._builders:
                return
            try:
                panel = self._builders[idx]()
            except ValueError as e:  # the tab does not apply to this project (e.g. Clean without its classes)
                panel = W.HTML(f'<div class="dcai-tab-unavailable" style="color:#555;padding:6px">This tab does not '
                               f"apply to this project: {html.escape(str(e))}.</div>")
            except Exception as e:  # show the reason in the tab instead of a blank page (never a traceback)
                panel = W.HTML(f'<div class="dcai-error" style="color:#b00020;padding:6px">This tab could not be '
                               f"built: {html.escape(str(e) or repr(e))}</div>")
            self._built[idx] = panel
        kids = list(self.tabs.children)
        kids[idx] = panel
        self.tabs.children = kids
        self._sync_keyboards(self.tabs.selected_index)
        if idx == self._explore_tab:   # once the browser has drawn it: LANCET's turn, and SEALS's import
            from .first_paint import PaintSignal

            drawn = PaintSignal(timeout_s=self.LANCET_DELAY_S)
            drawn.on_painted(self._explore_drawn)
            self.children = (*self.children, drawn)

    def _explore_drawn(self) -> None:
        """The Explore tab is on screen: start LANCET (if it waits) and import SEALS (scikit-learn) for
        Explore's first search, neither of them competing with drawing the map."""
        self._lancet_go.set()
        Background(lambda _job: importlib.import_module("dcai_widgets.seals"), name="dcai-import-seals",
                   background=kernel_loop() is not None).request()

    def _sync_keyboards(self, idx: int | None) -> None:
        """Only the shown tab's keyboard listener is on (the browser then gives it the keys)."""
        self.label_panel.keyboard.enabled = idx == 0
        for k, panel in self._built.items():
            kb = getattr(panel, "keyboard", None)
            if kb is not None and hasattr(kb, "enabled"):
                kb.enabled = idx == k

    def _on_tab(self, change: dict) -> None:
        idx = change["new"]
        self._sync_keyboards(idx)
        if idx == self._explore_tab and idx not in self._built:
            self._explore_wanted = True
            if self._prepare.running and not self._map_ready.wait(0.5):
                # the map is being computed: built when ready, without blocking the kernel meanwhile
                self._explore_clicked.set()
                self.tabs.children[idx].value = ('<i class="dcai-building">building the map… (the Label tab '
                                                 "stays usable meanwhile)</i>")
                return
            # the map is at hand (a warm cache: the preparation loads it first, in milliseconds): build now
            # on this thread at full priority, and stop the lowered-priority worker, whose imports would
            # otherwise hold the import locks this build waits on
            self._prepare.cancel()
            self._explore_clicked.set()
            self._build_tab(idx)
        elif idx in self._builders and idx not in self._built:
            self._build_tab(idx)
        elif self.team and idx in self._built and callable(getattr(self._built[idx], "refresh", None)):
            self._built[idx].refresh()  # Team/Review: other kernels' labels arrive through the store


def _lancet(session: Any) -> Any:
    """The default Label queue engine (LANCET), built when the App's DeferredQueue first fits."""
    from ..lancet import Lancet

    return Lancet(session, progress=False, warn=False)


def _annotator_from_query(query: str) -> str | None:
    """The page's `?annotator=NAME` (single-user mode only: in team mode the token decides)."""
    vals = parse_qs(query.lstrip("?")).get("annotator")
    return vals[0] if vals else None


def app_from_env(environ: Mapping[str, str] | None = None) -> App:
    """Build the App from the settings `dcai-widgets serve` passes in the environment.

    DCAI_DATA ("digits" or a path Session.open reads), DCAI_STORE (label store file or URL; default
    ./dcai-labels.db, or ~/dcai-labels.db where the working folder is read-only), DCAI_IMAGE_SIZE
    (`--image-size`: the one size a folder of images of several sizes is resized to).
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
    size = env.get("DCAI_IMAGE_SIZE")   # `serve --image-size`: a folder of mixed sizes resized to it
    session = Session.open(data, store=store, **({"image_size": int(size)} if size else {}))
    role = "lead"
    if team:
        who = identity_from_query(session.store, env.get("QUERY_STRING", ""))
        if who is None:
            session.store.close()
            raise PermissionError("this page needs your personal link; the link is missing, wrong or revoked")
        annotator, role = who
    # the user's file brought labels (the digits demo's are its answer key): offer to import them
    return App(session, annotator=annotator, role=role, offer_import=data != "digits")
