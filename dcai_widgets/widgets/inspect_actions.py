"""The Inspect panel's suspects list actions and keys (a mixin of ``InspectPanel``, widgets/inspect.py).

Relabel (``source="review"``, with the page's annotator), confirm (also a review label) or exclude a
training item the model doubts, by button or key: j/k move through the suspects, c confirms, e excludes
or includes, r retrains, the class keys relabel; acting moves on to the next suspect.
"""
from __future__ import annotations

import html

import ipywidgets as W
import numpy as np

MOVE_KEYS = {"j": 1, "ArrowDown": 1, "k": -1, "ArrowUp": -1}


def class_keys(n: int) -> list[str]:
    """Keys that relabel to class i: "1".."9" then "0" (the first ten classes)."""
    return [str((i + 1) % 10) for i in range(min(n, 10))]


class SuspectActions:
    """Suspect actions for ``InspectPanel`` (uses its ``session``, ``classes``, ``annotator``, ``label_source``,
    ``suspects_box``, ``suspects_frame``, ``cursor``, ``_own_write``, ``_require``, ``retrain``)."""

    def _highlight(self) -> None:
        for n, row in enumerate(self.suspects_box.children):
            (row.add_class if n == self.cursor else row.remove_class)("dcai-selected")

    def _act(self, note: W.HTML, fn, *args) -> None:
        try:
            note.value = html.escape(fn(*args))
        except (ValueError, TypeError) as e:
            note.value = f'<span class="dcai-error">{html.escape(str(e))}</span>'

    def _toggle_exclude(self, note: W.HTML, button: W.Button, i: int) -> None:
        back = button.description == "include"
        self._act(note, self.exclude, i, not back)
        button.description = "exclude" if back else "include"

    # -- keyboard ------------------------------------------------------------------------------------------
    def _keys(self) -> list[tuple[str, str]]:
        keys = [("j", "next suspect"), ("k", "previous suspect"), ("c", "confirm its label"),
                ("e", "exclude / include it"), ("r", "retrain now")]
        return keys + [(key, f"relabel as {c}") for key, c in zip(class_keys(len(self.classes)), self.classes)]

    def handle_key(self, key: str) -> None:
        """One key from the browser (or ``keyboard.press``): move through suspects and act on the current one."""
        rows = self.suspects_box.children
        if key == "r":
            self.retrain()
            return
        if not rows or self.cursor is None:
            return
        if key in MOVE_KEYS:
            self.cursor = int(np.clip(self.cursor + MOVE_KEYS[key], 0, len(rows) - 1))
            self._highlight()
            return
        row = rows[self.cursor]
        i = int(self.suspects_frame["id"].iloc[self.cursor])
        note, exclude = row.children[6], row.children[5]
        if key == "c":
            self._act(note, self.confirm, i)
        elif key == "e":
            self._toggle_exclude(note, exclude, i)
        elif key in class_keys(len(self.classes)):
            self._act(note, self.relabel, i, self.classes[class_keys(len(self.classes)).index(key)])
        else:
            return
        if key != "e" and self.cursor < len(rows) - 1:
            self.cursor += 1              # acted on: on to the next suspect
            self._highlight()

    # -- actions ---------------------------------------------------------------------------------------
    def _review(self, item_id: int, name: str) -> None:
        self._own_write = True
        try:
            self.session.label([int(item_id)], [name], annotator=self.annotator, source=self.label_source)
        finally:
            self._own_write = False

    def relabel(self, item_id: int, label: str | int) -> str:
        """Write a corrected label for a training item (the panel's ``label_source``, "review" unless a team
        annotator who is not a lead; the page's annotator); an int is a class position."""
        name = self.classes[int(label)] if isinstance(label, (int, np.integer)) else str(label)
        if name not in self.classes:
            raise ValueError(f"{name!r} is not one of the classes {self.classes}")
        self._review(item_id, name)
        return f"relabeled as {name}"

    def confirm(self, item_id: int) -> str:
        """Record that the item's training label was reviewed and is right (the panel's ``label_source``)."""
        im = self._require()
        lab = int(im.y[int(item_id)])
        if lab < 0:
            raise ValueError(f"item {item_id} has no training label to confirm")
        self._review(item_id, self.classes[lab])
        return f"confirmed {self.classes[lab]}"

    def exclude(self, item_id: int, excluded: bool = True) -> str:
        """Keep a training item out of training (stored in the session) or bring it back."""
        self.session.exclude([int(item_id)], excluded=excluded, annotator=self.annotator,
                             reason="inspect: suspect")
        return "excluded (retrain to apply)" if excluded else "included again"
