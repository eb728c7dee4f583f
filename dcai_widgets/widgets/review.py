"""ReviewPanel: a lead settles the team's conflicts by keyboard.

It lists the items whose annotators disagree or whose CROWDLAB consensus quality is low
(`dcai_widgets.team.team_report(...).conflicts`, worst first), shows one at a time with every
annotator's label and the consensus, and writes the lead's decision as a "review" label
(``session.label(..., source="review", annotator=lead)``), which the store's current label and the
engines prefer over the annotators' labels. Keys: the class shortcuts of the Label panel, ``n``/``p``
(or the arrows) to move. Only a lead gets this view (the App shows it for role "lead").
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from .item_card import ItemCard
from .keyboard import KeyboardShortcuts
from .label_panel import class_keys
from .style import style_widget
from .threads import Background, on_main_thread

NAV = {"n": "next", "ArrowRight": "next", "p": "prev", "ArrowLeft": "prev"}


def review_keys(classes: list[str]) -> list[str]:
    """The Label panel's class keys, with any that collide with n/p moved to unused letters."""
    keys = class_keys(classes)
    spare = [c for c in "bcdefghijklmoqrtuvwyz" if c not in keys]
    return [spare.pop(0) if k in NAV and spare else ("" if k in NAV else k) for k in keys]


class ReviewPanel(W.VBox):
    """Conflicts and low-consensus items, resolved one at a time by a lead (see the module docstring)."""

    def __init__(self, session: Any, annotator: str, background: bool = True, low_quality: float = 0.5,
                 card_size: int = 192) -> None:
        if not isinstance(annotator, str) or not annotator.strip():
            raise ValueError(f"a review needs the lead's name, got {annotator!r}")
        self.session = session
        self.annotator = annotator.strip()
        self.low_quality = float(low_quality)
        self.classes = [str(c) for c in session.classes]
        self.shortcuts = review_keys(self.classes)
        self._key_to_class = {k: c for k, c in zip(self.shortcuts, self.classes) if k}
        self.conflicts: list[dict] = []
        self.pos = 0
        self.resolved: dict[int, str] = {}
        self._own_write = False
        self.card = ItemCard(session, size=card_size)
        self.labels_html = W.HTML()
        self.list_html = W.HTML()
        self.status = W.HTML("<i>finding conflicts…</i>")
        self.buttons = []
        for key, cls in zip(self.shortcuts, self.classes):
            b = W.Button(description=f"{key} · {cls}" if key else cls, tooltip=f"resolve as {cls}",
                         layout=W.Layout(width="auto", min_width="56px"))
            b.on_click(lambda _b, c=cls: self.resolve(c))
            self.buttons.append(b)
        prev_b = W.Button(description="p · prev", layout=W.Layout(width="auto"))
        next_b = W.Button(description="n · next", layout=W.Layout(width="auto"))
        prev_b.on_click(lambda _b: self.prev())
        next_b.on_click(lambda _b: self.next())
        refresh = W.Button(description="⟳ refresh", layout=W.Layout(width="auto"))
        refresh.on_click(lambda _b: self.refresh())
        self.keyboard = KeyboardShortcuts(keys=[k for k in self.shortcuts if k] + list(NAV))
        self.keyboard.on_key(self.handle_key)
        self._bg = Background(self._compute, self._loaded, self._failed, name="dcai-review",
                              background=background)
        super().__init__([
            style_widget(),
            W.HTML(f"<b>Review</b> · lead <code>{html.escape(self.annotator)}</code>"),
            W.HBox([W.VBox([self.card, self.labels_html,
                            W.Box(self.buttons, layout=W.Layout(flex_flow="row wrap", max_width="640px")),
                            W.HBox([prev_b, next_b, refresh]), self.status, self.keyboard]),
                    self.list_html], layout=W.Layout(grid_gap="16px")),
        ])
        self.add_class("dcai-review-panel")
        self.add_class("dcai-keyboard-scope")
        from .team import Throttle

        self._on_label_event = Throttle(self._bg.request, 5.0 if background else 0.0)
        session.on("labels", on_main_thread(self._on_labels))
        self.refresh()

    # -- data ------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Recompute the conflict list in the background."""
        self._bg.request()

    def wait(self, timeout: float | None = None) -> bool:
        return self._bg.wait(timeout)

    def _compute(self, job) -> list[dict]:
        from ..team import team_report

        job.check()
        c = team_report(self.session, low_quality=self.low_quality).conflicts
        return [dict(id=int(r.id), labels=dict(r.labels), consensus=str(r.consensus),
                     agreement=float(r.agreement), quality=float(r.quality)) for r in c.itertuples()]

    def _loaded(self, conflicts: list[dict]) -> None:
        cur = self.current
        self.conflicts = [c for c in conflicts if c["id"] not in self.resolved]
        ids = [c["id"] for c in self.conflicts]
        self.pos = ids.index(cur) if cur in ids else min(self.pos, max(len(ids) - 1, 0))
        self.status.value = ""
        self._show()

    def _failed(self, e: BaseException) -> None:
        self.status.value = f'<span class="dcai-error">could not list conflicts: {html.escape(str(e))}</span>'

    def _on_labels(self, source: str | None = None, **_: Any) -> None:
        if not self._own_write and source in ("human", "undo"):
            self._on_label_event()

    # -- view ------------------------------------------------------------------------------------
    @property
    def current(self) -> int | None:
        return self.conflicts[self.pos]["id"] if 0 <= self.pos < len(self.conflicts) else None

    def _show(self) -> None:
        c = self.conflicts[self.pos] if 0 <= self.pos < len(self.conflicts) else None
        n = len(self.conflicts)
        if c is None:
            self.card.shown_count += 1
            self.card.caption.value = (f'<span class="dcai-item-id dcai-review-item" data-item="-1" '
                                       f'data-seq="{self.card.shown_count}">no conflicts to review</span>')
            self.labels_html.value = f"<b>Nothing to review.</b> {len(self.resolved)} resolved here."
        else:
            self.card.show(c["id"], note=f"{self.pos + 1} of {n} to review")
            self.card.caption.value = self.card.caption.value.replace("dcai-item-id", "dcai-item-id dcai-review-item", 1)
            votes = "".join(f'<li data-annotator="{html.escape(a)}">{html.escape(a)}: <b>{html.escape(lab)}</b></li>'
                            for a, lab in sorted(c["labels"].items()))
            q = "–" if c["quality"] != c["quality"] else f"{c['quality']:.2f}"
            self.labels_html.value = (f'<div class="dcai-review-labels"><ul>{votes}</ul>consensus '
                                      f'<b>{html.escape(c["consensus"])}</b>{self._consensus_note(c)} · '
                                      f'agreement {c["agreement"]:.0%} · quality {q}'
                                      f'<div class="dcai-review-why">{self._why(c)}</div></div>')
        bold = ' style="font-weight:bold"'
        rows = "".join(
            f'<tr data-item="{x["id"]}"{bold if k == self.pos else ""}><td>#{x["id"]}</td>'
            f'<td>{html.escape(", ".join(f"{a}: {lab}" for a, lab in sorted(x["labels"].items())))}</td>'
            f'<td>{x["agreement"]:.0%}</td></tr>'
            for k, x in enumerate(self.conflicts[:50]))
        more = f"<div>… and {n - 50} more</div>" if n > 50 else ""
        self.list_html.value = (f'<div class="dcai-review-list" data-count="{n}"><b>{n} to review</b>'
                                f"<table><tr><th>item</th><th>labels</th><th>agreement</th></tr>{rows}</table>"
                                f"{more}</div>")

    @staticmethod
    def _consensus_note(c: dict) -> str:
        """CROWDLAB weighs a held-out model against the annotators; where it picks a class nobody gave
        (two low-quality annotators who disagree), "consensus 1" beside "ada: 4, bo: 5" read as a label
        someone chose. Say whose it is."""
        if c["consensus"] in c["labels"].values():
            return ""
        return (' <span class="dcai-review-model-pick">(the held-out model\'s pick: no annotator gave '
                "it)</span>")

    def _why(self, c: dict) -> str:
        """Why the item is listed: a disagreement, or agreeing annotators whose consensus quality is low."""
        if c["agreement"] < 1.0:
            return "listed because the annotators disagree"
        return (f"listed because CROWDLAB's consensus quality {c['quality']:.2f} is below {self.low_quality:.2f} "
                "although the annotators agree (the model doubts them)")

    # -- actions ---------------------------------------------------------------------------------
    def resolve(self, label: str) -> None:
        """Write the lead's label for the shown item (source "review"), then show the next conflict."""
        i = self.current
        if i is None:
            return
        if label not in self.classes:
            raise ValueError(f"label {label!r} is not among the classes {self.classes}")
        self._own_write = True
        try:
            self.session.label([i], [label], annotator=self.annotator, source="review")
        except Exception as e:  # keep the item on screen; say why
            self.status.value = f'<span class="dcai-error">not saved: {html.escape(str(e))}</span>'
            return
        finally:
            self._own_write = False
        self.resolved[i] = label
        del self.conflicts[self.pos]
        self.pos = min(self.pos, max(len(self.conflicts) - 1, 0))
        self.status.value = f"item #{i} resolved as <b>{html.escape(label)}</b>"
        self._show()

    def next(self) -> None:
        if self.pos < len(self.conflicts) - 1:
            self.pos += 1
            self._show()

    def prev(self) -> None:
        if self.pos > 0:
            self.pos -= 1
            self._show()

    def handle_key(self, key: str) -> None:
        if key in self._key_to_class:
            self.resolve(self._key_to_class[key])
        elif key in NAV:
            getattr(self, NAV[key])()

    def press(self, key: str) -> None:
        """Simulate a keypress (as the browser would send it)."""
        self.keyboard.press(key)
