"""ItemCard: one item shown crisply (image, text, table row or vector) with a caption and label badges."""
from __future__ import annotations

import html
from collections import OrderedDict
from typing import Any

import ipywidgets as W

from ..calibration import SHOW_PERCENT_FROM

_TEXT_LIMIT = 2000
SMALL = 160   # cards narrower than this are a grid's thumbnails: text wraps in the card, cut after a few lines
UNCALIBRATED = "uncalibrated"    # printed instead of the figure of a model built without calibration
UNCALIBRATED_WHY = ("the model was built without calibration (calibration=None): its probability is not the "
                    "chance that the label is right, so no figure is shown")
UNCERTAIN_WHY = (f"the confidence cannot be trusted yet: the model was fit on fewer than {SHOW_PERCENT_FROM} "
                 "labels, or its held-out labels pin its accuracy only to worse than about ±10 points "
                 "(more labels tighten it)")


class PngCache:
    """Small LRU of rendered PNG bytes per (item, size), so prefetched items appear at once."""

    def __init__(self, items: Any, maxsize: int = 512) -> None:
        self.items = items
        self.maxsize = int(maxsize)
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    def get(self, item_id: int, size: int) -> bytes:
        """PNG bytes of `item_id` at about `size` pixels (nearest-neighbour upscaling keeps pixels sharp)."""
        key = (int(item_id), int(size))
        png = self._cache.get(key)
        if png is None:
            png = self.items.thumbnail(int(item_id), size=int(size)) or b""
            self._cache[key] = png
            if len(self._cache) > self.maxsize:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return png


def png_cache(session: Any) -> PngCache:
    """The PngCache shared by every card of one session (created on first use)."""
    cache = getattr(session, "_dw_png_cache", None)
    if cache is None:
        cache = PngCache(session.items)
        try:
            session._dw_png_cache = cache
        except AttributeError:  # sessions with __slots__: no sharing, still correct
            pass
    return cache


def resized_from(session: Any) -> dict[int, str]:
    """{item id: its size in the file, "WxH"} for the images opening the folder resized (cached per session)."""
    got = getattr(session, "_dw_resized_from", None)
    if got is None:
        r = getattr(session.items, "resized_", None)
        got = {} if r is None or not len(r) else dict(zip(r["id"].astype(int), r["from_size"].astype(str)))
        try:
            session._dw_resized_from = got
        except AttributeError:
            pass
    return got


def item_html(session: Any, item_id: int, max_chars: int = _TEXT_LIMIT) -> str:
    """HTML for a non-image item: escaped text, a table row as key/value pairs, or a vector summary."""
    items = session.items
    i = int(item_id)
    if items.kind == "text":
        text = items.texts[i]
        if len(text) > max_chars:
            text = text[:max_chars] + " …"
        return f'<div class="dcai-text">{html.escape(text)}</div>'
    if items.kind == "table":
        row = items.frame.iloc[i]
        cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                        for k, v in row.items())
        return f'<table class="dcai-row">{cells}</table>'
    return f'<div class="dcai-text">{html.escape(items.describe(i))}</div>'


class ItemCard(W.VBox):
    """Show one item: an image at `size` px (small images upscaled with nearest-neighbour), or text/row.

    `card.show(item_id)` switches the item; `card.set_badges(human=..., propagated=...)` shows labels.
    The caption carries the item id in a `data-item` attribute so browser tests can see what is shown.
    """

    def __init__(self, session: Any, item_id: int | None = None, size: int = 192,
                 caption: bool = True, **kwargs) -> None:
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an int >= 8 pixels, got {size!r}")
        self.session = session
        self.size = size
        self.item_id: int | None = None
        self.shown_count = 0  # bumps on every show(), so a browser can tell a re-show apart
        self.is_image = session.items.kind == "image"
        self._cache = png_cache(session)
        self.image = W.Image(format="png", layout=W.Layout(width=f"{size}px", height=f"{size}px",
                                                           object_fit="contain"))
        self.image.add_class("dcai-pixelated")
        # a small card (a grid's, Inspect's neighbours) holds its text in its own width, wrapped and cut at
        # the bottom: a 240 px block centred in a 108 px grid cell was cut on both sides ("ce was paid late")
        small = size < SMALL
        self.body = W.HTML(layout=W.Layout(width="100%" if small else f"{max(size, 240)}px"))
        self.caption = W.HTML()
        self.badges = W.HTML()
        children = [self.image if self.is_image else self.body]
        if caption:
            children += [self.caption, self.badges]
        super().__init__(children=children, **kwargs)
        self.add_class("dcai-card")
        if small:
            self.add_class("dcai-card-small")
        elif not self.is_image and not self.layout.min_width:
            # the text block keeps its width: a flex column narrower than it (the Clean tab's focus card)
            # cut the centred text on both sides ("tor 796: [0.217, ...")
            self.layout.min_width = f"{max(size, 240) + 10}px"
        if item_id is not None:
            self.show(item_id)

    def show(self, item_id: int, note: str = "") -> None:
        """Display item `item_id` (prefer ids from the session; out-of-range ids raise ValueError)."""
        i = int(item_id)
        n = len(self.session)
        if not 0 <= i < n:
            raise ValueError(f"item id {item_id} is out of range; ids are 0..{n - 1}")
        if self.is_image:
            self.image.value = self._cache.get(i, self.size)
        else:
            self.body.value = item_html(self.session, i)
        extra = f" · {html.escape(note)}" if note else ""
        was = resized_from(self.session).get(i) if self.is_image else None
        if was:   # the file's own size: the shown image was resized to the set's one size
            extra += (f' · <span class="dcai-resized" title="resized from {html.escape(was)} to the size all '
                      f'images were given">resized from {html.escape(was)}</span>')
        self.shown_count += 1
        self.caption.value = (f'<span class="dcai-item-id" data-item="{i}" data-seq="{self.shown_count}">'
                              f"#{i}</span>{extra}")
        self.item_id = i

    def set_badges(self, human: str | None = None, propagated: str | None = None,
                   confidence: float | str | None = None, score: float | None = None,
                   score_name: str | None = None) -> None:
        """Show the item's current human label, its propagated label (with confidence) and a score.

        `confidence`: a number (printed with two decimals) or the text to print instead (e.g. "uncertain",
        "uncalibrated", `item_grid.shown_confidence`), explained in the badge's tooltip.

        `score_name` (e.g. "cos" for cosine similarity, "score" for a ranking score) is printed before the
        score and explained in the grid's legend, so no number on a card stands alone.
        """
        parts = []
        if human is not None:
            parts.append(f'<span class="dcai-badge dcai-human" title="labeled by a person">'
                         f"{html.escape(str(human))}</span>")
        if propagated is not None:
            conf = ("" if confidence is None else f" {html.escape(confidence)}" if isinstance(confidence, str)
                    else f" {confidence:.2f}")
            what = (UNCERTAIN_WHY if confidence == "uncertain" else UNCALIBRATED_WHY if confidence == UNCALIBRATED
                    else "calibrated confidence")
            parts.append(f'<span class="dcai-badge dcai-prop" title="propagated by the model; {what}">'
                         f"~{html.escape(str(propagated))}{conf}</span>")
        if score is not None:
            name = f"{html.escape(score_name)} " if score_name else ""
            parts.append(f'<span class="dcai-score" data-score="{score:.6g}">{name}{score:.3g}</span>')
        self.badges.value = " ".join(parts)


__all__ = ["UNCALIBRATED", "UNCALIBRATED_WHY", "UNCERTAIN_WHY", "ItemCard", "PngCache", "item_html", "png_cache"]
