"""A keypress on a locked store says "saving…" at once, not after the store's whole lock wait."""
from __future__ import annotations

import sqlite3
import threading
import time

from dcai_widgets.queue import UncertaintyQueue
from dcai_widgets.widgets.label_panel import LabelPanel


def test_a_write_waiting_for_a_lock_shows_saving_while_it_waits(demo):
    """In the served team app a 12 s exclusive lock left the page unchanged for ~10 s after the keypress
    (the store's own lock wait runs on the kernel's main thread), then "saving…" flashed. The line now
    shows while the first write still waits; the item stays until the label is on disk."""
    panel = LabelPanel(demo, queue=UncertaintyQueue(demo, cold_start=5), annotator="ada", background=False)
    seen: list[str] = []
    panel.error.observe(lambda ch: seen.append(ch["new"]), names="value")
    i = panel.current
    path = str(demo.store.path)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        con = sqlite3.connect(path, timeout=30, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(10)
        con.execute("COMMIT")
        con.close()

    t = threading.Thread(target=hold)
    t.start()
    locked.wait(10)
    threading.Timer(2.0, release.set).start()   # the lock goes after 2 s, within the store's wait
    t0 = time.monotonic()
    panel.press(str(demo.y_true[i]))
    waited = time.monotonic() - t0
    t.join()
    assert waited >= 1.5, "the write did not wait for the lock (test set-up)"
    assert any("saving…" in v for v in seen), f"no 'saving…' while the write waited {waited:.1f} s: {seen}"
    assert panel.error.value == "" and panel.current != i        # saved: line cleared, next item shown
    cur = demo.labeled(ids=[i])
    assert cur["annotator"].tolist() == ["ada"]


def test_a_quick_write_shows_nothing(demo):
    panel = LabelPanel(demo, queue=UncertaintyQueue(demo, cold_start=5), annotator="ada", background=False)
    seen: list[str] = []
    panel.error.observe(lambda ch: seen.append(ch["new"]), names="value")
    for _ in range(3):
        panel.press(str(demo.y_true[panel.current]))
    time.sleep(panel._saver.slow_s + 0.3)   # a timer left running would fire now
    assert not any("saving" in v for v in seen), seen
