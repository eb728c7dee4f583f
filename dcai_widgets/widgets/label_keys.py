"""The Label panel's keys: commands (RESERVED) and one shortcut per class (`class_keys`)."""
from __future__ import annotations

from collections.abc import Sequence

RESERVED = {"a": "accept", "x": "reject", "s": "skip", " ": "skip", "Backspace": "undo",
            "ArrowLeft": "prev", "ArrowRight": "next"}
_KEY_HELP = [("a", "accept the suggested class"), ("x", "reject the suggestion"), ("s", "skip"),
             (" ", "skip"), ("Backspace", "undo your latest label batch (any panel)"),
             ("ArrowLeft", "previous item"), ("ArrowRight", "next item")]
_LETTERS = [c for c in "bcdefghijklmnopqrtuvwyz"]


def class_keys(classes: Sequence[str]) -> list[str]:
    """One shortcut key per class: the names themselves if all are distinct single characters not
    reserved for commands (e.g. digits '0'-'9'), else '1'-'9' then letters (at most 32 classes)."""
    names = [str(c) for c in classes]
    if (all(len(c) == 1 for c in names) and len(set(names)) == len(names)
            and not any(c in RESERVED or c.upper() in RESERVED for c in names)):
        return names
    pool = [str(d) for d in range(1, 10)] + _LETTERS
    if len(names) > len(pool):
        return pool + [""] * (len(names) - len(pool))  # the rest get buttons only
    return pool[: len(names)]



__all__ = ["RESERVED", "class_keys"]
