"""dcai-widgets: a Jupyter-native workbench to turn raw data into a clean labeled training set.

Engines (LANCET, SEALS, MetaStore) and panels are imported lazily, so `import dcai_widgets` stays fast
and scripts that use only the Session never load ipywidgets or bokeh.
"""
from __future__ import annotations

import importlib

from .session import Session
from .store import LabelStore
from . import data
from .simulate import simulate  # eager: a lazy attribute would be shadowed by the submodule of the same name

__version__ = "0.1.0"

_LAZY = {
    "Lancet": "dcai_widgets.lancet",
    "Seals": "dcai_widgets.seals",
    "MetaStore": "dcai_widgets.metastore",
    "App": "dcai_widgets.widgets",
    "LabelPanel": "dcai_widgets.widgets",
    "ExplorePanel": "dcai_widgets.widgets.explore",
    "InspectPanel": "dcai_widgets.widgets.inspect",
    "MapView": "dcai_widgets.widgets",
    "NeighborIndex": "dcai_widgets.neighbors",
    "Elite": "dcai_widgets.elite",
    "CleanPanel": "dcai_widgets.widgets.clean",
    "SharedQueue": "dcai_widgets.team",
    "team_report": "dcai_widgets.team",
    "TeamPanel": "dcai_widgets.widgets.team",
    "ReviewPanel": "dcai_widgets.widgets.review",
    "Trainer": "dcai_widgets.train",
}

__all__ = ["Session", "LabelStore", "data", "simulate", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        mod = importlib.import_module(_LAZY[name])
        return getattr(mod, name)
    raise AttributeError(f"module 'dcai_widgets' has no attribute {name!r}")
