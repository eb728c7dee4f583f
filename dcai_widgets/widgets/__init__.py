"""Panels and their parts: item cards, grids, the bokeh map, the keyboard listener, the App.

Heavy parts (bokeh) load on first use, so importing a panel never pays for the others.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "App": ".app",
    "app_from_env": ".app",
    "LabelPanel": ".label_panel",
    "ItemCard": ".item_card",
    "ItemGrid": ".item_grid",
    "MapView": ".map_view",
    "KeyboardShortcuts": ".keyboard",
    "class_palette": ".map_view",
    "load_bokehjs": ".map_view",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'dcai_widgets.widgets' has no attribute {name!r}")
