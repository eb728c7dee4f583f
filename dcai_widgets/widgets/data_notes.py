"""DataNotes: what opening the data did that the page would otherwise hide, at the top of the App.

Found on a new user's walk through the served app (issue 14): a folder of images of mixed sizes was
squashed to the most common size (a 80x60 photo shown as 32x32, aspect ratio lost) with only a Python
warning in the server's terminal; a CSV whose ``label`` column held a label for every row opened as
"0 of 60 labeled": the column only named the classes and was kept as the hidden reference (``y_true``),
so the user was asked to label every row again without a word. The notes say both, and (for a lead or
the single user) offer to import the file's labels as ``source="import"`` labels (for the items no
person has labeled yet; a later label made here wins), which the counters, Inspect, Clean and Train
then use.
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import numpy as np

from .threads import on_main_thread


def resized_text(session: Any) -> str:
    """"27 of 36 images were resized to 32x32 (from 64x64 (9), …)" or "" when none was."""
    r = getattr(session.items, "resized_", None)
    if r is None or not len(r):
        return ""
    by = r["from_size"].value_counts()
    froms = ", ".join(f"{html.escape(str(k))} ({int(v)})" for k, v in by.items())
    to = html.escape(str(r["to_size"].iloc[0]))
    return (f"{len(r)} of {len(session):,} images were resized to {to} (from {froms}) so that all have one "
            "size: they are shown and embedded at that size, a different aspect ratio stretched. Choose the "
            "size with <code>dcai-widgets serve --image-size PX</code> (in Python: "
            "<code>Session.open(path, image_size=PX)</code>).")


def unused_columns_text(session: Any) -> str:
    """"The file's columns 'id', 'date' are not used: …" for a text table with other columns, else ""."""
    cols = list(getattr(session.items, "unused_columns_", None) or [])
    if not cols:
        return ""
    names = ", ".join(f"<code>{html.escape(c)}</code>" for c in cols[:8]) + (f" and {len(cols) - 8} more"
                                                                         if len(cols) > 8 else "")
    return (f"The file's column{'s' if len(cols) > 1 else ''} {names} {'are' if len(cols) > 1 else 'is'} not "
            "used: only the text is embedded and shown (and the label column read). An export's <code>id</code> "
            "is the row's position in the file (from 0), to join them back.")


class DataNotes(W.VBox):
    """Notes about the data shown above the tabs; hidden when there is nothing to say.

    ``offer_import``: the data came with labels from the user's file (a CSV ``label`` column, class
    sub-folders) rather than as a demo's answer key: say how many, and unless ``can_import`` is False
    (a team annotator: a lead decides) offer a button that writes them as ``source="import"`` labels by
    ``annotator``."""

    def __init__(self, session: Any, offer_import: bool = False, can_import: bool = True,
                 annotator: str | None = None) -> None:
        self.session, self.annotator = session, annotator
        self.resized = W.HTML()
        self.known = W.HTML()
        self.import_button = W.Button(description="import them", button_style="info",
                                      layout=W.Layout(width="auto", display="none"))
        self.import_button.on_click(lambda _b: self.import_labels())
        self.offer_import, self.can_import = bool(offer_import), bool(can_import)
        self.unused = W.HTML()
        super().__init__([self.resized, self.unused, W.HBox([self.known, self.import_button])])
        self.add_class("dcai-data-notes")
        text = resized_text(session)
        self.resized.value = f'<div class="dcai-note dcai-resized">{text}</div>' if text else ""
        text = unused_columns_text(session)
        self.unused.value = f'<div class="dcai-note dcai-unused-columns">{text}</div>' if text else ""
        self._pending: np.ndarray | None = None   # (N,) the data labels an item no one has labeled here
        y = getattr(session, "y_true", None)
        if self.offer_import and y is not None and (np.asarray(y) >= 0).any():
            session.on("labels", on_main_thread(self._on_labels))
        self.refresh()

    def _on_labels(self, ids: Any = None, source: str | None = None, **_: Any) -> None:
        # a person's label only takes its items out of what an import would write: no store read per key
        if source in ("human", "review") and ids is not None and self._pending is not None:
            self._pending[[int(i) for i in ids]] = False
            self._show(*self._counts[:2], int(self._pending.sum()))
        elif source in ("import", "undo", "human", "review"):
            self.refresh()

    def _known(self) -> tuple[int, int, int]:
        """(items the data gives a label, of them how many hold an imported label now, how many hold
        no label made by anyone: what an import would write)."""
        y = getattr(self.session, "y_true", None)
        known = np.flatnonzero(np.asarray(y) >= 0) if y is not None else np.zeros(0, np.int64)
        if not len(known):
            return 0, 0, 0
        imported = self.session.labeled(sources=("import",))
        self._pending = np.zeros(len(self.session), bool)
        self._pending[known] = np.asarray(self.session.label_vector())[known] < 0
        return len(known), int(np.isin(imported["id"].to_numpy(np.int64), known).sum()), int(self._pending.sum())

    def refresh(self) -> None:
        """Redraw the notes from the store (after an import, or an undo)."""
        self._counts = self._known() if self.offer_import else (0, 0, 0)
        self._show(*self._counts)

    def _show(self, n: int, done: int, pending: int) -> None:
        attrs = f'class="dcai-note dcai-known" data-known="{n}" data-imported="{done}" data-pending="{pending}"'
        if n == 0 or (pending == 0 and done == 0):   # nothing the data says that is not labeled here
            self.known.value = ""
            self.import_button.layout.display = "none"
        elif pending == 0:
            self.known.value = (f"<div {attrs}>{done:,} of the data's own labels are imported (source "
                                "<i>import</i>): they count as labeled; Train and Inspect use them once "
                                "<i>imported labels</i> is chosen there; a label made here takes precedence "
                                "over them</div>")
            self.import_button.layout.display = "none"
        else:
            who = "" if self.can_import else " (a lead can import them)"
            self.known.value = (f"<div {attrs}>the data comes with labels for {n:,} of {len(self.session):,} "
                                f"items: {pending:,} of them are not counted or used until imported{who}</div>")
            self.import_button.description = f"import {pending:,} labels"
            self.import_button.layout.display = "" if self.can_import else "none"
        self.layout.display = "" if (self.resized.value or self.unused.value or self.known.value) else "none"

    def import_labels(self) -> int:
        """Write the data's labels as ``source="import"`` by the page's annotator (one batch) for the
        items no person has labeled here (the store's latest label wins, and theirs must)."""
        if not (self.offer_import and self.can_import):
            raise PermissionError("importing the data's labels is not offered on this page")
        from .._validate import Positions

        y = np.asarray(self.session.y_true).copy()
        y[np.asarray(self.session.label_vector()) >= 0] = -1   # a label made here is never overwritten
        try:
            n = self.session.import_labels(y=Positions(y), annotator=self.annotator or "import")
        except Exception as e:   # shown in the note, never a traceback
            self.known.value += f'<div class="dcai-error">not imported: {html.escape(str(e) or repr(e))}</div>'
            return 0
        self.refresh()
        return int(n)


__all__ = ["DataNotes", "resized_text"]
