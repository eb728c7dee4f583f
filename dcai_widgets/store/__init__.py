"""Persistence: the SQLite label store and the on-disk array cache (no ML imports here)."""
from .labelstore import SOURCES, LabelStore, StoreMismatchError
from .cache import ArrayCache, content_hash

__all__ = ["LabelStore", "StoreMismatchError", "SOURCES", "ArrayCache", "content_hash"]
