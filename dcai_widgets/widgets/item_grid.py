"""ItemGrid: a paged grid of item cards with their labels, selectable, with a bar to label them in bulk."""
from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets

from ..calibration import SHOW_PERCENT_FROM, show_confidence
from ..lancet.engine import version_calibrated, version_precise
from .item_card import UNCALIBRATED, ItemCard
from .style import style_widget
from .threads import on_main_thread

NO_CLASS = "— choose a class —"
_VERSION = re.compile(r"^[A-Za-z_]+-(\d+)-")   # an engine's model version, "lancet-<human labels>-<k>"


def fitted_labels(model_version: Any) -> int | None:
    """Human labels the model that wrote a propagated label was fit on, from its version name
    (``lancet-<labels>-<k>``, as LANCET names its fits); None when the name does not say."""
    m = _VERSION.match(model_version) if isinstance(model_version, str) else None
    return int(m.group(1)) if m else None


def shown_confidence(confidence: Any, model_version: Any) -> str | None:
    """What a card prints for a propagated label's confidence: the calibrated number (two decimals) once
    the model was fit on ``SHOW_PERCENT_FROM`` human labels, else "uncertain" (as the Label tab says); a
    model whose version does not say how many labels it saw counts as fewer; ">0.99" for what would round
    to 1.00 (in the screenshot of the digits at 64 labels, 3 of the 470 items at >= 0.995 were wrong);
    "uncalibrated" (no number) for a model built without calibration (``Lancet(calibration=None)``: its
    stored figure is the raw head probability, not the chance the label is right); "uncertain" too for a
    model version ending in ``-imprecise`` (``calibration.MAX_ACCURACY_SE``). None: no confidence."""
    if confidence is None or confidence != confidence:
        return None
    if not version_calibrated(model_version):
        return UNCALIBRATED
    if not version_precise(model_version):   # the fit's calibration pairs leave its accuracy too loose
        return "uncertain"
    shown = show_confidence(float(confidence), fitted_labels(model_version) or 0)
    if shown == "uncertain":
        return "uncertain"
    return ">0.99" if shown.startswith(">") else f"{float(confidence):.2f}"   # never "1.00": not certainty


class ItemGrid(W.VBox):
    """Cards for `ids` (optionally with `scores`), each showing its human and propagated label.

    Click a card's toggle to (de)select it; the bar labels every selected item at once through
    `session.label` (one transaction), as `annotator`. `set_ids(ids, scores)` replaces the content (never
    stacks); `selected` (a traitlet list of ids) says what is selected; `label_selected(label)` labels from
    Python. The "label as" class starts empty (`default_class=None`): the label button stays disabled until
    a class is chosen, so "select all, label" never tags items with a class nobody picked. A legend line
    explains the badges (human label, ~propagated label + confidence, the score).
    """

    # item ids (Python ints, as the setters make them); no per-element trait: validating each element
    # of a 37k-item lasso took 0.18 s per assignment at 900k points
    selected = traitlets.List(default_value=[])

    def __init__(self, session: Any, ids: Iterable[int] = (), scores: Sequence[float] | None = None,
                 page_size: int = 24, card_size: int = 72, annotator: str | None = None,
                 preselect: bool = True, title: str = "", default_class: str | None = None,
                 score_name: tuple[str, str] | None = None) -> None:
        if not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be a positive int, got {page_size!r}")
        self.session = session
        self.page_size = page_size
        self.card_size = card_size
        self.annotator = annotator
        self.preselect = preselect
        self.classes = [str(c) for c in session.classes]
        self.ids: list[int] = []
        self.scores: list[float] | None = None
        self.score_name = score_name     # (short name on cards, what it means), e.g. ("cos", "cosine …")
        self.page = 0
        self._cells: list[tuple[W.VBox, ItemCard, W.ToggleButton]] = []
        self._syncing = False

        self.title = W.HTML(title)
        self.class_pick = W.Dropdown(options=[(NO_CLASS, "")] + [(c, c) for c in self.classes],
                                     value="", description="label as", layout=W.Layout(width="240px"))
        self.label_button = W.Button(description="label selected", button_style="primary")
        self.legend = W.HTML()
        self.all_button = W.Button(description="select all", layout=W.Layout(width="auto"))
        self.none_button = W.Button(description="select none", layout=W.Layout(width="auto"))
        self.prev_page = W.Button(description="◀", layout=W.Layout(width="36px"))
        self.next_page = W.Button(description="▶", layout=W.Layout(width="36px"))
        self.page_text = W.HTML()
        self.status = W.HTML()
        self.label_button.on_click(lambda _b: self.label_selected(self.class_pick.value))
        self.class_pick.observe(lambda _ch: self._refresh_bar(), names="value")
        self.all_button.on_click(lambda _b: self.select_all())
        self.none_button.on_click(lambda _b: self.select_none())
        self.prev_page.on_click(lambda _b: self.show_page(self.page - 1))
        self.next_page.on_click(lambda _b: self.show_page(self.page + 1))
        self.bar = W.HBox([self.class_pick, self.label_button, self.all_button, self.none_button,
                           self.prev_page, self.page_text, self.next_page],
                          layout=W.Layout(flex_flow="row wrap", align_items="center"))
        self.cards_box = W.GridBox([], layout=W.Layout(
            grid_template_columns=f"repeat(auto-fill, minmax({max(card_size, 96) + 12}px, 1fr))",
            grid_gap="4px"))
        super().__init__([style_widget(), self.title, self.bar, self.legend, self.status, self.cards_box])
        self.add_class("dcai-item-grid")
        self.observe(self._on_selected, names="selected")
        session.on("labels", on_main_thread(self._on_labels))
        self.set_default_class(default_class)
        self.set_ids(ids, scores, score_name=score_name)   # keeps the constructor's score_name

    # -- content -------------------------------------------------------------------------------
    def set_default_class(self, cls: str | None) -> None:
        """Preset "label as" to `cls` (e.g. the rare-concept target), or None: nothing chosen."""
        if cls is not None and str(cls) not in self.classes:
            raise ValueError(f"unknown class {cls!r}; classes are {self.classes}")
        # "" is the "choose a class" entry (a None value would show a blank box)
        self.class_pick.value = "" if cls is None else str(cls)

    def set_ids(self, ids: Iterable[int], scores: Sequence[float] | None = None,
                score_name: tuple[str, str] | None = None) -> None:
        """Replace the grid's items (and optional per-item scores, with `score_name` = (short name on the
        cards, what it means) for the legend); selects all when `preselect`."""
        ids = [int(i) for i in np.asarray(list(ids), dtype=np.int64).ravel()]
        n = len(self.session)
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"item ids {bad[:5]} are out of range; ids are 0..{n - 1}")
        if scores is not None:
            scores = [float(x) for x in np.asarray(scores, dtype=float).ravel()]
            if len(scores) != len(ids):
                raise ValueError(f"{len(ids)} ids but {len(scores)} scores; give one score per id")
        self.ids, self.scores = ids, scores
        if score_name is not None or scores is None:
            self.score_name = score_name
        self.status.value = ""
        self._refresh_legend()
        self.page = 0
        self.selected = list(ids) if self.preselect else []
        self.show_page(0)

    def _ensure_cells(self, k: int) -> None:
        while len(self._cells) < k:
            card = ItemCard(self.session, size=self.card_size)
            toggle = W.ToggleButton(description="select", layout=W.Layout(width="auto"))
            toggle.observe(lambda ch, c=card: self._on_toggle(c, ch["new"]), names="value")
            self._cells.append((W.VBox([card, toggle]), card, toggle))

    def show_page(self, page: int) -> None:
        """Show page `page` (clipped to the valid range) of the grid."""
        pages = max(1, -(-len(self.ids) // self.page_size))
        self.page = min(max(0, int(page)), pages - 1)
        chunk = self.ids[self.page * self.page_size:(self.page + 1) * self.page_size]
        self._ensure_cells(len(chunk))
        sel = set(self.selected)
        self._syncing = True
        try:
            for (box, card, toggle), i in zip(self._cells, chunk):
                card.show(i)
                toggle.value = i in sel
                self._style_cell(card, i in sel)
        finally:
            self._syncing = False
        self.cards_box.children = [c[0] for c in self._cells[: len(chunk)]]
        self.page_text.value = f"page {self.page + 1}/{pages} · {len(self.ids)} items"
        self._refresh_badges()
        self._refresh_bar()

    def _refresh_badges(self) -> None:
        chunk = self.ids[self.page * self.page_size:(self.page + 1) * self.page_size]
        if not chunk:
            return
        # this page's items only: a model may have propagated labels to all N (N rows to read at 1M)
        h = self.session.labeled(ids=chunk)
        known = set(self.classes)
        humans = {int(i): str(lab) for i, lab in zip(h["id"], h["label"]) if lab in known}
        p = self.session.propagated(ids=chunk)
        versions = p["model_version"] if "model_version" in p else [None] * len(p)
        prop = {int(i): (str(lab), shown_confidence(c, v))
                for i, lab, c, v in zip(p["id"], p["label"], p["confidence"], versions)}
        for k, ((_box, card, _t), i) in enumerate(zip(self._cells, chunk)):
            human = humans.get(int(i))
            # a propagated label is a guess for an item no person has labeled: once one has, the store's
            # latest propagated row for it is an older round's (later rounds skip labeled items), not shown
            pl, pc = prop.get(i, (None, None)) if human is None else (None, None)
            score = self.scores[self.page * self.page_size + k] if self.scores is not None else None
            card.set_badges(human=human, propagated=pl, confidence=pc, score=score,
                            score_name=self.score_name[0] if self.score_name and score is not None else None)

    def _refresh_legend(self) -> None:
        c = html.escape(self.classes[0]) if self.classes else "a"   # the project's own class, not a digit
        parts = [f'<span class="dcai-badge dcai-human">{c}</span> labeled by a person',
                 f'<span class="dcai-badge dcai-prop">~{c} 0.87</span> propagated by the model (not yet '
                 "checked by a person) with its calibrated confidence (the chance it is right; "
                 f'<span class="dcai-badge dcai-prop">~{c} uncertain</span> while the model has fewer than '
                 f"{SHOW_PERCENT_FROM} labels, or its held-out labels pin its accuracy only to worse than about "
                 "±10 points)"]
        if self.scores is not None and self.score_name:
            short, meaning = self.score_name
            parts.append(f'<span class="dcai-score">{html.escape(short)} 0.96</span> {html.escape(meaning)}')
        self.legend.value = '<div class="dcai-badge-legend">badges: ' + " · ".join(parts) + "</div>"

    def _refresh_bar(self) -> None:
        k = len(self.selected)
        self.label_button.description = f"label {k} selected"
        chosen = bool(self.class_pick.value)
        self.label_button.disabled = k == 0 or not chosen
        self.label_button.tooltip = ("" if chosen else "choose a class in 'label as' first")

    # -- selection -----------------------------------------------------------------------------
    def _style_cell(self, card: ItemCard, on: bool) -> None:
        (card.add_class if on else card.remove_class)("dcai-selected")
        for _box, c, toggle in self._cells:
            if c is card:
                desc = "✓ selected" if on else "select"
                if toggle.description != desc:
                    toggle.description = desc
                break

    def _on_toggle(self, card: ItemCard, value: bool) -> None:
        if self._syncing or card.item_id is None:
            return
        i = card.item_id
        sel = [j for j in self.selected if j != i]
        if value:
            sel.append(i)
        self.selected = sel
        self._style_cell(card, value)

    def _on_selected(self, _change: Any) -> None:
        self._refresh_bar()

    def select_all(self) -> None:
        """Select every item of the grid (all pages)."""
        self.selected = list(self.ids)
        self.show_page(self.page)

    def select_none(self) -> None:
        """Deselect everything."""
        self.selected = []
        self.show_page(self.page)

    def label_selected(self, label: str | int | None) -> list[int]:
        """Label every selected item as `label` in one committed write (as this grid's annotator);
        returns the ids labeled. `None` or "" (no class chosen) labels nothing and says so."""
        ids = list(self.selected)
        if not ids:
            self.status.value = "nothing selected"
            return []
        if label is None or (isinstance(label, str) and not label):
            self.status.value = '<span class="dcai-bulk-status-none">choose a class in “label as” first</span>'
            return []
        self.session.label(ids, [label] * len(ids), annotator=self.annotator)
        cls = self.classes[int(label)] if isinstance(label, (int, np.integer)) else str(label)
        self.status.value = (f'<span class="dcai-bulk-status" data-count="{len(ids)}">labeled '
                             f"{len(ids)} item(s) as <b>{html.escape(cls)}</b></span>")
        return ids

    def _on_labels(self, ids=None, **_: Any) -> None:
        chunk = set(self.ids[self.page * self.page_size:(self.page + 1) * self.page_size])
        if ids is None or chunk.intersection(int(i) for i in ids):
            self._refresh_badges()
