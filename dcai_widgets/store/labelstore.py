"""LabelStore: every label is an appended event in SQLite (WAL); current labels are derived.

Nothing is ever updated or deleted: undo appends a retraction that points at the events it cancels.
Several processes may write one file at once (WAL, busy timeout, retries on lock), and a write is
committed with synchronous=FULL before the call returns, so an acknowledged label survives a crash.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

SOURCES = ("human", "review", "propagated", "import")
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item INTEGER NOT NULL,
    label TEXT,
    annotator TEXT,
    source TEXT NOT NULL,
    confidence REAL,
    model_version TEXT,
    batch INTEGER NOT NULL,
    retracts INTEGER,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_events_source_item ON events(source, item, seq);
CREATE INDEX IF NOT EXISTS ix_events_retracts ON events(retracts);
CREATE INDEX IF NOT EXISTS ix_events_batch ON events(batch);
-- derived from events (rebuilt from them when missing): the latest propagated label per item
CREATE TABLE IF NOT EXISTS propagated_latest (
    item INTEGER PRIMARY KEY, seq INTEGER NOT NULL, label TEXT NOT NULL, confidence REAL,
    model_version TEXT, ts REAL NOT NULL
);
"""

_COLUMNS = ["id", "label", "annotator", "source", "ts", "confidence", "model_version"]
_IDS_PER_QUERY = 900     # bound parameters per IN (...) list: under SQLite's oldest limit of 999


class StoreMismatchError(ValueError):
    """The store file was made for another dataset (different items or classes)."""


class LabelStore:
    """Append-only label events in one SQLite file; see the module docstring for the guarantees."""

    def __init__(self, path: str | os.PathLike, *, timeout: float = 30.0, retries: int = 20):
        path = Path(path)
        if path.exists() and path.is_dir():
            raise ValueError(f"store path {str(path)!r} is a directory; give a file path such as 'labels.db'")
        if not path.parent.exists():
            raise ValueError(f"store folder {str(path.parent)!r} does not exist; create it or choose another path")
        self.path = path
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._local = threading.local()
        self._waiting = 0                   # this process's writes in progress; bulk writes let them go first
        self._waiting_lock = threading.Lock()
        try:
            self._write(lambda c: c.executescript(_SCHEMA), begin=False)
            self._write(self._rebuild_propagated_if_missing)
            self._write(lambda c: c.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                            (SCHEMA_VERSION,)))
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{str(path)!r} is not a dcai-widgets label store (SQLite said: {e}); "
                             "choose a new store path") from e

    # -- connections -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ValueError(f"could not put {self.path} in WAL mode (got {mode}); use a local disk")
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
        return conn

    @staticmethod
    def _rebuild_propagated_if_missing(c: sqlite3.Connection) -> None:
        """Refill the derived latest-propagated table from the events if it is behind them."""
        last = c.execute("SELECT MAX(seq) FROM events WHERE source = 'propagated'").fetchone()[0]
        have = c.execute("SELECT MAX(seq) FROM propagated_latest").fetchone()[0]
        if last is not None and last != have:
            c.execute("DELETE FROM propagated_latest")
            c.execute("INSERT INTO propagated_latest SELECT item, seq, label, confidence, model_version, ts FROM "
                      "(SELECT *, ROW_NUMBER() OVER (PARTITION BY item ORDER BY seq DESC) AS rn FROM events "
                      "WHERE source = 'propagated' AND label IS NOT NULL) WHERE rn = 1")

    def _write(self, fn, begin: bool = True, bulk: bool = False):
        """Run fn(conn) in one IMMEDIATE transaction, retrying while another writer holds the lock.
        ``bulk``: one part of an ``append_bulk``, which waits between its parts for this process's other
        writes (counted here) so that a person's label is not kept waiting behind a model's."""
        if bulk:
            return self._try_write(fn, begin)
        with self._waiting_lock:
            self._waiting += 1
        try:
            return self._try_write(fn, begin)
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _try_write(self, fn, begin: bool):
        delay = 0.01
        for attempt in range(self.retries + 1):
            c = self._conn()
            try:
                if begin:
                    c.execute("BEGIN IMMEDIATE")
                result = fn(c)
                if begin:
                    c.execute("COMMIT")
                return result
            except sqlite3.OperationalError as e:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                if attempt == self.retries:
                    raise TimeoutError(f"label store {self.path} stayed locked by another writer") from e
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return self._conn().execute(sql, params).fetchall()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- metadata ------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self._read("SELECT key, value FROM meta"))

    def bind(self, fingerprint: str, n_items: int, classes: Sequence[str]) -> None:
        """Tie the store to one dataset; refuse a store made for other items or incompatible classes."""
        classes = [str(c) for c in classes]

        def check(c: sqlite3.Connection):
            meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
            if "fingerprint" in meta and meta["fingerprint"] != fingerprint:
                raise StoreMismatchError(
                    f"label store {self.path} belongs to another dataset ({meta.get('n_items')} items, "
                    f"fingerprint {meta['fingerprint'][:12]}) but this session has {n_items} items "
                    f"(fingerprint {fingerprint[:12]}); open the matching data or choose a new store path")
            if "classes" in meta:
                old = json.loads(meta["classes"])
                used = {r[0] for r in c.execute("SELECT DISTINCT label FROM events WHERE label IS NOT NULL")}
                missing = sorted(used - set(classes))
                if missing:
                    raise StoreMismatchError(
                        f"label store {self.path} holds labels {missing} that are not among the classes "
                        f"{classes}; add them to classes (the store had {old})")
            c.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
            c.execute("INSERT OR REPLACE INTO meta VALUES ('n_items', ?)", (str(int(n_items)),))
            c.execute("INSERT OR REPLACE INTO meta VALUES ('classes', ?)", (json.dumps(classes),))

        self._write(check)

    # -- writes --------------------------------------------------------------------------------
    def append(self, items: Iterable[int], labels: Iterable[str], *, annotator: str | None = None,
               source: str = "human", confidence: Iterable[float] | None = None,
               model_version: str | None = None) -> int:
        """Append one label event per item in a single transaction; returns the batch id."""
        items, labels, conf = self._checked(items, labels, confidence, source)
        return self._insert(items, labels, conf, annotator, source, model_version, bulk=False)

    def append_bulk(self, items: Sequence[int], labels: Sequence[str], *, rows: int = 5_000,
                    annotator: str | None = None, source: str = "propagated",
                    confidence: Sequence[float] | None = None, model_version: str | None = None) -> int:
        """``append`` in transactions of ``rows`` events (each its own batch), for labels that need not be
        atomic, such as a model's labels for every item: one transaction of 200k rows held the write lock
        for 2.5 s, and a person's label waited that long to commit. Everything is checked before the first
        part is written; before each part it lets this process's other writes go first. Returns the last
        batch id (0 for nothing)."""
        items, labels, conf = self._checked(items, labels, confidence, source)
        rows, batch = max(1, int(rows)), 0
        for a in range(0, len(items), rows):
            while self._waiting:
                time.sleep(0.001)
            batch = self._insert(items[a:a + rows], labels[a:a + rows], conf[a:a + rows], annotator, source,
                                 model_version, bulk=True)
        return batch

    @staticmethod
    def _checked(items: Iterable[int], labels: Iterable[str], confidence: Iterable[float] | None,
                 source: str) -> tuple[list[int], list[str], list[float | None]]:
        """The rows to append as plain lists, or a ValueError naming what is wrong (nothing written)."""
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
        items = [int(i) for i in items]
        labels = [str(lab) for lab in labels]
        if len(items) != len(labels):
            raise ValueError(f"{len(items)} items but {len(labels)} labels; give one label per item")
        conf = [None] * len(items) if confidence is None else [float(x) for x in confidence]
        if len(conf) != len(items):
            raise ValueError(f"{len(items)} items but {len(conf)} confidences")
        return items, labels, conf

    def _insert(self, items: list[int], labels: list[str], conf: list[float | None], annotator: str | None,
                source: str, model_version: str | None, bulk: bool) -> int:
        """Write checked rows as one batch in one transaction; returns the batch id (0 for no rows)."""
        ts = time.time()

        def insert(c: sqlite3.Connection) -> int:
            batch = (c.execute("SELECT COALESCE(MAX(batch), 0) FROM events").fetchone()[0] or 0) + 1
            c.executemany(
                "INSERT INTO events (item, label, annotator, source, confidence, model_version, batch, ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(i, lab, annotator, source, cf, model_version, batch, ts)
                 for i, lab, cf in zip(items, labels, conf)])
            if source == "propagated":
                c.execute("INSERT OR REPLACE INTO propagated_latest SELECT item, seq, label, confidence, "
                          "model_version, ts FROM events WHERE batch = ?", (batch,))
            return batch

        return self._write(insert, bulk=bulk) if items else 0

    def undo(self, annotator: str | None = None, sources: Sequence[str] = ("human", "review")) -> pd.DataFrame:
        """Retract the latest not-yet-retracted batch (of `annotator`, if given); returns what was undone.

        Propagated labels are not undone: a new model round replaces them.
        """
        src = tuple(sources)
        if "propagated" in src or any(x not in SOURCES for x in src):
            raise ValueError(f"undo takes sources among {[x for x in SOURCES if x != 'propagated']}, got {src}")
        q = ",".join("?" * len(src))

        def retract(c: sqlite3.Connection) -> list[tuple]:
            cond, params = f"e.source IN ({q})", list(src)
            if annotator is not None:
                cond += " AND e.annotator IS ?"
                params.append(annotator)
            row = c.execute(
                f"SELECT MAX(e.batch) FROM events e WHERE {cond} AND e.label IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM events r WHERE r.retracts = e.seq)", params).fetchone()
            if row is None or row[0] is None:
                return []
            rows = c.execute(
                f"SELECT e.seq, e.item, e.label, e.annotator, e.source, e.ts FROM events e WHERE e.batch = ? "
                f"AND {cond} AND e.label IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM events r WHERE r.retracts = e.seq)", [row[0], *params]).fetchall()
            batch = c.execute("SELECT COALESCE(MAX(batch), 0) FROM events").fetchone()[0] + 1
            ts = time.time()
            c.executemany(
                "INSERT INTO events (item, label, annotator, source, batch, retracts, ts)"
                " VALUES (?, NULL, ?, ?, ?, ?, ?)",
                [(r[1], annotator, r[4], batch, r[0], ts) for r in rows])
            return rows

        rows = self._write(retract)
        return pd.DataFrame([r[1:] for r in rows], columns=["id", "label", "annotator", "source", "ts"])

    # -- reads ---------------------------------------------------------------------------------
    def _live(self, sources: Sequence[str]) -> tuple[str, list]:
        src = tuple(sources)
        bad = [s for s in src if s not in SOURCES]
        if bad:
            raise ValueError(f"unknown source(s) {bad}; expected some of {SOURCES}")
        q = ",".join("?" * len(src))
        sql = (f"SELECT e.seq, e.item, e.label, e.annotator, e.source, e.ts, e.confidence, e.model_version "
               f"FROM events e WHERE e.source IN ({q}) AND e.label IS NOT NULL AND NOT EXISTS "
               f"(SELECT 1 FROM events r WHERE r.retracts = e.seq)")
        return sql, list(src)

    def events(self, sources: Sequence[str] = SOURCES, include_retracted: bool = False) -> pd.DataFrame:
        """Every live label event in order (all events, retractions included, if asked)."""
        if include_retracted:
            rows = self._read("SELECT seq, item, label, annotator, source, ts, confidence, model_version, "
                              "batch, retracts FROM events ORDER BY seq")
            return pd.DataFrame(rows, columns=["seq", "id", "label", "annotator", "source", "ts",
                                               "confidence", "model_version", "batch", "retracts"])
        sql, params = self._live(sources)
        rows = self._read(sql + " ORDER BY e.seq", params)
        return pd.DataFrame(rows, columns=["seq", *_COLUMNS])

    def current(self, sources: Sequence[str] = ("human", "review"),
                ids: Iterable[int] | None = None) -> pd.DataFrame:
        """The current label of each item: its latest live event among `sources`.

        ``ids``: only these items (a page of a grid), read through the item indexes. Without it every
        labeled item is read: after a model propagated labels to all N items that is N rows (about 3 s
        at 1M), too slow to redo for each page shown."""
        if ids is not None:
            arr = ids if isinstance(ids, np.ndarray) else np.fromiter((int(i) for i in ids), dtype=np.int64)
            ids = np.unique(arr.astype(np.int64)).tolist()
            parts = [self._current_of(sources, ids[i:i + _IDS_PER_QUERY])
                     for i in range(0, len(ids), _IDS_PER_QUERY)] or [self._current_of(sources, [])]
            return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        return self._current_of(sources, None)

    def _current_of(self, sources: Sequence[str], ids: list[int] | None) -> pd.DataFrame:
        if ids is not None and not ids:
            return pd.DataFrame([], columns=_COLUMNS).astype({"id": "int64"})
        extra = [] if ids is None else ids

        def only(col: str) -> str:      # the SQL restricting `col` to the ids asked, if any
            return "" if ids is None else f" AND {col} IN ({','.join('?' * len(ids))})"

        if tuple(sources) == ("propagated",):  # served from the derived table: no scan of every round
            rows = self._read("SELECT item, label, NULL, 'propagated', ts, confidence, model_version "
                              f"FROM propagated_latest WHERE 1{only('item')} ORDER BY item", extra)
            return pd.DataFrame(rows, columns=_COLUMNS).astype({"id": "int64"})
        sql, params = self._live(sources)
        sql += only("e.item")
        rows = self._read(
            f"SELECT item, label, annotator, source, ts, confidence, model_version FROM "
            f"(SELECT *, ROW_NUMBER() OVER (PARTITION BY item ORDER BY seq DESC) AS rn FROM ({sql})) "
            f"WHERE rn = 1 ORDER BY item", params + extra)
        df = pd.DataFrame(rows, columns=_COLUMNS)
        return df.astype({"id": "int64"})

    # -- exclusions (additive, for the Inspect panel: items kept out of training) -------------------
    _EXCL = ("CREATE TABLE IF NOT EXISTS exclusions (seq INTEGER PRIMARY KEY AUTOINCREMENT, item INTEGER NOT NULL, "
             "excluded INTEGER NOT NULL, annotator TEXT, reason TEXT, ts REAL NOT NULL)")

    def set_excluded(self, items: Iterable[int], excluded: bool = True, *, annotator: str | None = None,
                     reason: str | None = None) -> None:
        """Append exclusion events (latest per item wins; nothing is deleted), committed before returning."""
        rows = [(int(i), int(bool(excluded)), annotator, reason, time.time()) for i in items]

        def insert(c: sqlite3.Connection) -> None:
            c.execute(self._EXCL)
            c.executemany("INSERT INTO exclusions (item, excluded, annotator, reason, ts) VALUES (?, ?, ?, ?, ?)",
                          rows)

        if rows:
            self._write(insert)

    def excluded(self) -> list[int]:
        """Items currently excluded from training, sorted."""
        if not self._read("SELECT 1 FROM sqlite_master WHERE name='exclusions'"):
            return []
        rows = self._read("SELECT item FROM (SELECT item, excluded, ROW_NUMBER() OVER (PARTITION BY item ORDER BY "
                          "seq DESC) AS rn FROM exclusions) WHERE rn = 1 AND excluded = 1 ORDER BY item")
        return [int(r[0]) for r in rows]

    def agreement(self) -> pd.DataFrame:
        """Per item labeled by people: annotators, majority label and the fraction that agree with it."""
        ev = self.events(("human", "review"))
        if ev.empty:
            return pd.DataFrame(columns=["id", "n_annotators", "majority", "agreement"])
        last = ev.sort_values("seq").groupby(["id", "annotator"], dropna=False).tail(1)
        out = []
        for item, g in last.groupby("id"):
            counts = g["label"].value_counts()
            out.append((int(item), len(g), counts.index[0], float(counts.iloc[0]) / len(g)))
        return pd.DataFrame(out, columns=["id", "n_annotators", "majority", "agreement"])

    def progress(self) -> pd.DataFrame:
        """Per annotator: how many items they currently label (their own latest live label per item)."""
        ev = self.events(("human", "review"))
        if ev.empty:
            return pd.DataFrame(columns=["annotator", "items"])
        per = ev.groupby("annotator", dropna=False)["id"].nunique().rename("items").reset_index()
        return per.sort_values("items", ascending=False, ignore_index=True)

    def __len__(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM events")[0][0])

    def __repr__(self) -> str:
        return f"LabelStore({str(self.path)!r}, events={len(self)})"
