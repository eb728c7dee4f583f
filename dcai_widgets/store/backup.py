"""Copy a label store while it is in use, without losing what is still in SQLite's write-ahead log.

Copying ``labels.db`` with ``cp`` while the app serves misses every label still in ``labels.db-wal``
(0 of 300 in the issue's check). ``backup`` instead:

- SQLite -> SQLite file: SQLite's online backup API (``sqlite3.Connection.backup``), which copies the
  database as readers see it, WAL content included, page by page while other processes keep writing.
- PostgreSQL -> SQLite file, or any store -> a ``postgresql://`` database: copies every table (events
  with their sequence numbers and batches, the derived table, exclusions, registry, claims, meta) from
  one consistent snapshot (a REPEATABLE READ transaction on PostgreSQL) into a new, empty store, so no
  ``pg_dump`` of the same major version is needed. A PostgreSQL store can thus be backed up to a
  single file that anyone can open with ``dcai-widgets`` or ``sqlite3``.

The destination must not already hold labels (a backup never overwrites a store). The copy is written
beside the destination and moved into place only when complete.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path

from .base import BaseLabelStore

TABLES = {
    "meta": ("key", "value"),
    "events": ("seq", "item", "label", "annotator", "source", "confidence", "model_version", "batch", "retracts",
               "ts"),
    "propagated_latest": ("item", "seq", "label", "confidence", "model_version", "ts"),
    "exclusions": ("seq", "item", "excluded", "annotator", "reason", "ts"),
    "annotators": ("name", "role", "token_hash", "revoked", "created"),
    "claims": ("item", "annotator", "expires"),
}
ROWS_PER_PART = 10_000


def backup(src: str | os.PathLike | BaseLabelStore, dest: str | os.PathLike) -> dict:
    """Copy the label store ``src`` (path, URL or store) to ``dest`` (a new SQLite file path, or a
    ``postgresql://`` URL of an empty database). Returns {"dest", "events", "method"}."""
    from . import LabelStore, is_postgres_url, open_store

    store = open_store(src)
    if is_postgres_url(str(dest)):
        out = open_store(str(dest))
        _refuse_if_used(out, str(dest))
        return {"dest": out.where, "events": _copy_tables(store, out), "method": "table copy"}
    dest = Path(dest)
    if dest.exists() and dest.stat().st_size > 0:
        raise FileExistsError(f"backup destination {dest} already exists; a backup never overwrites a file: "
                              "choose a new name")
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"backup folder {dest.parent} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".partial")
    os.close(fd)
    try:
        if isinstance(store, LabelStore):
            method = "sqlite online backup"
            _sqlite_backup(store, Path(tmp))
            n = int(sqlite3.connect(tmp).execute("SELECT COUNT(*) FROM events").fetchone()[0])
        else:
            method = "table copy"
            os.unlink(tmp)
            out = LabelStore(tmp)
            n = _copy_tables(store, out)
            out.close()
            for suffix in ("-wal", "-shm", "-priority"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp + suffix)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return {"dest": str(dest), "events": n, "method": method}


def _sqlite_backup(store, tmp: Path) -> None:
    """SQLite's online backup API into ``tmp``, then the copy is made a plain rollback-journal file."""
    src = sqlite3.connect(store.path, timeout=store.timeout)
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst, pages=1024, sleep=0.005)       # in steps, so writers are not held up for long
        ok = dst.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise OSError(f"the backup of {store.where} did not check out ({ok}); the source may be damaged: "
                          f"try `sqlite3 {store.where} .recover` and keep the original")
        dst.execute("PRAGMA journal_mode = DELETE")
    finally:
        dst.close()
        src.close()


def _refuse_if_used(out: BaseLabelStore, name: str) -> None:
    if len(out):
        raise FileExistsError(f"backup destination {name} already holds labels; a backup never writes into a used "
                              "store: give an empty database")


def _copy_tables(src: BaseLabelStore, out: BaseLabelStore) -> int:
    """Every table of ``src`` (one consistent snapshot) into the empty store ``out``; returns the events copied."""
    _refuse_if_used(out, out.where)
    copied = 0
    with src._snapshot() as read:
        for table, cols in TABLES.items():
            names = ", ".join(cols)
            marks = ", ".join("?" * len(cols))
            conflict = " ON CONFLICT (key) DO UPDATE SET value = excluded.value" if table == "meta" else ""
            rows = read(f"SELECT {names} FROM {table} ORDER BY 1")
            for a in range(0, max(len(rows), 1), ROWS_PER_PART):
                part = rows[a:a + ROWS_PER_PART]
                if part:
                    out._write(lambda c, p=part: c.executemany(
                        f"INSERT INTO {table} ({names}) VALUES ({marks}){conflict}", p), bulk=True)
            if table == "events":
                copied = len(rows)
    out._write(out._after_copy, bulk=True)
    return copied
