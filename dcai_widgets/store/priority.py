"""A person's label goes first, across processes: a tiny lock file beside the SQLite store.

A writer of a person's label holds a shared ``flock`` on ``<store>-priority`` from before it asks for
SQLite's write lock until it has committed. A bulk writer (a model's labels in parts) takes the same
file's lock exclusively, without blocking, before each part: while any person's write is pending it
cannot, so it waits (bounded, so a steady stream of labels cannot starve the model forever). ``flock``
locks belong to an open file description, so threads of one process and other processes on the same
machine are covered alike. Why: SQLite gives its write lock to whoever asks at the right moment, and a
bulk writer that asks again right after each commit kept a keypress in another process waiting up to
8 s. On filesystems without flock the signal is simply absent (writes stay correct, only slower).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator


class PrioritySignal:
    """People hold the file shared while writing; ``wait_for_people`` returns when none is."""

    def __init__(self, path: str | os.PathLike, max_wait_s: float = 2.0):
        self.path = os.fspath(path)
        self.max_wait_s = float(max_wait_s)

    def _open(self) -> int | None:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:          # read-only folder, odd filesystem: no signal, writes still correct
            try:
                return os.open(self.path, os.O_RDONLY)
            except OSError:
                return None

    @contextlib.contextmanager
    def person(self) -> Iterator[None]:
        """Hold the shared lock around a person's write."""
        fd = self._open()
        try:
            if fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            if fd is not None:
                os.close(fd)            # closing releases the lock

    def wait_for_people(self) -> float:
        """Block while a person's write is pending (at most ``max_wait_s``); returns the seconds waited."""
        fd = self._open()
        if fd is None:
            return 0.0
        t0 = time.monotonic()
        try:
            delay = 0.0005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    break
                except BlockingIOError:
                    if time.monotonic() - t0 >= self.max_wait_s:
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 0.005)
                except OSError:
                    break
        finally:
            os.close(fd)
        return time.monotonic() - t0
