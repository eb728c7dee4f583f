"""LabelPanel: label one item at a time from the keyboard; each label is on disk before the next item shows.

Keys: the class shortcuts shown on the buttons (the class names themselves when every class is a single
distinct character, as with digits; otherwise 1-9 then letters), `a`/`x` accept/reject the queue's
suggestion, space or `s` skip, Backspace undo (this annotator's latest batch, whichever panel wrote it),
ArrowLeft/ArrowRight previous/next, `?` the list of keys.
The queue (`fit() -> self`, `candidates(n=None) -> list[int]`, optional `suggest(id)`) is refit in the
background (`widgets.threads.Background`) every `refit_every` labels, so keystrokes never wait for it;
a refit asked for while one runs is merged into one more run, so the latest labels are always fitted
next. The status line reports what that fit used (its own label count and classes). A suggestion's
confidence is the queue's calibrated one, shown as a percentage only from
`calibration.SHOW_PERCENT_FROM` human labels ("uncertain" before) and only while the live audit of the
last suggestions shown to this annotator (`calibration.SuggestionAudit`: shown confidence vs the label the
person then gave; kept in the store by `label_audit.AuditKeeper`, so a reload resumes it) agrees with it;
otherwise "uncertain — recent suggestions right k/n". A label the store could not save
stays on screen with a red error line; a busy or unreachable store is retried in the background
("saving…") and nothing else is labeled meanwhile.

The panel's parts: `label_view.LabelView` (its widgets, the item and suggestion shown, the counters),
`label_order.ItemOrder` (which item comes next; the background refit), `label_keys` (the keys),
`label_saving` (saving with retries), `label_audit` (the audit kept in the store); this module holds the
state and the actions.
"""
from __future__ import annotations

import html
import threading
import time
from collections import deque
from typing import Any

import ipywidgets as W
import numpy as np

from ..calibration import SuggestionAudit
from .item_card import png_cache
from .label_audit import AuditKeeper
from .label_keys import RESERVED, class_keys
from .label_order import ItemOrder
from .label_saving import SaveRetry, error_html, undone_text
from .label_view import LabelView
from .threads import Background, Job, on_main_thread

__all__ = ["RESERVED", "LabelPanel", "class_keys"]


def _validate_queue(queue: Any) -> None:
    for name in ("fit", "candidates"):
        if not callable(getattr(queue, name, None)):
            raise TypeError(f"queue must have fit() -> self and candidates(n=None) -> list[int]; "
                            f"{type(queue).__name__} has no callable {name}()")



class LabelPanel(LabelView, ItemOrder, W.VBox):
    """One item at a time, one button per class, keyboard first; see the module docstring for keys.

    `session`: the shared Session. `queue`: ordering of items (default: UncertaintyQueue).
    `extras`: an optional widget shown on the right (e.g. LANCET's view). `annotator`: who labels
    (default: the session's annotator, else "expert"). Labels resume from the store: items already
    labeled are not asked again.
    `initial_fit="background"` shows items at once (a fixed random order) while the first fit runs;
    whenever the queue's list runs out before a refit lands, the same fallback order fills in.
    `overlap=True` also asks items other annotators labeled (for agreement), skipping only this
    annotator's own; by default each item is asked once across annotators.
    """

    claimed_writes = False   # True (team pages): labels are written with the store's claim check

    def __init__(self, session: Any, queue: Any = None, extras: W.Widget | None = None,
                 annotator: str | None = None, refit_every: int = 5, prefetch: int = 3,
                 card_size: int = 224, background: bool = True, initial_fit: str = "sync",
                 overlap: bool = False) -> None:
        if annotator is not None and (not isinstance(annotator, str) or not annotator.strip()):
            raise ValueError(f"annotator must be a non-empty string or None, got {annotator!r}")
        if initial_fit not in ("sync", "background"):
            raise ValueError(f"initial_fit must be 'sync' or 'background', got {initial_fit!r}")
        if not isinstance(refit_every, int) or refit_every < 1:
            raise ValueError(f"refit_every must be a positive int, got {refit_every!r}")
        if extras is not None and not isinstance(extras, W.Widget):
            raise TypeError(f"extras must be an ipywidgets widget, got {type(extras).__name__}")
        if queue is None:
            from ..queue import UncertaintyQueue

            queue = UncertaintyQueue(session)
        _validate_queue(queue)
        self.session = session
        self.queue = queue
        default = getattr(session, "annotator", None)
        self.annotator = (annotator.strip() if annotator
                          else default if isinstance(default, str) and default.strip() else "expert")
        self.refit_every = refit_every
        self.prefetch = int(prefetch)
        self.background = bool(background)
        self.overlap = bool(overlap)
        self.classes = [str(c) for c in session.classes]
        self.shortcuts = class_keys(self.classes)
        self._key_to_class = {k: c for k, c in zip(self.shortcuts, self.classes) if k}

        self._lock = threading.Lock()
        self._own_write = False
        self._history: list[int] = []
        self._seen: set[int] = set()
        self._pos = -1
        self._skipped: set[int] = set()
        self._rejected: set[int] = set()
        self._since_refit = 0
        self._refits = 0
        self._fit_labels: int | None = None   # human labels the queue's last fit used
        self._vec = np.asarray(session.label_vector(), dtype=np.int64).copy()
        # items kept out of training (e.g. anomalies excluded in the Clean tab) are never asked
        self._excluded = set(int(i) for i in session.excluded()) if hasattr(session, "excluded") else set()
        self._mine: dict[int, str] = self._load_mine()
        self._pending: deque[int] = deque()
        self._suggestion: tuple[str, float] | None = None
        # the live audit of shown confidences (calibration.SuggestionAudit): each suggestion shown and then
        # labeled is recorded, and kept in the store per annotator, so a reloaded page resumes it
        self._audit_keeper = AuditKeeper(session, self.annotator, background=self.background)
        self.audit = self._audit_keeper.load(SuggestionAudit())
        # (item, suggested class, confidence, human labels of the fit that suggested it)
        self._audit_pending: tuple[int, str, float, int | None] | None = None
        self._cache = png_cache(session)
        self._show_callbacks: list = []
        self.timings: list[float] = []  # seconds spent handling each label keystroke (commit + show)

        self._build(extras, card_size)
        # views are updated on the kernel's main thread, whichever thread labels or refits
        self._refitter = Background(self._refit_work, on_done=self._refit_done_now, on_error=self._refit_failed,
                                    name="dcai-queue-refit", background=self.background)
        self._saver = SaveRetry(self, background=self.background)
        self.session.on("labels", on_main_thread(self._on_labels))
        if hasattr(session, "excluded"):
            self.session.on("exclusions", on_main_thread(self._on_exclusions))
        self._fallback: deque[int] | None = None
        if initial_fit == "sync":
            self._refit_done_now(self._refit_work(Job()))
        else:  # show items at once (fallback order) while the queue fits in the background
            self.refit()
        self._refresh_counts()
        self._refresh_annotators()
        self._advance_new()

    def _advance_new(self) -> None:
        i = self._next_open(pop=True)
        if i is not None:
            self._history.append(i)
            self._seen.add(i)
            self._pos = len(self._history) - 1
        else:
            self._pos = len(self._history)
        self._show()
        for j in self._upcoming(self.prefetch):  # warm the PNG cache for the next items
            self._cache.get(j, self.card.size)

    def _forward(self) -> None:
        if self._pos < len(self._history) - 1:
            self._pos += 1
            self._show()
        else:
            self._advance_new()


    # -- actions -------------------------------------------------------------------------------
    def label_current(self, label: str | int) -> None:
        """Commit `label` for the shown item (persisted before returning), then show the next item."""
        i = self.current
        if i is None:
            return
        t0 = time.perf_counter()
        cls = self.classes[int(label)] if isinstance(label, (int, np.integer)) else str(label)
        if cls not in self.classes:
            raise ValueError(f"label {label!r} is not among the classes {self.classes}")
        if self._saver.busy:  # a label is still being retried: nothing else is labeled meanwhile
            self.error.value = error_html("still saving the previous label… wait for it to be saved", saving=True)
            return
        if not self._saver.save(i, cls):
            return       # not saved: the item stays on screen with the red line (or "saving…")
        self._saved(i, cls, t0)

    def _saved(self, i: int, cls: str, t0: float) -> None:
        """The label of item ``i`` is on disk: update the counters and show the next item."""
        self.error.value = ""
        pend, self._audit_pending = self._audit_pending, None
        if pend is not None and pend[0] == i:   # the person's label is the truth of the suggestion shown
            self.audit.record(pend[2], cls == pend[1], fit=pend[3])
            self._audit_keeper.save(self.audit)
        self._vec[i] = self.classes.index(cls)
        self._mine[i] = cls
        self._forward()
        self.timings.append(time.perf_counter() - t0)
        self._refresh_counts()
        self._since_refit += 1
        if self._since_refit >= self.refit_every:
            self.refit()

    def _write(self, i: int, cls: str) -> None:
        """Write one label (raises the store's error); used by ``SaveRetry``."""
        self._own_write = True
        try:
            # claimed= only when set: a session-like object may predate the keyword
            kw = {"claimed": True} if self.claimed_writes else {}
            self.session.label([i], [cls], annotator=self.annotator, **kw)
        finally:
            self._own_write = False

    def accept(self) -> None:
        """Label the shown item with the queue's suggestion (key `a`)."""
        if self._suggestion is not None:
            self.label_current(self._suggestion[0])

    def reject(self) -> None:
        """Dismiss the suggestion for the shown item (key `x`); pick the right class next."""
        i = self.current
        if i is not None and self._suggestion is not None:
            self._rejected.add(i)
            rejected = self._suggestion[0]
            self._set_suggestion(None)
            self.suggestion.value = f"rejected <b>{html.escape(rejected)}</b> — pick the right class"

    def skip(self) -> None:
        """Leave the shown item unlabeled for now and show the next one."""
        i = self.current
        if i is not None and self._todo(i):
            self._skipped.add(i)
        self._forward()

    def prev(self) -> None:
        """Show the previously seen item (to check or change its label)."""
        if self._pos > 0:
            self._pos -= 1
            self._show()

    def next(self) -> None:
        """Show the next seen item, or a new one at the end of the history (like skip)."""
        self.skip() if self._pos >= len(self._history) - 1 else self._forward()

    def undo(self) -> Any:
        """Retract this annotator's latest label batch, whichever panel wrote it (a bulk label from Explore,
        a spot check), and show its item again; returns the undone batch (DataFrame) or None."""
        self._own_write = True
        try:
            batch = self.session.undo(annotator=self.annotator)
        except Exception as e:  # the store refused: say so, nothing changed
            self.error.value = error_html(f"undo failed: {e}")
            return None
        finally:
            self._own_write = False
        if batch is None or len(batch) == 0:
            self.status.value = "nothing to undo"
            return None
        if not hasattr(batch, "iloc"):  # a single row (older Session.undo)
            import pandas as pd

            batch = pd.DataFrame([batch])
        row = batch.iloc[0]
        i = int(row["id"])
        self._vec = np.asarray(self.session.label_vector(), dtype=np.int64).copy()
        self._mine = self._load_mine()
        if i in self._history:
            self._pos = self._history.index(i)
        else:
            self._pos = max(self._pos, 0)
            self._history.insert(self._pos, i)
            self._seen.add(i)
        self._skipped.discard(i)
        self._show()
        self._refresh_counts()
        self.status.value = undone_text(batch)
        return batch

    def handle_key(self, key: str) -> None:
        """Dispatch one key (from the browser listener or `keyboard.press`)."""
        if key in self._key_to_class:
            self.label_current(self._key_to_class[key])
        elif key in RESERVED:
            getattr(self, RESERVED[key])()

    def press(self, key: str) -> None:
        """Simulate a keypress (as the browser would send it)."""
        self.keyboard.press(key)

    def _on_exclusions(self, ids=None, excluded: bool = True, **_: Any) -> None:
        """Items were excluded (the Clean or Inspect tab) or brought back: excluded items are not asked;
        the one on screen, if still to label, is passed over."""
        ids = {int(i) for i in ids or ()}
        self._excluded = self._excluded | ids if excluded else self._excluded - ids
        i = self.current
        if excluded and i is not None and i in ids and i not in self._mine and self._vec[i] < 0:
            self.skip()
            self.status.value = f"item #{i} was excluded from training; showing the next item"

    def _on_labels(self, ids=None, labels=None, source=None, **_: Any) -> None:
        """Labels written elsewhere (another tab, a bulk label, another annotator): resync counters."""
        if self._own_write or source in ("propagated",):
            return
        self._vec = np.asarray(self.session.label_vector(), dtype=np.int64).copy()
        self._mine = self._load_mine()
        self._refresh_counts()
        if self.current is not None and ids is not None and self.current in set(int(i) for i in ids):
            self._show()
