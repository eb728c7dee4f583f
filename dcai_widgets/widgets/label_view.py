"""What the Label panel shows: its widgets, the item with its suggestion, the counters (`LabelView`).

A mixin of `LabelPanel` (label_panel.py), which holds the state these methods read: the shown item
(`current`), the label vector `_vec`, this annotator's labels `_mine`, the queue and its last fit.
"""
from __future__ import annotations

import html

import ipywidgets as W
import numpy as np

from ..calibration import show_confidence
from .counts import LABELED_MEANS, labeled_html
from .item_card import UNCALIBRATED, UNCALIBRATED_WHY, ItemCard
from .keyboard import KeyboardShortcuts, KeyHelp
from .label_keys import _KEY_HELP, RESERVED
from .style import style_widget


class LabelView:
    """Layout, item display and counters of the Label panel (mixed into `LabelPanel`)."""

    # -- layout --------------------------------------------------------------------------------
    def _build(self, extras: W.Widget | None, card_size: int) -> None:
        self.card = ItemCard(self.session, size=card_size)
        self.suggestion = W.HTML()
        self.buttons: list[W.Button] = []
        for key, cls in zip(self.shortcuts, self.classes):
            b = W.Button(description=(cls if key == cls else f"{key} · {cls}") if key else cls, tooltip=f"label as {cls}",
                         layout=W.Layout(width="auto", min_width="64px"))
            b.on_click(lambda _b, c=cls: self.label_current(c))
            self.buttons.append(b)
        self.class_box = W.Box(self.buttons, layout=W.Layout(flex_flow="row wrap", max_width="720px"))
        self.skip_button = W.Button(description="▶▶ skip (space)")
        self.undo_button = W.Button(description="↶ undo (⌫)")
        self.prev_button = W.Button(description="← prev", layout=W.Layout(width="auto"))
        self.next_button = W.Button(description="next →", layout=W.Layout(width="auto"))
        self.accept_button = W.Button(description="a · accept", button_style="success", disabled=True)
        self.reject_button = W.Button(description="x · reject", button_style="danger", disabled=True)
        self.skip_button.on_click(lambda _b: self.skip())
        self.undo_button.on_click(lambda _b: self.undo())
        self.prev_button.on_click(lambda _b: self.prev())
        self.next_button.on_click(lambda _b: self.next())
        self.accept_button.on_click(lambda _b: self.accept())
        self.reject_button.on_click(lambda _b: self.reject())
        controls = W.HBox([self.accept_button, self.reject_button, self.skip_button, self.undo_button,
                           self.prev_button, self.next_button], layout=W.Layout(flex_flow="row wrap"))
        self.progress = W.IntProgress(min=0, max=len(self.session), description="labeled",
                                      layout=W.Layout(width="420px"))
        self.progress_text = W.HTML()
        self.counts = W.HTML()
        self.status = W.HTML()
        self.error = W.HTML()      # red line: a label the store could not save ("saving…" while retried)
        self.error.add_class("dcai-label-error")
        self.keyboard = KeyboardShortcuts(keys=[k for k in self.shortcuts if k] + list(RESERVED))
        self.keyboard.on_key(self.handle_key)
        self.help = KeyHelp([(k, f"label as {c}") for k, c in zip(self.shortcuts, self.classes) if k] + _KEY_HELP,
                            title="Label: keyboard shortcuts").attach(self.keyboard)
        left = W.VBox([self.card, self.suggestion, self.error, self.class_box, controls,
                       W.HBox([self.progress, self.progress_text]), self.counts, self.status,
                       W.HBox([self.keyboard, self.help.button]), self.help])
        main = [left] + ([extras] if extras is not None else [])
        self.extras = extras
        super().__init__([style_widget(), W.HTML(f"<b>Label</b> · annotator <code>"
                                                 f"{html.escape(self.annotator)}</code>"),
                          W.HBox(main, layout=W.Layout(grid_gap="16px"))])
        self.add_class("dcai-label-panel")
        self.add_class("dcai-keyboard-scope")  # clicking the panel gives it the keyboard


    # -- showing -------------------------------------------------------------------------------
    def on_show(self, callback) -> None:
        """Call `callback(item_id_or_None)` after each item is shown (e.g. to highlight it on the map)."""
        if not callable(callback):
            raise TypeError("on_show needs a callable taking an item id")
        self._show_callbacks.append(callback)

    def _show(self) -> None:
        self._show_item()
        for cb in list(self._show_callbacks):
            cb(self.current)

    def _show_item(self) -> None:
        i = self.current
        if i is None:
            self.card.shown_count += 1
            self.card.caption.value = (f'<span class="dcai-item-id" data-item="-1" '
                                       f'data-seq="{self.card.shown_count}">all items labeled</span>')
            self._set_suggestion(None)
            self.suggestion.value = ("<b>Nothing left to label.</b> Export the labels with the bar below the "
                                     "tabs (CSV, JSONL or Parquet; a lead's or a single user's page), or from "
                                     "Python with <code>session.export(path)</code>.")
            return
        mine = self._mine.get(i)
        lab = self.classes[self._vec[i]] if self._vec[i] >= 0 else None
        where = f"{self._pos + 1} of {len(self._history)} seen"
        self.card.show(i, note=where)
        self.card.set_badges(human=lab)
        sug = None
        if lab is None and i not in self._rejected and hasattr(self.queue, "suggest"):
            try:
                sug = self.queue.suggest(i)
            except Exception:  # a queue mid-refit may not predict yet; no suggestion then
                sug = None
        self._set_suggestion(sug)
        if mine is not None:
            self.suggestion.value = f"you labeled this <b>{html.escape(mine)}</b>; press a key to change it"

    def _refresh_suggestion(self) -> None:
        """Ask the queue again for the shown item's suggestion (after a fit), without showing the item
        anew: the item shown before the first fit gets its suggestion once the fit lands."""
        i = self.current
        if i is None or self._vec[i] >= 0 or i in self._rejected or not hasattr(self.queue, "suggest"):
            return
        try:
            sug = self.queue.suggest(i)
        except Exception:  # a queue mid-refit may not predict yet; no suggestion then
            sug = None
        self._set_suggestion(sug)

    def _set_suggestion(self, sug: tuple[str, float] | None) -> None:
        old = self._suggestion
        self._suggestion = sug
        if old is not None and (sug is None or old[0] != sug[0]):
            self.buttons[self.classes.index(old[0])].button_style = ""
        if sug is not None:
            self.buttons[self.classes.index(sug[0])].button_style = "warning"
            shown, why = self._audited(sug[1])
            if self.current is not None and np.isfinite(sug[1]) and 0.0 <= sug[1] <= 1.0:
                self._audit_pending = (int(self.current), sug[0], float(sug[1]), self._fit_labels)
            self.suggestion.value = (f'suggested: <b>{html.escape(sug[0])}</b> (<span class="dcai-sug-conf" '
                                     f'title="{why}">{shown}</span>) — <kbd>a</kbd> accept, <kbd>x</kbd> reject')
        else:
            self.suggestion.value = ""
        self.accept_button.disabled = sug is None
        self.reject_button.disabled = sug is None


    def _audited(self, conf: float) -> tuple[str, str]:
        """(what to print, its tooltip) for a suggestion's confidence: the percentage only from 50 human
        labels and while the audit of the recent shown suggestions agrees with it; else "uncertain" with
        the count of what happened (``calibration.SuggestionAudit``)."""
        if getattr(self.queue, "calibration", "") is None:   # built with calibration=None: a raw probability
            return UNCALIBRATED, UNCALIBRATED_WHY
        shown = show_confidence(conf, self._fit_labels or 0)
        if shown == "uncertain":
            return shown, "fewer than 50 human labels: the model's confidence cannot be trusted yet"
        audit = getattr(self, "audit", None)
        if audit is None:
            return shown, "calibrated probability that the suggestion is right"
        v = audit.verdict(fit=self._fit_labels)   # judged on records of recent fits (SuggestionAudit.recent)
        if v.open:
            return shown, (f"calibrated probability that the suggestion is right; the last {v.n} suggestions "
                           f"shown here: {v.mean_conf:.0%} on average, right {v.k}/{v.n}")
        if v.n < audit.min_n and audit.total_ > v.n:   # older fits' records no longer count
            return (f"uncertain — {v.n} of {audit.min_n} suggestions of the current model checked",
                    ("the model changed since the earlier suggestions were checked (they came from fits on "
                     "fewer than half of today's labels): a percentage returns once "
                     f"{audit.min_n} suggestions of recent fits have been checked against your labels"))
        if v.n < audit.min_n:
            return (f"uncertain — {v.n} of {audit.min_n} suggestions checked",
                    (f"a percentage is shown once {audit.min_n} suggestions shown to you have been checked "
                     "against your labels (kept across reloads)"))
        return (f"uncertain — recent suggestions right {v.k}/{v.n}",
                f"the confidence disagrees with what happened to the last {v.n} suggestions: "
                + html.escape(v.reason))

    # -- counters and events -------------------------------------------------------------------
    def _refresh_counts(self) -> None:
        v = self._vec
        n = int((v >= 0).sum())
        self.progress.value = n
        self.progress.tooltip = LABELED_MEANS
        self.progress_text.value = (f'<span class="dcai-progress" data-labeled="{n}">{labeled_html(n, len(v))}</span>'
                                    f' · <span title="items whose current label is yours">you: {len(self._mine)}</span>')
        bc = np.bincount(v[v >= 0], minlength=len(self.classes))
        self.counts.value = ('<div class="dcai-counts" title="per class: items labeled by people (human, review '
                             'or import label), by anyone">' + " · ".join(
                                 f"{html.escape(c)}: {int(k)}" for c, k in zip(self.classes, bc)) + "</div>")

    def _refresh_annotators(self) -> None:
        store = getattr(self.session, "store", None)
        if store is None or not hasattr(store, "progress"):
            return
        prog = store.progress()
        # written with the fit's status line, so it says when it was counted (the counter beside the
        # progress bar moves with every label); one annotator alone: that counter already says it
        if len(prog) > 1:
            self.status.value += " · items labeled per annotator at this fit: " + ", ".join(
                f"{html.escape(str(a))} {int(k)}" for a, k in zip(prog["annotator"], prog["items"]))

