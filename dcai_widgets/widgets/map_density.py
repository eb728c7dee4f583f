"""What a map of millions of points sends to the browser: a density image of all N items (categorical
shading as datashader does it: each pixel's colour is the count-weighted mix of its items' class colours,
its opacity grows with the log of its count) plus a level-of-detail sample of drawn points, and every
point inside the view once a zoom leaves few enough of them. NumPy only (no widget here), so the view
logic is tested without a browser.

Bednar et al., datashader ("Accurately render even the largest data", holoviz.org), for the shading;
the level-of-detail order is a fixed random priority per item, so points drawn at one zoom stay drawn when
zooming further in (a coarse level is a subset of every finer one).
"""
from __future__ import annotations

import numpy as np


def hex_rgb(colours: list[str]) -> np.ndarray:
    """(k, 3) float32 RGB in 0..255 of '#rrggbb' strings."""
    return np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in colours], dtype=np.float32)


def in_view(xy: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Boolean mask of the rows of `xy` inside [x0, x1] x [y0, y1]."""
    x, y = xy[:, 0], xy[:, 1]
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def lod_pick(priority: np.ndarray, mask: np.ndarray | None, budget: int) -> np.ndarray:
    """Sorted ids of at most `budget` items among `mask` (all if None) with the lowest `priority`: every
    item in view when they fit, else the level-of-detail sample."""
    ids = np.arange(len(priority)) if mask is None else np.flatnonzero(mask)
    if len(ids) > budget:
        ids = ids[np.argpartition(priority[ids], budget - 1)[:budget]]
    return np.sort(ids).astype(np.int64)


def density_rgba(xy: np.ndarray, category: np.ndarray, colours: np.ndarray, x_range: tuple[float, float],
                 y_range: tuple[float, float], shape: tuple[int, int], min_alpha: float = 0.25) -> np.ndarray:
    """(h, w) uint32 RGBA image (bokeh `image_rgba`, row 0 at the bottom) of the items in the ranges.

    `category` (N,) indexes `colours` (k, 3): a pixel's colour is the mean colour of its items, its alpha
    `min_alpha + (1 - min_alpha) * log1p(count) / log1p(max count)`; empty pixels are transparent.
    """
    h, w = int(shape[0]), int(shape[1])
    (x0, x1), (y0, y1) = x_range, y_range
    if not (x1 > x0 and y1 > y0 and h > 0 and w > 0):
        raise ValueError(f"an image needs x0 < x1, y0 < y1 and a positive shape, got {x_range}, {y_range}, {shape}")
    k = len(colours)
    fx = (xy[:, 0] - x0) * (w / (x1 - x0))
    fy = (xy[:, 1] - y0) * (h / (y1 - y0))
    ok = (fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)
    if not ok.all():
        fx, fy, category = fx[ok], fy[ok], category[ok]
    # non-negative here, so truncation is the floor; one int64 pass per axis at 1M-10M points
    code = (fy.astype(np.int64) * w + fx.astype(np.int64)) * k + category
    counts = np.bincount(code, minlength=h * w * k).reshape(h * w, k).astype(np.float32)
    total = counts.sum(axis=1)
    img = np.zeros((h, w), dtype=np.uint32)
    rgba = img.view(np.uint8).reshape(h, w, 4)
    hit = total > 0
    if hit.any():
        rgb = (counts[hit] @ colours) / total[hit, None]
        alpha = min_alpha + (1 - min_alpha) * np.log1p(total[hit]) / np.log1p(total.max())
        flat = rgba.reshape(h * w, 4)
        flat[hit, :3] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        flat[hit, 3] = np.rint(255 * alpha).astype(np.uint8)
    return img
