"""Which item the Label panel shows next, and the queue refit behind it (`ItemOrder`).

A mixin of `LabelPanel` (label_panel.py). The queue's candidates wait in `_pending`; when they run out
before a refit lands, a fixed random fallback order fills in (the queue is never called in the keystroke
path). The refit runs in a `widgets.threads.Background` worker; a refit asked for while one runs is merged
into one more run, so the latest labels are always fitted next. `widgets/team.py`'s TeamLabelPanel
overrides `_next_open` and uses `_upcoming`, `_lock` and `_pending`.
"""
from __future__ import annotations

import html
import time
from collections import deque

import numpy as np

from .counts import LABELED_MEANS
from .threads import Job


class ItemOrder:
    """Item order and background refit of the Label panel (mixed into `LabelPanel`)."""

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
        stored = int((np.asarray(self._vec) >= 0).sum()) if getattr(self, "_vec", None) is not None else None
        self.status.value = refit_status(fit, len(self.classes), self._refits, queue_name(self.queue), stored)
        self._refresh_annotators()
        self._refresh_suggestion()   # a first suggestion, or its confidence now as a percentage

    def _refit_failed(self, e: BaseException) -> None:  # keep labeling with the old order; say why
        self.status.value = f'<span style="color:#b00020">queue refit failed: {html.escape(str(e) or repr(e))}</span>'



def queue_name(queue: object) -> str:
    """What to call the Label queue on the page: the engine inside a DeferredQueue or a team's SharedQueue
    ("LANCET" for dcai_widgets' Lancet), else the queue's class name."""
    q = queue
    for _ in range(3):   # SharedQueue -> DeferredQueue -> engine
        inner = q.__dict__.get("_engine") if hasattr(q, "__dict__") else None
        inner = inner if inner is not None else (q.__dict__.get("queue") if hasattr(q, "__dict__") else None)
        if inner is None or inner is q:
            break
        q = inner
    name = type(q).__name__
    return {"Lancet": "LANCET", "DeferredQueue": "LANCET"}.get(name, name)


def refit_status(fit: dict, n_classes: int, fits: int, name: str = "queue", stored: int | None = None) -> str:
    """The status line after a queue fit, saying plainly what that fit used: its labels from people and the
    classes among them (read from the fit itself), the seconds it took, and its notes (escaped).
    ``data-labels`` / ``data-fits`` carry the figures for tests; ``stored``: human labels stored now (labels
    made during the fit are said to wait for the next one)."""
    n, k = int(fit["labels"]), fit.get("classes")
    name = html.escape(name)
    took = f"{fit['seconds']:.1f} s"
    if n == 0:
        text = f"{name} has no labels from people to learn from yet ({took})"
    else:
        cls = "" if k is None else f", {int(k)} of {n_classes} classes"
        # the labeled count's meaning (counts.LABELED_MEANS): human, review or import labels
        text = f"{name} fitted on {n:,} label{'s' if n != 1 else ''} from people{cls} ({took})"
        if stored is not None and stored > n:
            text += f" · {stored - n:,} newer label{'s' if stored - n != 1 else ''} wait for the next fit"
    notes = "".join(f" · <i>{html.escape(w)}</i>" for w in fit.get("notes", ()))
    return (f'<span class="dcai-refit" data-labels="{n}" data-fits="{int(fits)}" '
            f'title="the Label queue, refit in the background as you label (fit {int(fits)} on this page); '
            f'{LABELED_MEANS}">'
            f"{text}</span>{notes}")
