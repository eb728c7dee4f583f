"""Saving a label from a panel without ever dropping it silently (issue 13/14: full disk, lock timeout,
read-only file, PostgreSQL down).

A write that fails for good (full disk, read-only store, a claim lost, a bad value) leaves the item on
screen with a red line naming the problem; nothing moves on. A write that fails for a passing reason
(the store stayed locked by another writer, the database server did not answer) is retried in the
background with growing pauses while the panel shows "saving…"; the panel labels nothing else until it
is saved or the retries are spent (then the red line says the label was NOT saved).
"""
from __future__ import annotations

import html
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from .threads import Background, Job

log = logging.getLogger(__name__)
TRANSIENT = (TimeoutError, ConnectionError)   # StoreBusyError, StoreUnavailableError subclass these


def transient(e: BaseException) -> bool:
    """True for store errors worth retrying: a lock held by another writer, a server not answering."""
    if isinstance(e, TRANSIENT):
        return True
    return isinstance(e, sqlite3.OperationalError) and any(w in str(e).lower() for w in ("locked", "busy"))


def error_html(text: str, saving: bool = False) -> str:
    """The panel's error line: red for a label not saved, grey "saving…" while a write is retried."""
    colour, cls = ("#8a6d00", "dcai-saving") if saving else ("#b00020", "dcai-error")
    return f'<div class="{cls}" style="color:{colour};font-weight:600">{html.escape(text)}</div>'


def undone_text(batch: pd.DataFrame) -> str:
    """Status line for an undone batch: one label, or a batch (a bulk label from Explore, say) with its items."""
    n = len(batch)
    src = ", ".join(sorted({str(x) for x in batch["source"]})) if "source" in batch else "human"
    if n == 1:
        r = batch.iloc[0]
        return (f'<span class="dcai-undone" data-items="{int(r["id"])}">undid {html.escape(src)} label '
                f'<b>{html.escape(str(r["label"]))}</b> of item #{int(r["id"])}</span>')
    ids = [int(i) for i in batch["id"]]
    labels = batch["label"].astype(str).value_counts()
    what = ", ".join(f"{html.escape(k)} ×{int(v)}" for k, v in labels.items())
    shown = ", ".join(f"#{i}" for i in ids[:8]) + (f" … (+{n - 8} more)" if n > 8 else "")
    return (f'<span class="dcai-undone" data-items="{",".join(map(str, ids))}">undid a batch of {n} '
            f"{html.escape(src)} labels ({what}): items {shown}</span>")


class SlowNotice:
    """Runs ``show()`` if an operation on the kernel's main thread is still going after ``slow_s``.

    One watcher thread per owner (a panel), waiting on a deadline, instead of a ``threading.Timer``
    (a new thread) per keypress: 200 quick labels started 200 threads. The watcher must be a thread, not
    the kernel loop's ``call_later``: the write it watches blocks that loop (a store's lock wait runs on
    the main thread), so ``show`` touches the widget from the watcher, as the timer did. ``arm(show)``
    returns ``finish()``; a lock orders ``show`` before whatever the caller writes after ``finish()``,
    so a finished operation never leaves its notice behind."""

    def __init__(self, slow_s: float) -> None:
        self.slow_s = float(slow_s)
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._show: Callable[[], None] | None = None
        self._armed = 0            # bumps per arm(): a finish() of an older operation changes nothing
        self._shown = False
        self._thread: threading.Thread | None = None

    def arm(self, show: Callable[[], None]) -> Callable[[], bool]:
        with self._cond:
            self._armed += 1
            token = self._armed
            self._deadline, self._show, self._shown = time.monotonic() + self.slow_s, show, False
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="dcai-slow-notice", daemon=True)
                self._thread.start()
            self._cond.notify()

        def finish() -> bool:
            with self._cond:
                if token != self._armed:
                    return False
                self._deadline = self._show = None
                return self._shown

        return finish

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                show, self._deadline, self._shown = self._show, None, True
                try:
                    if show is not None:
                        show()
                except Exception:   # a failing notice must not end the watcher
                    log.exception("slow-operation notice failed")


class SaveRetry:
    """Writes one label for a panel (``panel._write(i, cls)``); see the module docstring.

    On success the caller continues; on a passing failure the retry runs in ``Background`` and calls
    ``panel._saved(i, cls, t0)`` on the main thread once the label is on disk."""

    # the first write waits for another writer's lock inside the store (up to its timeout, 10 s for
    # SQLite) on the kernel's main thread, so no widget could change meanwhile: a keypress did nothing
    # for up to 10 s. After this long a timer thread shows "saving…" while that write still waits.
    slow_s = 0.5

    def __init__(self, panel: Any, retries: int = 4, delay: float = 0.5, background: bool = True) -> None:
        self.panel, self.retries, self.delay = panel, int(retries), float(delay)
        self.pending: tuple[int, str, float] | None = None
        self._notice: SlowNotice | None = None   # its watcher thread starts with the first save
        self._bg = Background(self._retry, on_done=self._done, on_error=self._failed, name="dcai-label-save",
                              background=background)

    @property
    def busy(self) -> bool:
        return self.pending is not None

    def save(self, i: int, cls: str) -> bool:
        """Write now; True when on disk. False: not saved (red line) or being retried ("saving…")."""
        t0 = time.perf_counter()
        finish = self._notice_if_slow(i, cls)
        try:
            self.panel._write(i, cls)
            if finish():
                self.panel.error.value = ""
            return True
        except Exception as e:
            finish()
            if not transient(e):
                self.panel.error.value = error_html(f"label {cls!r} for item #{i} was NOT saved: {e}")
                return False
            self.pending = (i, cls, t0)
            self.panel.error.value = error_html(f"saving… label {cls!r} for item #{i}: the store is busy "
                                                f"({e}); retrying", saving=True)
            self._bg.request()
            return False

    def _notice_if_slow(self, i: int, cls: str) -> Callable[[], bool]:
        """Arm the panel's one ``SlowNotice`` to show "saving…" if the write is still waiting after
        ``slow_s``; returns ``finish()`` (disarm it; True when the notice was shown)."""
        if self._notice is None:
            self._notice = SlowNotice(self.slow_s)

        def show() -> None:
            self.panel.error.value = error_html(f"saving… label {cls!r} for item #{i}: waiting for the "
                                                "store (another writer holds it)", saving=True)

        return self._notice.arm(show)

    def _retry(self, job: Job) -> tuple[int, str, float]:
        i, cls, t0 = self.pending
        last: BaseException | None = None
        for k in range(self.retries):
            time.sleep(self.delay * 2 ** k)
            job.check()
            try:
                self.panel._write(i, cls)
                return i, cls, t0
            except Exception as e:
                if not transient(e):
                    raise
                last = e
        raise last if last is not None else RuntimeError("not saved")

    def _done(self, res: tuple[int, str, float]) -> None:
        self.pending = None
        i, cls, t0 = res
        if self.panel.current == i:
            self.panel._saved(i, cls, t0)
        else:  # the annotator moved on meanwhile: record it without changing the item shown
            self.panel.error.value = ""
            self.panel._vec[i] = self.panel.classes.index(cls)
            self.panel._mine[i] = cls
            self.panel._refresh_counts()
        self.panel.status.value = f"saved label <b>{html.escape(cls)}</b> of item #{i} after retrying"

    def _failed(self, e: BaseException) -> None:
        i, cls, _ = self.pending or (-1, "?", 0.0)
        self.pending = None
        self.panel.error.value = error_html(f"label {cls!r} for item #{i} was NOT saved: {e}. Press the key "
                                            "again once the store is back")
