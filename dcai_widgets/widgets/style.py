"""Shared CSS for the panels, delivered as a <style> HTML widget (no front-end build step)."""
from __future__ import annotations

import ipywidgets as W

STYLE_CSS = """
.dcai-pixelated img, img.dcai-pixelated { image-rendering: pixelated; }
.dcai-card { border: 1px solid #ddd; border-radius: 4px; padding: 4px; align-items: center; }
.dcai-card.dcai-selected { border: 2px solid #1f77b4; background: #eef5fc; }
.dcai-text { white-space: pre-wrap; max-height: 320px; overflow-y: auto; font-size: 14px; }
.dcai-row th { text-align: right; padding-right: 6px; color: #555; }
.dcai-badge { border-radius: 3px; padding: 0 4px; font-size: 12px; }
.dcai-human { background: #d9ead3; }
.dcai-prop { background: #eee; color: #555; }
.dcai-score { color: #777; font-size: 11px; }
.dcai-item-id { color: #555; font-size: 12px; }
.dcai-legend { display: flex; flex-wrap: wrap; gap: 2px 10px; max-height: 120px; overflow-y: auto;
               font-size: 12px; }
.dcai-legend span.sw { display: inline-block; width: 10px; height: 10px; margin-right: 3px; }
.dcai-counts { font-size: 12px; color: #444; }
.dcai-suggested { outline: 3px solid #f0ad4e; }
"""


def style_widget() -> W.HTML:
    """An HTML widget carrying the shared CSS; include it once in a displayed panel."""
    return W.HTML(f"<style>{STYLE_CSS}</style>", layout=W.Layout(display="none"))
