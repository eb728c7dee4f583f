"""SaveRetry's "saving…" notice: shown only when a write takes longer than ``slow_s``, by one watcher
thread per panel (a ``threading.Timer`` per keypress started 200 threads for 200 labels)."""
from __future__ import annotations

import threading
import time

import ipywidgets as W

from dcai_widgets.widgets.label_saving import SaveRetry, SlowNotice


class Panel:
    """What SaveRetry needs of a panel: ``_write`` and the ``error`` line."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.written = delay, []
        self.error = W.HTML()
        self.seen: list[str] = []
        self.error.observe(lambda ch: self.seen.append(ch["new"]), names="value")

    def _write(self, i: int, cls: str) -> None:
        time.sleep(self.delay)
        self.written.append((i, cls))


def test_200_keypresses_start_one_watcher_thread_not_200(monkeypatch):
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(self):
        started.append(self.name)
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    panel = Panel()
    saver = SaveRetry(panel, background=False)
    for k in range(200):
        assert saver.save(k, "a")
    assert len(panel.written) == 200
    assert len(started) <= 1, f"{len(started)} threads started for 200 labels: {started[:5]}"
    time.sleep(saver.slow_s + 0.3)       # an armed notice left behind would fire now
    assert not any("saving" in v for v in panel.seen), panel.seen


def test_the_notice_shows_only_while_a_slow_write_waits_and_is_cleared_after():
    panel = Panel(delay=0.9)
    saver = SaveRetry(panel, background=False)
    assert saver.save(1, "a")
    assert any("saving…" in v and "#1" in v for v in panel.seen), panel.seen
    assert panel.error.value == ""                        # saved: the notice is gone
    panel.seen.clear()
    panel.delay = 0.0
    for k in range(5):                                     # quick ones after a slow one: nothing shown
        assert saver.save(2 + k, "b")
    time.sleep(saver.slow_s + 0.3)
    assert not any("saving" in v for v in panel.seen), panel.seen


def test_a_stale_finish_does_not_disarm_a_newer_operation():
    notice, shown = SlowNotice(0.2), []
    finish_old = notice.arm(lambda: shown.append("old"))
    notice.arm(lambda: shown.append("new"))
    assert finish_old() is False                          # the old one was replaced, not finished late
    time.sleep(0.5)
    assert shown == ["new"]
