"""Shared look of the panels: CSS (delivered as a <style> HTML widget, no front-end build step), the fixed
class -> colour mapping, the selection colour no class uses, and icon glyphs that need no network.

Why glyphs: ipywidgets' ``Button(icon=...)`` draws Font Awesome, which Voila's page loads from a CDN; with
no network the buttons show empty boxes. Unicode symbols in the description are part of every font.
"""
from __future__ import annotations

import colorsys

import ipywidgets as W

# Category10, then Category20's lighter partners (the grey partner replaced: too close to UNLABELED)
_BASE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
         "#bcbd22", "#17becf",
         "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#6b6ecf",
         "#dbdb8d", "#9edae5"]
UNLABELED = "#bdbdbd"
# the selection/highlight colour: black outlines, which no class colour is (classes are fills)
SELECTION = "#000000"

# glyphs the common system fonts (DejaVu, Liberation) carry: no tofu boxes, no network
ICONS = {"search": "⌕", "plus": "+", "tag": "✓", "undo": "↶", "target": "◎", "forward": "▶▶",
         "refresh": "⟳", "check": "☑", "keyboard": "⌨"}


def class_colour(k: int) -> str:
    """Colour of class index `k`: fixed by the index alone (not by the number of classes, nor by a
    refit), so a class keeps its colour in every view and every session of a project.

    The first 20 are Category10 + Category20's light partners (bokeh's palettes); beyond that, hues
    step by the golden angle with three lightness levels, so neighbouring indices differ strongly.
    """
    k = int(k)
    if k < 0:
        raise ValueError(f"class index must be >= 0, got {k}")
    if k < len(_BASE):
        return _BASE[k]
    j = k - len(_BASE)
    hue = (j * 0.6180339887) % 1.0
    light = (0.42, 0.58, 0.32)[j % 3]
    sat = (0.75, 0.6, 0.85)[(j // 3) % 3]
    r, g, b = colorsys.hls_to_rgb(hue, light, sat)
    return "#%02x%02x%02x" % (round(r * 255), round(g * 255), round(b * 255))


def class_colours(n: int) -> list[str]:
    """Colours of class indices 0..n-1 (see `class_colour`)."""
    return [class_colour(k) for k in range(max(0, int(n)))]


STYLE_CSS = """
.dcai-pixelated img, img.dcai-pixelated { image-rendering: pixelated; }
.dcai-card { border: 1px solid #ddd; border-radius: 4px; padding: 4px; align-items: center; }
.dcai-card.dcai-selected { outline: 3px dashed %(sel)s; outline-offset: 1px; background: #f4f4f4; }
.dcai-text { white-space: pre-wrap; max-height: 320px; overflow-y: auto; font-size: 14px; }
.dcai-card-small .dcai-text { font-size: 11px; line-height: 1.3; max-height: 7.8em; overflow: hidden;
  white-space: normal; overflow-wrap: anywhere; text-align: left; }
.dcai-card-small .widget-html, .dcai-card-small .widget-html-content { width: 100%%; }
.dcai-row th { text-align: right; padding-right: 6px; color: #555; }
.dcai-badge { border-radius: 3px; padding: 0 4px; font-size: 12px; }
.dcai-human { background: #d9ead3; }
.dcai-prop { background: #eee; color: #555; }
.dcai-score { display: block; color: #777; font-size: 11px; white-space: nowrap; }
.dcai-badge-legend .dcai-score { display: inline; }
.dcai-item-id { color: #555; font-size: 12px; }
.dcai-legend { display: flex; flex-wrap: wrap; gap: 2px 10px; max-height: 120px; overflow-y: auto;
               font-size: 12px; }
.dcai-legend span.sw { display: inline-block; width: 10px; height: 10px; margin-right: 3px; }
.dcai-counts { font-size: 12px; color: #444; }
.dcai-badge-legend { font-size: 11px; color: #555; }
.dcai-suggested { outline: 3px solid #f0ad4e; }
.dcai-help { font-size: 13px; }
.dcai-help-overlay { position: fixed; top: 60px; right: 24px; z-index: 1000; background: #fff;
  border: 1px solid #888; border-radius: 6px; padding: 10px 14px; box-shadow: 0 4px 16px rgba(0,0,0,.25); }
.dcai-help table { border-collapse: collapse; }
.dcai-help td { padding: 1px 8px; }
.dcai-help kbd { border: 1px solid #bbb; border-radius: 3px; padding: 0 4px; background: #f7f7f7; }
.dcai-guidelines { font-size: 13px; max-height: 240px; overflow-y: auto; }
/* ipywidgets only fades a disabled button to 60%% opacity: a disabled primary (blue) button such as
   "label 0 selected" still reads as clickable. Grey it out (3 classes: beats .jupyter-button.mod-primary). */
.jupyter-widgets.jupyter-button:disabled { background-color: #e4e4e4; color: #8a8a8a; opacity: 1;
  box-shadow: none; cursor: not-allowed; }
""" % {"sel": SELECTION}


def style_widget() -> W.HTML:
    """An HTML widget carrying the shared CSS; include it once in a displayed panel."""
    return W.HTML(f"<style>{STYLE_CSS}</style>", layout=W.Layout(display="none"))
