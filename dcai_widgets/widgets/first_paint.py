"""What the App defers until the page has painted its first item, and the signal that says so.

The first item waits for everything the kernel does before the page's widgets can render: a served page
on the shared 2-core box spent 2.4 s building the app, of which LANCET's imports (scipy's sparse graphs,
FAISS), BokehJS and LANCET's bokeh view took over half, none of it needed to show one item. So:

- `PaintSignal`: a zero-size anywidget whose front end tells the kernel, on the first animation frame
  after it renders, that the page is painted; the App then starts the deferred work. Without a front end
  (scripts, tests: no kernel event loop) the signal counts as given at once; in a kernel whose page
  never renders it, after `timeout_s`.
- `DeferredQueue`: a Label queue (`fit() -> self`, `candidates(n=None)`, `suggest(id)`) that builds its
  engine (e.g. LANCET, and its imports) only on its first `fit()`, and starts that fit only once the
  signal is given. Until then it has no candidates (the Label panel shows its fixed random fallback
  order) and no suggestion.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anywidget

from .threads import kernel_loop, on_main_thread

_ESM = r"""
function render({ model, el }) {
  el.style.display = "none";
  // two frames: the first is scheduled before this render's siblings are laid out, the second after
  requestAnimationFrame(() => requestAnimationFrame(() => model.send({ type: "painted" })));
}
export default { render };
"""


class PaintSignal(anywidget.AnyWidget):
    """Tells the kernel when the page has painted (see the module docstring).

    `on_painted(callback)` runs `callback()` once, on the kernel's main thread, when the first view of
    this widget has painted (at once if that already happened). `painted` is a threading.Event.
    """

    _esm = _ESM

    def __init__(self, timeout_s: float = 20.0) -> None:
        super().__init__()
        self.painted = threading.Event()
        self._callbacks: list[Callable[[], Any]] = []
        self._lock = threading.Lock()
        self._fire_main = on_main_thread(self._fire)
        self.on_msg(self._on_msg)
        if kernel_loop() is None:   # no front end can answer: nothing to wait for
            self._fire()
        else:
            self._timer = threading.Timer(float(timeout_s), self._fire_main)
            self._timer.daemon = True
            self._timer.start()

    def on_painted(self, callback: Callable[[], Any]) -> None:
        """Run `callback()` once when the page has painted (main thread)."""
        with self._lock:
            if not self.painted.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "painted":
            self._fire()

    def _fire(self) -> None:
        with self._lock:
            if self.painted.is_set():
                return
            self.painted.set()
            callbacks, self._callbacks = self._callbacks, []
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
        for cb in callbacks:
            cb()


class DeferredQueue:
    """A Label queue whose engine is built by `factory()` on the first `fit()`, after `start` is set.

    `start`: a threading.Event (e.g. `PaintSignal.painted`); `fit()` (a worker thread's) waits for it, at
    most `timeout_s` seconds (None: for ever).
    `engine()` builds the engine now if needed (thread-safe, once) and returns it; `built` says whether
    it exists. Attributes the panels read after a fit (`n_labeled_`, `classes_seen_`, `warnings_`, ...)
    come from the engine, or are missing (AttributeError) before it exists.
    """

    def __init__(self, factory: Callable[[], Any], start: threading.Event | None = None,
                 timeout_s: float | None = None) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable and return a queue engine, got {type(factory).__name__}")
        self.factory = factory
        self.start = start if start is not None else threading.Event()
        self.timeout_s = timeout_s
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._engine is not None

    def engine(self) -> Any:
        """The engine, built on first use."""
        with self._lock:
            if self._engine is None:
                self._engine = self.factory()
            return self._engine

    def fit(self) -> DeferredQueue:
        """Wait for `start` (at most `timeout_s`), then build the engine (first time) and fit it."""
        self.start.wait(self.timeout_s)
        self.engine().fit()
        return self

    def candidates(self, n: int | None = None) -> list[int]:
        """The engine's candidates; none before it exists (the panel then uses its fallback order)."""
        if self._engine is None:
            return []
        return self._engine.candidates() if n is None else self._engine.candidates(n)

    def suggest(self, item_id: int) -> tuple[str, float] | None:
        """The engine's suggestion for `item_id`; None before it exists or when it has none."""
        eng = self._engine
        if eng is None or not callable(getattr(eng, "suggest", None)):
            return None
        return eng.suggest(item_id)

    def __getattr__(self, name: str) -> Any:
        # only called for attributes not found on the wrapper: the engine's fitted state
        if name.startswith("__") or self.__dict__.get("_engine") is None:
            raise AttributeError(name)
        return getattr(self.__dict__["_engine"], name)


__all__ = ["DeferredQueue", "PaintSignal"]
