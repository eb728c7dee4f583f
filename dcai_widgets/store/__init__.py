"""Persistence: the SQLite label store and the on-disk array cache (no ML imports here)."""
from .cache import ArrayCache, content_hash
from .labelstore import SOURCES, LabelStore, StoreMismatchError

__all__ = ["SOURCES", "ArrayCache", "LabelStore", "StoreMismatchError", "content_hash"]
