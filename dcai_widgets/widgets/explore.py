"""ExplorePanel: search by example on the map or the grid, label neighbours in bulk, hunt rare concepts (SEALS).

Click a point on the map (or type an item id, or a text query in a text session) to see its nearest
neighbours, sorted by the cosine similarity printed under each; each search replaces the grid. Select
several and label them in one action; "more like these" searches from the selected items. Rare-concept
mode fits SEALS (Coleman et al., "Similarity Search for Efficient Active Learning and Search of Rare
Concepts", AAAI 2022: most-likely-positive over the kNN candidate pool of the labeled set) and shows the
pool's most-likely positives, refit in the background as labels arrive, with live counters for pool size,
fraction of data scanned and positives found per label spent.

Every label is written with the panel's annotator and can be taken back (undo button, Backspace). The
"label as" class starts empty in neighbour mode and is the target in rare-concept mode, so a bulk label
never uses a class nobody chose. Keys (press ? for the list): class keys label the selection after a
confirmation, a selects all, Esc clears, / goes to the search box, m switches mode, Backspace undoes.
"""
from __future__ import annotations

import html
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as W
import numpy as np

from .counts import labeled_html
from .explore_keys import ExploreKeys
from .item_grid import ItemGrid
from .style import ICONS, style_widget
from .threads import Background, Job, on_main_thread

if TYPE_CHECKING:   # SEALS (and scikit-learn with it) is imported on first use: Explore opens without it
    from ..seals import Seals

__all__ = ["ExplorePanel"]

COSINE = ("cos", "cosine similarity to the query (1 = same direction); the grid is sorted by it")
PROBA = ("score", "SEALS's ranking score for the target (sorted by it); not calibrated, so not the chance "
                  "that the item is the target")
TFIDF = ("tf-idf", "TF-IDF cosine similarity to the typed text; sorted by it")


class ExplorePanel(W.VBox):
    """Similarity search and rare-concept hunting over one Session; every label goes through `session.label`.

    `k`: neighbours shown per search (adjustable in the panel). `pool_k`: neighbours per labeled item in
    the SEALS candidate pool. `annotator`: who the panel's labels are from (the App passes the page's).
    `map`: show the MapView (False keeps the panel light, e.g. in tests). `background`: refit SEALS in a
    `Background` worker whose results reach the widgets on the main thread (False refits in the calling
    thread: deterministic tests).
    """

    def __init__(self, session: Any, k: int = 12, pool_k: int = 100, annotator: str | None = None,
                 map: bool = True, background: bool = True, page_size: int = 24) -> None:
        n = len(session)
        if not isinstance(k, (int, np.integer)) or not 1 <= k < n:
            raise ValueError(f"k must be an int in 1..{n - 1} (neighbours shown per search), got {k!r}")
        self.session = session
        self.annotator = annotator
        self.background = bool(background)
        self.pool_k = int(min(pool_k, n - 1))
        self.classes = [str(c) for c in session.classes]
        self.mode = "neighbors"            # or "rare"
        self.query_ids: list[int] = []     # the items the current neighbour grid was searched from
        self._searched_text: tuple[str, int] | None = None   # (text, k) the grid shows the matches of
        self.seals: Seals | None = None    # fitted rare-concept engine
        self._searcher_: Seals | None = None   # similarity search helper (index + embeddings), on first search
        self._lock = threading.Lock()
        self._hunt = {"labels": 0, "found": 0}
        self.target_name: str | None = None
        self._refitter = Background(self._refit_work, on_done=self._refit_done, on_error=self._refit_failed,
                                    name="dcai-seals-refit", background=self.background)

        # -- controls --------------------------------------------------------------------------
        self.k_slider = W.IntSlider(value=int(k), min=1, max=int(min(200, n - 1)), description="k",
                                    continuous_update=False, layout=W.Layout(width="260px"))
        self.id_box = W.BoundedIntText(value=0, min=0, max=n - 1, description="item #",
                                       layout=W.Layout(width="170px"))
        self.find_button = W.Button(description=f"{ICONS['search']} neighbours", tooltip="neighbours of item #")
        self.more_button = W.Button(description=f"{ICONS['plus']} more like these",
                                    tooltip="neighbours of the selected items, merged")
        self.undo_button = W.Button(description=f"{ICONS['undo']} undo (⌫)",
                                    tooltip="take back your latest label batch", layout=W.Layout(width="auto"))
        self.text_box = W.Text(placeholder="describe what you look for…", description="text",
                               continuous_update=False, layout=W.Layout(width="360px"))
        self.text_button = W.Button(description=f"{ICONS['search']} search text")
        is_text = getattr(session.items, "kind", None) == "text"
        self.text_row = W.HBox([self.text_box, self.text_button],
                               layout=W.Layout(display=None if is_text else "none"))
        self.mode_toggle = W.ToggleButtons(options=[("neighbours", "neighbors"), ("rare concept", "rare")],
                                           value="neighbors")
        self.target_pick = W.Dropdown(options=[("— choose the target —", "")] + [(c, c) for c in self.classes],
                                      value="", description="target", layout=W.Layout(width="260px"))
        self.hunt_button = W.Button(description=f"{ICONS['target']} most-likely positives",
                                    button_style="warning", layout=W.Layout(width="auto"))
        self.rare_row = W.HBox([self.target_pick, self.hunt_button], layout=W.Layout(display="none"))
        self.counters = W.HTML()
        self.status = W.HTML()
        self.grid = ItemGrid(session, [], annotator=annotator, page_size=page_size, preselect=False,
                             title="<b>Neighbours</b> — click a point, or type an item id")

        self.find_button.on_click(lambda _b: self.search([int(self.id_box.value)]))
        self.more_button.on_click(lambda _b: self.more_like_these())
        self.undo_button.on_click(lambda _b: self.undo())
        self.text_button.on_click(lambda _b: self.search_text(self.text_box.value))
        self.text_box.observe(lambda ch: self.search_text(ch["new"]) if ch["new"].strip() else None, names="value")
        self.k_slider.observe(self._on_k, names="value")
        self.mode_toggle.observe(lambda ch: self.set_mode(ch["new"]), names="value")
        self.target_pick.observe(self._on_target, names="value")
        self.hunt_button.on_click(lambda _b: self.hunt(self.target_pick.value))

        self.map_view = None
        if map:
            from .map_view import MapView

            self.map_view = MapView(session, grid=False, annotator=annotator)
            self.map_view.on_select(self._on_map_select)
        self.shortcuts = ExploreKeys(self)
        search_row = W.HBox([self.id_box, self.find_button, self.k_slider, self.more_button, self.undo_button,
                             self.shortcuts.help.button],
                            layout=W.Layout(flex_flow="row wrap", align_items="center"))
        children = [style_widget(), self.mode_toggle, self.counters, search_row, self.text_row, self.rare_row,
                    self.status, self.shortcuts.help]
        if self.map_view is not None:
            children.append(self.map_view)
        children += [self.grid, self.shortcuts.keyboard]
        super().__init__(children)
        self.add_class("dcai-explore")
        self.add_class("dcai-keyboard-scope")   # clicking the panel gives it the keyboard
        session.on("labels", on_main_thread(self._on_labels))
        if hasattr(session, "excluded"):
            session.on("exclusions", on_main_thread(self._on_exclusions))
        self._refresh_counters()

    @property
    def _searcher(self) -> Seals:
        """SEALS as the similarity search helper, built on the first search (its module imports
        scikit-learn, ~1 s that the first view of the tab need not wait for)."""
        if self._searcher_ is None:
            from ..seals import Seals

            self._searcher_ = Seals(self.session, k=self.pool_k)
        return self._searcher_

    @property
    def keyboard(self):
        """The panel's keyboard listener (the App enables it only while Explore is the shown tab)."""
        return self.shortcuts.keyboard

    # -- neighbour search ------------------------------------------------------------------------
    def search(self, ids: Sequence[int], k: int | None = None) -> list[int]:
        """Show the k nearest neighbours of these items (merged, most similar first); replaces the grid."""
        ids = [int(i) for i in np.asarray(list(ids), dtype=np.int64).ravel()]
        k = int(self.k_slider.value if k is None else k)
        try:
            df = self._searcher.similar(ids=ids, k=k)
        except (ValueError, TypeError) as e:
            self._say(html.escape(str(e)), error=True)
            return []
        self.query_ids = ids
        return self._show(df["id"].tolist(), df["similarity"].tolist(),
                          f"<b>Neighbours</b> of {self._names(ids)}", COSINE)

    def search_vector(self, vector: np.ndarray, k: int | None = None) -> list[int]:
        """Show the k nearest neighbours of a query vector (same dimension as the embeddings)."""
        k = int(self.k_slider.value if k is None else k)
        try:
            df = self._searcher.similar(vectors=np.asarray(vector, dtype=np.float32), k=k)
        except (ValueError, TypeError) as e:
            self._say(html.escape(str(e)), error=True)
            return []
        self.query_ids = []
        return self._show(df["id"].tolist(), df["similarity"].tolist(), "<b>Neighbours</b> of the query", COSINE)

    def search_text(self, text: str, k: int | None = None) -> list[int]:
        """Text sessions: the items closest to a typed description (the session's encoder, else TF-IDF)."""
        if getattr(self.session.items, "kind", None) != "text":
            self._say("text search needs a text session; click a point or type an item id instead", error=True)
            return []
        text = (text or "").strip()
        if not text:
            self._say("type a few words to search for", error=True)
            return []
        k = int(self.k_slider.value if k is None else k)
        if (text, k) == self._searched_text and self.grid.ids:
            return list(self.grid.ids)   # the box's change and the button's click of one search: once
        # the query is embedded on this thread (the first one loads the text model: 10 s on the walk's
        # 2-core box, with nothing on the page meanwhile); the status line goes out at once
        self._say(f"searching for “{html.escape(text)}”…")
        found = self._search_text(text, k)
        self._searched_text = (text, k) if found else None
        return found

    def _search_text(self, text: str, k: int) -> list[int]:
        try:
            vec = self._encode_text(text)
        except (ValueError, TypeError, ImportError, OSError) as e:   # e.g. the model is not available offline
            self._say(f"could not embed the query: {html.escape(str(e))}", error=True)
            return []
        if vec is not None:
            return self.search_vector(vec, k)
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = list(self.session.items.texts)
        tf = TfidfVectorizer(sublinear_tf=True).fit(texts + [text])
        sims = (tf.transform(texts) @ tf.transform([text]).T).toarray().ravel()
        order = np.argsort(-sims, kind="stable")[:k]
        self.query_ids = []
        return self._show(order.tolist(), sims[order].tolist(),
                          f"<b>Items matching</b> “{html.escape(text)}”", TFIDF)

    def _encode_text(self, text: str) -> np.ndarray | None:
        """The query embedded like the items, when the encoder embeds one text on its own (not TF-IDF+SVD)."""
        from ..data.items import TextItems
        from ..embed.encoders import CallableEncoder, SentenceTransformerEncoder

        enc = getattr(self.session, "encoder", None)
        if isinstance(enc, (SentenceTransformerEncoder, CallableEncoder)):
            return np.asarray(enc.encode(TextItems([text])), dtype=np.float32)[0]
        return None

    def more_like_these(self, k: int | None = None) -> list[int]:
        """Expand from the selected items of the grid (or the map selection): their merged neighbours."""
        sel = list(self.grid.selected) or (list(self.map_view.selected) if self.map_view is not None else [])
        if not sel:
            self._say("select one or more items first (tick them in the grid or lasso them on the map)",
                      error=True)
            return []
        return self.search(sel, k)

    def _on_k(self, change: dict) -> None:
        if self.mode == "neighbors" and self.query_ids:
            self.search(self.query_ids)

    def _on_map_select(self, ids: list[int]) -> None:
        if len(ids) == 1:
            self.id_box.value = int(ids[0])
            self.search(ids)
        elif ids:   # a lasso: show the selection itself for bulk labeling
            self.query_ids = []
            self.grid.preselect = True
            try:
                self._show(list(ids), None, f"<b>Map selection</b> — {len(ids)} items", ring=False)
            finally:
                self.grid.preselect = False

    def _show(self, ids: list[int], scores: list[float] | None, title: str,
              score_name: tuple[str, str] | None = None, ring: bool = True) -> list[int]:
        """Fill the grid (sorted by score, highest first, when there are scores) and ring the items on
        the map (`ring=False` for a map selection: the map already marks it; rings on top hid the points)."""
        self._searched_text = None    # the grid shows something else now (a text search sets it after)
        if scores is not None and len(ids):
            order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
            ids = [int(ids[j]) for j in order]
            scores = [float(scores[j]) for j in order]
            title += f" — {html.escape(score_name[1]) if score_name else 'score'}"
        self.grid.title.value = title
        self.grid.set_ids(ids, scores, score_name)
        if self.map_view is not None:
            self.map_view.highlight(ids[:500] if ring else [])
        self._say("")
        return [int(i) for i in ids]

    def _names(self, ids: list[int]) -> str:
        shown = ", ".join(f"#{i}" for i in ids[:5])
        return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")

    # -- labeling --------------------------------------------------------------------------------
    def label_selected(self, label: str | int) -> list[int]:
        """Label every selected grid item as `label` in one committed write (same as the grid's bar)."""
        return self.grid.label_selected(label)

    def undo(self) -> int:
        """Take back this annotator's latest label batch (a bulk label is one batch); returns its size."""
        try:
            undone = self.session.undo(self.annotator)
        except (ValueError, RuntimeError) as e:
            self._say(f"could not undo: {html.escape(str(e))}", error=True)
            return 0
        if undone is None or len(undone) == 0:
            self._say("nothing of yours to undo")
            return 0
        self._say(f'<span class="dcai-undo-status" data-count="{len(undone)}">took back {len(undone)} '
                  "label(s)</span>")
        return len(undone)

    # -- rare-concept mode -----------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """'neighbors' (search by example) or 'rare' (SEALS most-likely positives for a target class).

        Switching clears the selection, the grid and their messages, and presets "label as": the target
        in rare-concept mode, nothing in neighbour mode."""
        if mode not in ("neighbors", "rare"):
            raise ValueError(f"mode must be 'neighbors' or 'rare', got {mode!r}")
        changed = mode != self.mode
        self.mode = mode
        if self.mode_toggle.value != mode:
            self.mode_toggle.value = mode
        self.rare_row.layout.display = None if mode == "rare" else "none"
        self.shortcuts.cancel()
        if changed:
            self.query_ids = []
            if self.map_view is not None:
                self.map_view.clear_selection()
                self.map_view.highlight([])
            self.grid.set_ids([])
            self.grid.title.value = ("<b>Most-likely positives</b>" if mode == "rare"
                                     else "<b>Neighbours</b> — click a point, or type an item id")
        self.grid.set_default_class(self.target_pick.value or None if mode == "rare" else None)
        if mode == "rare":
            self._say("pick the target class and press <b>most-likely positives</b>; label at least one "
                      "example of it first (find one by search)")
        elif changed:
            self._say("")

    def _on_target(self, change: dict) -> None:
        if self.mode == "rare":
            self.grid.set_default_class(change["new"] or None)

    def hunt(self, target: str | int | None = None) -> list[int]:
        """Fit SEALS for `target` (class name or index) and show the pool's most-likely positives."""
        target = self.target_pick.value if target is None else target
        if target is None or (isinstance(target, str) and not target):
            self._say("choose the target class first", error=True)
            return []
        from ..seals import Seals

        try:
            seals = Seals(self.session, k=self.pool_k, strategy="most_likely_positive", target=target,
                          batch=self.grid.page_size)
        except (ValueError, TypeError) as e:
            self._say(html.escape(str(e)), error=True)
            return []
        self.target_name = self.classes[seals.target_]
        if self.mode != "rare":
            self.set_mode("rare")
        if self.target_pick.value != self.target_name:
            self.target_pick.value = self.target_name
        self.grid.set_default_class(self.target_name)
        self.seals = seals
        self._hunt = {"labels": 0, "found": 0}
        return self._refit()

    def _refit_work(self, job: Job | None = None) -> tuple[Seals, list[int], list[float]] | None:
        """Fit the rare-concept engine and rank its candidates (no widget is touched: runs in a worker)."""
        seals = self.seals
        if seals is None:
            return None
        with self._lock:
            seals.fit()
            if job is not None:
                job.check()
            ids = seals.candidates()
            probs = seals.proba(ids).tolist() if ids else []
        return seals, ids, probs

    def _refit_done(self, result: tuple[Seals, list[int], list[float]] | None) -> list[int]:
        """Show a refit's candidates (main thread)."""
        if result is None:
            return []
        seals, ids, probs = result
        if self.mode == "rare" and seals is self.seals:
            self.query_ids = []
            n_ex = int((~seals.pool_.mask()[ids]).sum()) if ids else 0
            where = (f"from the candidate pool, {n_ex} from the exploration sample elsewhere" if n_ex
                     else "from the candidate pool")
            ids = self._show(ids, probs, f"<b>Most-likely {html.escape(self.target_name)}</b> {where}", PROBA)
        self._refresh_counters()
        return ids

    def _refit_failed(self, e: BaseException) -> None:
        """A refit's error (no seed yet, empty pool, one class only): say what to do (main thread)."""
        self._say(html.escape(str(e)) if isinstance(e, ValueError) else f"refit failed: {html.escape(repr(e))}",
                  error=True)
        self._refresh_counters()

    def _refit(self) -> list[int]:
        """Fit the rare-concept engine now and show its candidates; returns them ([] with a message)."""
        try:
            return self._refit_done(self._refit_work())
        except ValueError as e:
            self._refit_failed(e)
            return []

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a background refit (if any) has finished; for scripts and tests."""
        return self._refitter.wait(timeout)

    def _on_labels(self, ids=None, labels=None, source=None, **_: Any) -> None:
        if self.mode == "rare" and self.seals is not None and source in ("human", "review", "undo"):
            if source != "undo" and ids:
                self._hunt["labels"] += len(ids)
                self._hunt["found"] += sum(1 for lab in (labels or []) if str(lab) == self.target_name)
            self._refitter.request()
        self._refresh_counters()

    def _on_exclusions(self, **_: Any) -> None:
        """Items excluded (Clean, Inspect tabs) or brought back: the rare-concept hunt refits, so the
        grid shows no excluded candidate."""
        if self.mode == "rare" and self.seals is not None:
            self._refitter.request()

    # -- counters --------------------------------------------------------------------------------
    def _refresh_counters(self) -> None:
        v = np.asarray(self.session.label_vector())
        parts = [labeled_html(int((v >= 0).sum()), len(v))]
        s = self.seals
        if s is not None and hasattr(s, "rounds_"):
            last = s.rounds_[-1]
            extra = f" + {last['n_explore']:,} exploration" if last.get("n_explore") else ""
            parts.append(f"<span class='dcai-pool' data-pool='{last['pool_size']}' data-scored="
                         f"'{last['n_scored']}'>candidate pool {last['pool_size']:,}{extra}</span>")
            parts.append(f"<span data-scanned='{last['fraction_scored']:.6f}'>scanned "
                         f"{100 * last['fraction_scored']:.2f}% of the data</span>")
            found = int(last["positives_found"] or 0)
            spent = self._hunt["labels"]
            rate = f"{self._hunt['found'] / spent:.2f}" if spent else "–"
            parts.append(f"<span class='dcai-found' data-found='{found}' data-hunt-found='{self._hunt['found']}' "
                         f"data-hunt-labels='{spent}'>{found} {html.escape(self.target_name)} found · this hunt: "
                         f"{self._hunt['found']} in {spent} labels ({rate} per label)</span>")
        elif s is not None:
            parts.append("candidate pool: – (label one seed of the target)")
        self.counters.value = '<div class="dcai-counts">' + " · ".join(parts) + "</div>"

    def _say(self, message: str, error: bool = False) -> None:
        colour = "#b00" if error else "#444"
        self.status.value = (f'<span class="dcai-explore-status" style="color:{colour}">{message}</span>'
                             if message else "")
