"""MetaStore engine: per-sample gradient factors, exact influence operators, mislabel analytics.

Plain PyTorch/NumPy; never imports widgets. See ``store.MetaStore``.
"""
from .layers import LayerSpec, SubLayer, resolve_layers
from .store import MetaStore, Recorder

__all__ = ["LayerSpec", "MetaStore", "Recorder", "SubLayer", "resolve_layers"]
