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
