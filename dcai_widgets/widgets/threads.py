"""Widget and bokeh state is not thread-safe: work that starts in a background thread (a queue refit, a
LANCET round emitting propagated labels) is handed to the kernel's main thread before it touches a view.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)


def kernel_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, as in a Jupyter or Voila kernel cell; None elsewhere."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def on_main_thread(fn: Callable[..., Any], loop: asyncio.AbstractEventLoop | None = None) -> Callable[..., None]:
    """Wrap `fn` so calls from other threads run, in order, on the thread of the kernel's event loop.

    Create the wrapper on the main thread (e.g. in a panel's __init__). Calls made on that thread, or
    when no event loop was running at creation (scripts, tests), run at once as plain calls.
    """
    loop = loop if loop is not None else kernel_loop()
    owner = threading.current_thread()

    def run(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:  # a failing view update must not kill the event loop's callback
            log.exception("widget update %r failed", fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if loop is None or threading.current_thread() is owner or loop.is_closed():
            return fn(*args, **kwargs)
        loop.call_soon_threadsafe(functools.partial(run, *args, **kwargs))
        return None

    return wrapper


class Cancelled(Exception):
    """Raised by `Job.check()` inside background work that was cancelled or superseded."""


class Job:
    """What a running piece of background work can ask: has it been cancelled (or superseded)?"""

    def __init__(self) -> None:
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise `Cancelled` if the work should stop now (call it between steps of long work)."""
        if self._cancelled.is_set():
            raise Cancelled()

    def cancel(self) -> None:
        self._cancelled.set()


class Background:
    """The one way panels run background work: start it, coalesce repeated requests, cancel, and hand
    the result (or the error) to the kernel's main thread.

    ``work(job)`` runs in a daemon thread at lowered CPU priority (keystrokes win the cores) and may call
    ``job.check()`` between steps. A ``request()`` while work runs does not start a second thread: the
    work runs once more when the current run ends, so the latest state is always processed next and
    requests in between are merged into that one run. ``on_done(result)`` and ``on_error(exc)`` run on
    the main thread (created there, like `on_main_thread`); with ``background=False`` (scripts, tests)
    everything runs at once in the caller's thread.
    """

    def __init__(self, work: Callable[[Job], Any], on_done: Callable[[Any], Any] | None = None,
                 on_error: Callable[[BaseException], Any] | None = None, *, name: str = "dcai-background",
                 background: bool = True, nice: int = 10) -> None:
        self.work = work
        self.name = name
        self.background = bool(background)
        self.nice = int(nice)
        self._on_done = on_main_thread(on_done) if on_done is not None else None
        self._on_error = on_main_thread(on_error) if on_error is not None else None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._job: Job | None = None
        self._again = False
        self._active = False   # a worker thread owns the work; set and cleared under _lock
        self.runs = 0          # completed runs (for status lines and tests)

    @property
    def running(self) -> bool:
        return self._active

    def request(self) -> None:
        """Run the work now, or once more after the run in progress (requests meanwhile are merged)."""
        if not self.background:
            self._run_once(Job())
            return
        with self._lock:
            # decided under the lock the worker exits under: a thread that is still alive but has
            # already decided to stop (is_alive() is True for a moment) must not swallow this request
            if self._active:
                self._again = True
                return
            self._again = False
            self._active = True
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def cancel(self) -> None:
        """Ask the running work to stop at its next `job.check()`; a pending rerun is dropped."""
        with self._lock:
            self._again = False
            if self._job is not None:
                self._job.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no work runs or is pending (scripts and tests); True when idle."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while True:
            t = self._thread
            if t is None:
                return True
            t.join(None if end is None else max(0.0, end - time.monotonic()))
            if t.is_alive():
                return False
            with self._lock:
                if self._thread is t:
                    return True

    def _loop(self) -> None:
        try:  # Linux: lower this thread's CPU priority so keystrokes win the cores
            import os

            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except (AttributeError, OSError):
            pass
        while True:
            job = Job()
            with self._lock:
                self._job = job
            try:
                self._run_once(job)
            except BaseException:   # an on_done/on_error that raised: the next request starts a new thread
                with self._lock:
                    self._job, self._again, self._active = None, False, False
                raise
            with self._lock:
                self._job = None
                if not self._again:
                    self._active = False
                    return
                self._again = False

    def _run_once(self, job: Job) -> None:
        try:
            result = self.work(job)
        except Cancelled:
            return
        except Exception as e:  # handed to the panel, which shows it; never lost in a thread
            log.debug("background work %s failed", self.name, exc_info=True)
            if self._on_error is not None:
                self._on_error(e)
            else:
                log.exception("background work %s failed", self.name)
            return
        self.runs += 1
        if self._on_done is not None and not job.cancelled:
            self._on_done(result)
