"""Copy a label store while it is in use, without losing what is still in SQLite's write-ahead log.

Copying ``labels.db`` with ``cp`` while the app serves misses every label still in ``labels.db-wal``
(0 of 300 in the issue's check). ``backup`` instead:

- SQLite -> SQLite file: SQLite's online backup API (``sqlite3.Connection.backup``), which copies the
  database as readers see it, WAL content included, page by page while other processes keep writing.
- PostgreSQL -> SQLite file, or any store -> a ``postgresql://`` database: copies every table (events
  with their sequence numbers and batches, the propagated versions and their derived table, exclusions, registry, claims, meta) from
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
from .errors import NotAStoreError, StoreDamagedError
from .sqlite import LabelStore, connect_read_only

TABLES = {
    "meta": ("key", "value"),
    "events": ("seq", "item", "label", "annotator", "source", "confidence", "model_version", "batch", "retracts",
               "ts"),
    "propagated_versions": ("version", "seq", "model_version", "annotator", "ts", "n", "n_changed", "members",
                            "changes", "applied"),
    "propagated_chunks": ("chunk", "version", "data"),
    "exclusions": ("seq", "item", "excluded", "annotator", "reason", "ts"),
    "annotators": ("name", "role", "token_hash", "revoked", "created"),
    "claims": ("item", "annotator", "expires"),
}
ROWS_PER_PART = 10_000


def backup(src: str | os.PathLike | BaseLabelStore, dest: str | os.PathLike) -> dict:
    """Copy the label store ``src`` (path, URL or store) to ``dest`` (a new SQLite file path, or a
    ``postgresql://`` URL of an empty database). Returns {"dest", "events", "method"}."""
    from . import is_postgres_url, open_store     # late: the package imports this module

    sqlite_src = not isinstance(src, BaseLabelStore) and not is_postgres_url(str(src))
    if sqlite_src:
        src = Path(src)
        _check_sqlite_source(src)
    store = None if sqlite_src else open_store(src)
    if is_postgres_url(str(dest)):
        store = store if store is not None else open_store(src)
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
    damaged = None
    try:
        if sqlite_src or isinstance(store, LabelStore):
            method = "sqlite online backup"
            damaged = _sqlite_backup(Path(getattr(store, "path", src)), Path(tmp))
            n = _count_events(Path(tmp)) if damaged is None else None
        else:
            method = "table copy"
            os.unlink(tmp)
            out = LabelStore(tmp)
            n = _copy_tables(store, out)
            out.close()
            for suffix in ("-wal", "-shm", "-priority"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp + suffix)
        if sqlite_src or isinstance(store, LabelStore):
            os.chmod(tmp, Path(getattr(store, "path", src)).stat().st_mode & 0o666)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if damaged is not None:
        raise StoreDamagedError(
            f"copied {src} to {dest}, but the store is damaged (SQLite said: {damaged}); keep the original, and "
            f"recover the labels from the copy: `sqlite3 {dest} .dump | sqlite3 recovered.db` (or `.recover` "
            "instead of `.dump` where your sqlite3 has it), then open recovered.db: every label event SQLite can "
            "still read is in it")
    return {"dest": str(dest), "events": n, "method": method}


def _check_sqlite_source(src: Path) -> None:
    if not src.is_file():
        raise FileNotFoundError(f"label store {src} does not exist")
    with open(src, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise NotAStoreError(f"{src} is not an SQLite label store; nothing was copied")


def _count_events(path: Path) -> int:
    c = sqlite3.connect(path)
    try:
        n = int(c.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'propagated_versions'").fetchone():
            n += int(c.execute("SELECT COALESCE(SUM(n), 0) FROM propagated_versions").fetchone()[0])
        return n        # as len(store): each item of a propagated version counts as one event
    finally:
        c.close()


def _sqlite_backup(src_path: Path, tmp: Path) -> str | None:
    """SQLite's online backup API into ``tmp`` (one step: in WAL mode it reads one snapshot while writers
    go on, and is not restarted by their writes), then the copy becomes a plain rollback-journal file.
    Returns None, or what SQLite's check says is wrong with the copy (a damaged source is copied as it is)."""
    try:
        src = sqlite3.connect(src_path, timeout=30.0)
        src.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:       # a read-only file or folder: copy it all the same
        src = connect_read_only(src_path)
    except sqlite3.DatabaseError:          # damaged: its pages are copied as they are, then checked
        pass
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst)
        try:
            ok = dst.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            ok = str(e)
        if ok != "ok":
            lines = ok.splitlines()
            return "; ".join(lines[:3]) + (f"; ... {len(lines) - 3} more problems" if len(lines) > 3 else "")
        dst.execute("PRAGMA journal_mode = DELETE")
        return None
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
                copied += len(rows)
            elif table == "propagated_versions":      # as len(store): each item of a version counts
                copied += sum(int(r[cols.index("n")]) for r in rows)
    out._write(out._after_copy, bulk=True)
    return copied
