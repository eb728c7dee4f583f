"""The one definition of "labeled" that every counter on a page shows, so tabs and panels never disagree.

An item counts as labeled when its current label comes from a person: a human, review or import label
(`Session.label_vector()`, the store's live labels of those sources). Propagated labels are counted
separately and never as "labeled". This is `Session.counts().labeled` (`LabelCounts`); panels count it
from `label_vector()` on each event because `counts()` also reads every propagated label (~3 s at 1M).
"""
from __future__ import annotations

import html
from typing import Any

import numpy as np

LABELED_MEANS = ("items whose current label comes from a person (human, review or import label); "
                 "labels propagated by a model are not counted")


def labeled_count(session: Any, vector: np.ndarray | None = None) -> tuple[int, int]:
    """(items labeled by people, all items) under the one definition above."""
    v = np.asarray(session.label_vector() if vector is None else vector)
    return int((v >= 0).sum()), int(len(v))


def labeled_html(n: int, total: int) -> str:
    """The counter as every panel shows it: "n of N labeled by people", with what it counts on hover."""
    return (f'<span class="dcai-labeled" data-labeled="{int(n)}" title="{html.escape(LABELED_MEANS)}">'
            f"{int(n):,} of {int(total):,} labeled by people</span>")
