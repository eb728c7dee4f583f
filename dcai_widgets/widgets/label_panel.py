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
`calibration.SHOW_PERCENT_FROM` human labels ("uncertain" before). A label the store could not save
stays on screen with a red error line; a busy or unreachable store is retried in the background
("saving…") and nothing else is labeled meanwhile.
"""
from __future__ import annotations

import html
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import ipywidgets as W
import numpy as np

from ..calibration import show_confidence
from .counts import LABELED_MEANS, labeled_html
from .item_card import ItemCard, png_cache
from .keyboard import KeyboardShortcuts, KeyHelp
from .label_saving import SaveRetry, error_html, undone_text
from .style import style_widget
from .threads import Background, Job, on_main_thread

RESERVED = {"a": "accept", "x": "reject", "s": "skip", " ": "skip", "Backspace": "undo",
            "ArrowLeft": "prev", "ArrowRight": "next"}
_KEY_HELP = [("a", "accept the suggested class"), ("x", "reject the suggestion"), ("s", "skip"),
             (" ", "skip"), ("Backspace", "undo your latest label batch (any panel)"),
             ("ArrowLeft", "previous item"), ("ArrowRight", "next item")]
_LETTERS = [c for c in "bcdefghijklmnopqrtuvwyz"]


def class_keys(classes: Sequence[str]) -> list[str]:
    """One shortcut key per class: the names themselves if all are distinct single characters not
    reserved for commands (e.g. digits '0'-'9'), else '1'-'9' then letters (at most 32 classes)."""
    names = [str(c) for c in classes]
    if (all(len(c) == 1 for c in names) and len(set(names)) == len(names)
            and not any(c in RESERVED or c.upper() in RESERVED for c in names)):
        return names
    pool = [str(d) for d in range(1, 10)] + _LETTERS
    if len(names) > len(pool):
        return pool + [""] * (len(names) - len(pool))  # the rest get buttons only
    return pool[: len(names)]


def _validate_queue(queue: Any) -> None:
    for name in ("fit", "candidates"):
        if not callable(getattr(queue, name, None)):
            raise TypeError(f"queue must have fit() -> self and candidates(n=None) -> list[int]; "
                            f"{type(queue).__name__} has no callable {name}()")


class LabelPanel(W.VBox):
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

    # -- state helpers -------------------------------------------------------------------------
    def _load_mine(self) -> dict[int, str]:
        """Items this annotator currently labels (their own latest live human label), from the store."""
        store = getattr(self.session, "store", None)
        if store is None or not hasattr(store, "events"):
            return {}
        ev = store.events(("human", "review"))
        ev = ev[ev["annotator"] == self.annotator]
        return {int(i): str(lab) for i, lab in zip(ev["id"], ev["label"])}

    @property
    def current(self) -> int | None:
        """The item id shown now (None when everything is labeled)."""
        return self._history[self._pos] if 0 <= self._pos < len(self._history) else None

    def _todo(self, i: int) -> bool:
        """Still to label: unlabeled by anyone, or (with overlap=True) not yet by this annotator."""
        if i in self._excluded:
            return False
        return i not in self._mine if self.overlap else self._vec[i] < 0

    def _is_open(self, i: int) -> bool:
        return self._todo(i) and i not in self._skipped and i not in self._seen

    def _next_open(self, pop: bool) -> int | None:
        with self._lock:
            while self._pending:
                i = self._pending[0]
                if self._is_open(i):
                    if pop:
                        self._pending.popleft()
                    return i
                self._pending.popleft()
        if not pop:
            return None
        # the queue's list ran dry before its refit finished: ask for a refit, and meanwhile take
        # unlabeled items in a fixed random order (never call the queue in the keystroke path)
        if self._fallback is None:
            rng = np.random.default_rng(0)
            self._fallback = deque(int(i) for i in rng.permutation(len(self._vec)))
        self.refit()
        while self._fallback:
            i = self._fallback.popleft()
            if self._is_open(i):
                return i
        unlabeled = [int(i) for i in range(len(self._vec)) if self._todo(i)]
        rest = [i for i in unlabeled if i not in self._seen]
        rest = rest or [i for i in unlabeled if i in self._skipped]  # skipped items come back last
        if rest:
            self._skipped.discard(rest[0])
            return rest[0]
        return None

    def _upcoming(self, n: int) -> list[int]:
        with self._lock:
            out = []
            for i in self._pending:
                if len(out) >= n:
                    break
                if self._is_open(i):
                    out.append(i)
            return out

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
            self.suggestion.value = "<b>Nothing left to label.</b> Export with <code>session.export(path)</code>."
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

    def _set_suggestion(self, sug: tuple[str, float] | None) -> None:
        old = self._suggestion
        self._suggestion = sug
        if old is not None and (sug is None or old[0] != sug[0]):
            self.buttons[self.classes.index(old[0])].button_style = ""
        if sug is not None:
            self.buttons[self.classes.index(sug[0])].button_style = "warning"
            shown = show_confidence(sug[1], self._fit_labels or 0)
            why = ("calibrated probability that the suggestion is right" if shown != "uncertain" else
                   "fewer than 50 human labels: the model's confidence cannot be trusted yet")
            self.suggestion.value = (f'suggested: <b>{html.escape(sug[0])}</b> (<span class="dcai-sug-conf" '
                                     f'title="{why}">{shown}</span>) — <kbd>a</kbd> accept, <kbd>x</kbd> reject')
        else:
            self.suggestion.value = ""
        self.accept_button.disabled = sug is None
        self.reject_button.disabled = sug is None

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

    # -- background refit ----------------------------------------------------------------------
    def refit(self, wait: bool = False) -> None:
        """Refit the queue on the current labels in the background (at once with ``background=False``);
        asked while a refit runs, it runs once more afterwards on the labels stored by then."""
        self._since_refit = 0
        if not self._refitter.running:
            self.status.value = "refitting queue…"
        self._refitter.request()
        if wait:
            self._refitter.wait()

    def _refit_work(self, job: Job) -> dict:
        """The refit (worker thread): fit, new candidates, and what this fit used, read from the fit itself
        (the queue's ``n_labeled_`` and ``classes_seen_``; else the store just before fitting)."""
        before = int((np.asarray(self.session.label_vector()) >= 0).sum())
        t0 = time.perf_counter()
        self.queue.fit()
        job.check()
        cands = self.queue.candidates()
        with self._lock:
            self._pending = deque(cands)
        n = getattr(self.queue, "n_labeled_", None)
        seen = getattr(self.queue, "classes_seen_", None)
        return {"labels": int(n) if isinstance(n, (int, np.integer)) else before,
                "classes": None if seen is None else len(seen), "seconds": time.perf_counter() - t0,
                "notes": [str(w) for w in getattr(self.queue, "warnings_", None) or []]}

    def _refit_done_now(self, fit: dict) -> None:
        self._refits += 1
        self._fit_labels = fit["labels"]
        cls = "" if fit["classes"] is None else f" of {fit['classes']} of {len(self.classes)} classes"
        notes = "".join(f" · <i>{html.escape(w)}</i>" for w in fit["notes"])
        self.status.value = (f'<span class="dcai-refit" data-labels="{fit["labels"]}">queue refit #{self._refits} '
                             f"on {fit['labels']} labels{cls} in {fit['seconds']:.2f} s</span>{notes}")
        self._refresh_annotators()
        if self.current is not None and self._suggestion is not None:
            self._show_item()   # the suggestion's confidence may now be shown as a percentage

    def _refit_failed(self, e: BaseException) -> None:  # keep labeling with the old order; say why
        self.status.value = f'<span style="color:#b00020">queue refit failed: {html.escape(str(e) or repr(e))}</span>'

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
        if len(prog):
            self.status.value += " · per annotator: " + ", ".join(
                f"{html.escape(str(a))} {int(k)}" for a, k in zip(prog["annotator"], prog["items"]))

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
