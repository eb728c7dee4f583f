"""Keyboard shortcuts of the Explore panel, with the shared "?" overlay (`keyboard.KeyHelp`).

Class keys are the Label panel's (`label_panel.class_keys`), so one key means one class in every tab. A
class key never labels at once: it asks "label N selected as C?" and waits for the same key again or Enter
(Esc cancels), because a bulk label of a whole grid from one stray keystroke costs many labels.
"""
from __future__ import annotations

import html
from typing import Any

from .keyboard import KeyboardShortcuts, KeyHelp
from .label_panel import class_keys

COMMANDS = {"a": "select all items of the grid", "Escape": "clear the selection / cancel",
            "/": "go to the search box", "m": "switch mode (neighbours / rare concept)",
            "Backspace": "undo your latest label batch", "Enter": "confirm the pending label"}


class ExploreKeys:
    """Keys for an ExplorePanel: `keyboard` (the listener), `help` (the "?" overlay), `press(key)`."""

    def __init__(self, panel: Any) -> None:
        self.panel = panel
        keys = class_keys(panel.classes)
        self.key_to_class = {k: c for k, c in zip(keys, panel.classes) if k and k not in COMMANDS}
        self.commands = {k: v for k, v in COMMANDS.items() if k not in self.key_to_class}
        self.pending: str | None = None      # the class a class key asked to confirm
        self.keyboard = KeyboardShortcuts(keys=list(self.key_to_class) + list(self.commands),
                                          hint="⌨ Explore keys on · press ? for the list")
        rows = [(k, f"label the selection as {c} (asks to confirm)") for k, c in self.key_to_class.items()]
        self.help = KeyHelp(rows + list(self.commands.items()), title="Explore: keyboard shortcuts")
        self.help.attach(self.keyboard)
        self.keyboard.on_key(self.handle)

    def press(self, key: str) -> None:
        """Simulate a keypress (what the browser sends); for tests and scripts."""
        self.keyboard.press(key)

    def cancel(self) -> None:
        """Drop a pending class-key label."""
        self.pending = None

    def handle(self, key: str) -> None:
        p = self.panel
        if key in self.key_to_class:
            cls = self.key_to_class[key]
            if self.pending == cls:
                self._confirm()
                return
            n = len(p.grid.selected)
            if not n:
                p._say("select items first (lasso on the map, tick cards, or press a)", error=True)
                return
            self.pending = cls
            p._say(f'<span class="dcai-confirm" data-class="{html.escape(cls)}" data-count="{n}">label {n} '
                   f"selected as <b>{html.escape(cls)}</b>? press {html.escape(key)} again or Enter to "
                   "confirm, Esc to cancel</span>")
        elif key == "Enter":
            self._confirm()
        elif key == "Escape":
            if self.pending is not None:
                self.pending = None
                p._say("cancelled")
            elif not self.help.visible:
                p.grid.select_none()
                if p.map_view is not None:
                    p.map_view.clear_selection()
        elif key == "a":
            p.grid.select_all()
        elif key == "/":
            box = p.text_box if p.text_row.layout.display is None else p.id_box
            box.focus()
        elif key == "m":
            p.set_mode("rare" if p.mode == "neighbors" else "neighbors")
        elif key == "Backspace":
            self.pending = None
            p.undo()

    def _confirm(self) -> None:
        cls, self.pending = self.pending, None
        if cls is None:
            return
        self.panel.grid.class_pick.value = cls
        self.panel.label_selected(cls)
        self.panel._say("")
