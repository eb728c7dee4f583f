"""KeyboardShortcuts: a document-wide keydown listener (anywidget) that forwards keys to Python.

ipywidgets 8 has no keyboard widget; this is a ~30-line ESM module with no front-end build step, so it
works the same in JupyterLab, Notebook, VS Code and Voila.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

import anywidget
import ipywidgets as W
import traitlets

_ESM = r"""
// One document listener per keyboard model; when several are on one page (e.g. two panels in a notebook),
// only the active one handles keys: the last rendered, or the one whose panel was last clicked.
const G = globalThis;
G.__dcaiKeyboard = G.__dcaiKeyboard || new Map();

function isTyping(target) {
  if (!target) return false;
  if (target.isContentEditable) return true;
  const tag = (target.tagName || "").toUpperCase();
  if (tag === "TEXTAREA" || tag === "SELECT") return true;
  if (tag === "INPUT") {
    const type = (target.type || "text").toLowerCase();
    return !["button", "checkbox", "radio", "range", "submit", "reset"].includes(type);
  }
  return false;
}

function activate(uid) {
  G.__dcaiActiveKeyboard = uid;
  document.dispatchEvent(new CustomEvent("dcai-keyboard-active", { detail: uid }));
}

function initialize({ model }) {
  const uid = model.get("uid");
  if (G.__dcaiKeyboard.has(uid)) return;
  const handler = (event) => {
    if (!model.get("enabled")) return;
    if (G.__dcaiActiveKeyboard !== undefined && G.__dcaiActiveKeyboard !== uid) return;
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (isTyping(event.target)) return;
    const keys = model.get("capture");
    if (keys.length && !keys.includes(event.key)) return;
    event.preventDefault();
    event.stopPropagation();
    model.send({ type: "keydown", key: event.key, shift: event.shiftKey });
  };
  document.addEventListener("keydown", handler, true);
  G.__dcaiKeyboard.set(uid, handler);
  return () => {
    document.removeEventListener("keydown", handler, true);
    G.__dcaiKeyboard.delete(uid);
  };
}

function render({ model, el }) {
  const uid = model.get("uid");
  el.classList.add("dcai-keyboard");
  const update = () => {
    const active = G.__dcaiActiveKeyboard === undefined || G.__dcaiActiveKeyboard === uid;
    el.textContent = !model.get("enabled") ? "" :
      active ? model.get("hint") : "⌨ click this panel to use its keyboard shortcuts";
  };
  const onActive = () => update();
  document.addEventListener("dcai-keyboard-active", onActive);
  // a listener switched on (e.g. its tab was shown) takes the keyboard from the one switched off
  const onEnabled = () => { if (model.get("enabled")) activate(uid); update(); };
  model.on("change:enabled", onEnabled);
  model.on("change:hint", update);
  activate(uid);
  update();
  let scope = null;
  const onPointer = () => { if (G.__dcaiActiveKeyboard !== uid) activate(uid); };
  requestAnimationFrame(() => {
    scope = el.closest(".dcai-keyboard-scope") || el.parentElement;
    if (scope) scope.addEventListener("pointerdown", onPointer, true);
  });
  return () => {
    document.removeEventListener("dcai-keyboard-active", onActive);
    model.off("change:enabled", onEnabled);
    if (scope) scope.removeEventListener("pointerdown", onPointer, true);
  };
}

export default { initialize, render };
"""

_CSS = ".dcai-keyboard { font-size: 11px; color: #777; }"


class KeyboardShortcuts(anywidget.AnyWidget):
    """Listen for keydown anywhere on the page and call Python handlers with the key name.

    `keys` (trait `capture`) limits which keys are captured (others pass through to the page); typing in
    a text box is ignored. With several listeners on one page, only the active one handles keys: the last
    rendered, or the one inside the `.dcai-keyboard-scope` element (e.g. a LabelPanel) clicked last. Register handlers with `on_key(callback)`; `callback(key: str)` runs in the kernel.
    """

    _esm = _ESM
    _css = _CSS
    capture = traitlets.List(traitlets.Unicode(), default_value=[]).tag(sync=True)
    enabled = traitlets.Bool(True).tag(sync=True)
    uid = traitlets.Unicode().tag(sync=True)  # identifies this listener in the page
    hint = traitlets.Unicode("⌨ keyboard shortcuts on").tag(sync=True)

    def __init__(self, keys: Iterable[str] = (), **kwargs) -> None:
        super().__init__(capture=list(keys), uid=uuid.uuid4().hex, **kwargs)
        self._handlers: list[Callable[[str], None]] = []
        self.on_msg(self._on_msg)

    def on_key(self, callback: Callable[[str], None], remove: bool = False) -> None:
        """Register (or remove) `callback(key)` to run on every captured keydown."""
        if not callable(callback):
            raise TypeError(f"on_key needs a callable taking the key name, got {type(callback).__name__}")
        if remove:
            self._handlers.remove(callback)
        else:
            self._handlers.append(callback)

    def press(self, key: str) -> None:
        """Simulate a keypress from Python (what the browser would send); used by tests and scripts."""
        self._on_msg(self, {"type": "keydown", "key": key}, [])

    def _on_msg(self, _widget, content: dict, _buffers) -> None:
        if not isinstance(content, dict) or content.get("type") != "keydown":
            return
        key = str(content.get("key", ""))
        if not self.enabled or (self.capture and key not in self.capture):
            return
        for cb in list(self._handlers):
            cb(key)


def keys_table(keys: Iterable[tuple[str, str]]) -> str:
    """HTML table of (key, what it does) rows, escaped; keys shown as <kbd> with readable names."""
    import html

    names = {" ": "space", "Backspace": "⌫ Backspace", "Escape": "Esc", "Enter": "↵ Enter",
             "ArrowLeft": "←", "ArrowRight": "→", "ArrowUp": "↑", "ArrowDown": "↓"}
    rows = "".join(f"<tr><td><kbd>{html.escape(names.get(k, k))}</kbd></td><td>{html.escape(what)}</td></tr>"
                   for k, what in keys)
    return f"<table>{rows}</table>"


class KeyHelp(W.VBox):
    """The "?" overlay: a box listing a panel's keys, hidden until "?" is pressed (or its button clicked).

    One helper for every tab: `attach(keyboard)` makes "?" toggle it and Esc close it on that listener,
    so the Label, Explore and Inspect panels show their keys the same way. `keys` is a list of
    (key, what it does) pairs; `set_keys` replaces them (e.g. when class keys change).
    """

    def __init__(self, keys: Iterable[tuple[str, str]] = (), title: str = "Keyboard shortcuts") -> None:
        self.title = str(title)
        self.table = W.HTML()
        self.close_button = W.Button(description="close (Esc)", layout=W.Layout(width="auto"))
        self.close_button.on_click(lambda _b: self.hide())
        self.button = W.Button(description="? keys", tooltip="list the keyboard shortcuts (press ?)",
                               layout=W.Layout(width="auto"))
        self.button.on_click(lambda _b: self.toggle())
        super().__init__([self.table, self.close_button], layout=W.Layout(display="none"))
        self.add_class("dcai-help")
        self.add_class("dcai-help-overlay")
        self.set_keys(keys)

    @property
    def visible(self) -> bool:
        return self.layout.display != "none"

    def set_keys(self, keys: Iterable[tuple[str, str]]) -> None:
        """Replace the listed keys (the "?" and Esc rows are added)."""
        import html

        self.rows = [(str(k), str(w)) for k, w in keys] + [("?", "show / hide this list"), ("Escape", "close it")]
        self.table.value = f"<b>{html.escape(self.title)}</b>" + keys_table(self.rows)

    def show(self) -> None:
        self.layout.display = None

    def hide(self) -> None:
        self.layout.display = "none"

    def toggle(self) -> None:
        (self.hide if self.visible else self.show)()

    def attach(self, keyboard: KeyboardShortcuts) -> "KeyHelp":
        """Capture "?" (toggle) and Escape (close) on `keyboard`; returns self."""
        extra = [k for k in ("?", "Escape") if keyboard.capture and k not in keyboard.capture]
        if extra:
            keyboard.capture = list(keyboard.capture) + extra

        def on_key(key: str) -> None:
            if key == "?":
                self.toggle()
            elif key == "Escape" and self.visible:
                self.hide()

        keyboard.on_key(on_key)
        return self


def find_key_help(root: W.Widget) -> KeyHelp | None:
    """The first KeyHelp among `root` and its descendants (a panel that already lists its keys), or None."""
    todo = [root]
    while todo:
        w = todo.pop()
        if isinstance(w, KeyHelp):
            return w
        todo.extend(getattr(w, "children", ()) or ())
    return None
