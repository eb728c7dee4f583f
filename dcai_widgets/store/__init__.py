"""Persistence: the label store (SQLite file or PostgreSQL database) and the on-disk array cache.

No ML imports here, and nothing of the package outside ``store/``.
"""
from __future__ import annotations

import os

from .base import SOURCES, BaseLabelStore
from .cache import ArrayCache, content_hash
from .errors import (ClaimLostError, NotAStoreError, StoreBusyError, StoreDamagedError, StoreFullError,
                     StoreMismatchError, StoreReadOnlyError, StoreUnavailableError, StoreVersionError)
from .schema import SCHEMA_VERSION
from .sqlite import LabelStore

PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(PG_SCHEMES)


def open_store(path_or_url: str | os.PathLike | BaseLabelStore, **kw) -> BaseLabelStore:
    """A label store: ``postgresql://user@host:port/db`` gives the PostgreSQL one, anything else is a
    path to an SQLite file (created if missing). A store object is returned as it is."""
    if isinstance(path_or_url, BaseLabelStore):
        return path_or_url
    if is_postgres_url(path_or_url):
        from .postgres import PgLabelStore

        return PgLabelStore(str(path_or_url), **kw)
    return LabelStore(path_or_url, **kw)


def backup(src: str | os.PathLike | BaseLabelStore, dest: str | os.PathLike, **kw) -> dict:
    """Copy a label store while it may be in use; see ``store.backups`` for the details."""
    from .backups import backup as _backup

    return _backup(src, dest, **kw)


__all__ = ["SCHEMA_VERSION", "SOURCES", "ArrayCache", "BaseLabelStore", "ClaimLostError", "LabelStore",
           "NotAStoreError", "StoreBusyError", "StoreDamagedError", "StoreFullError", "StoreMismatchError",
           "StoreReadOnlyError", "StoreUnavailableError", "StoreVersionError", "backup", "content_hash",
           "is_postgres_url", "open_store"]
