"""The label store's logic, shared by the SQLite and PostgreSQL backends.

Every person's label (human, review, import) is an appended event; nothing is updated or deleted: undo
appends a retraction that points at the events it cancels, and current labels are derived (the latest
live event per item, a review label preferred over any other). A model's propagated labels are stored
as one versioned snapshot per round (:mod:`.snapshots`, schema 3): the store grows by the items whose
label changed, not by N rows per round, and readers get the same frames the events gave.

A backend supplies the transactions (``_write``: one serialized write transaction, retried on lock
contention; ``_read``; ``_read_all``: several reads in one snapshot), the batch numbering
(``_next_batch``), the events' seq counter (``_reserve_seq``), and the priority signal that lets a
person's label go before the next part of a bulk write (``_yield_to_people``), also across processes.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from .errors import ClaimLostError, StoreMismatchError
from .snapshots import SnapshotMixin
from .team import TeamMixin

SOURCES = ("human", "review", "propagated", "import")
PEOPLE = ("human", "review")
COLUMNS = ["id", "label", "annotator", "source", "ts", "confidence", "model_version"]
IDS_PER_QUERY = 900     # bound parameters per IN (...) list: under SQLite's oldest limit of 999


class Tx(Protocol):
    """What a write transaction offers the shared logic (a sqlite3 connection satisfies it)."""

    def execute(self, sql: str, params: Sequence = ...) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence]) -> Any: ...


def marks(n: int) -> str:
    return ",".join("?" * n)


def chunks(ids: list[int], size: int = IDS_PER_QUERY) -> Iterable[list[int]]:
    for a in range(0, len(ids), size):
        yield ids[a:a + size]


def inferred(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with each object column's dtype inferred again, as a frame built from the rows would have
    it (a concat of a string column with an all-None one stays object otherwise)."""
    return pd.DataFrame({c: df[c].reset_index(drop=True).infer_objects() if df[c].dtype == object
                         else df[c].to_numpy() for c in df.columns})


class BaseLabelStore(SnapshotMixin, TeamMixin):
    """Append-only label events and propagated snapshots; see the module docstring. Subclasses: ``LabelStore`` (SQLite),
    ``PgLabelStore`` (PostgreSQL)."""

    where: str                   # the store named in messages (a path, or a URL without its password)
    target: str                  # what open_store takes to open this store again (path or URL)
    _local: threading.local      # this thread's connection, as .conn
    NULL_SAFE_EQ = "IS"          # SQL for "equal, NULL equal to NULL"
    PART_S = 0.05                # append_bulk: seconds one part may hold the write lock (at most `rows` rows)

    # -- backend hooks -------------------------------------------------------------------------
    def _write(self, fn: Callable[[Tx], Any], *, bulk: bool = False) -> Any:
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        raise NotImplementedError

    def _next_batch(self, c: Tx) -> int:
        raise NotImplementedError

    def _already_written(self, c: Tx, batch: int) -> bool:
        """Whether an earlier attempt of this very write committed ``batch`` before its acknowledgement
        was lost (a retried write must not append its events twice). SQLite never loses one that way."""
        return False

    def _yield_to_people(self) -> None:
        """Before each part of a bulk write: wait while a person's label is being written."""

    def _snapshot(self) -> contextlib.AbstractContextManager[Callable[[str], list[tuple]]]:
        """A read function over one consistent snapshot of the store (for backups)."""
        raise NotImplementedError

    def _after_copy(self, c: Tx) -> None:
        """After rows were copied in with their own ids (backup): bring id counters past them."""

    def person_writing(self) -> contextlib.AbstractContextManager[None]:
        """A context in which bulk writers (any process) hold back their next part; every non-bulk
        write runs inside it."""
        raise NotImplementedError

    def close(self) -> None:
        """Close this thread's connection (a later call opens a new one)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- metadata ------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self._read("SELECT key, value FROM meta"))

    @property
    def schema_version(self) -> str:
        return self.meta().get("schema_version", "1")

    @staticmethod
    def _set_meta(c: Tx, key: str, value: str) -> None:
        c.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                  (key, value))

    @property
    def _legacy(self) -> bool:
        """A store of schema 1 or 2 opened only for reading (so not migrated): its propagated labels are
        still events, read the old way."""
        v = getattr(self, "_legacy_v", None)
        if v is None:
            try:
                v = bool(self.read_only) and int(self.schema_version) < 3
            except ValueError:
                v = False
            self._legacy_v = v
        return v

    def bind(self, fingerprint: str, n_items: int, classes: Sequence[str]) -> None:
        """Tie the store to one dataset; refuse a store made for other items or incompatible classes."""
        classes = [str(c) for c in classes]

        def check(c: Tx) -> None:
            meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
            if "fingerprint" in meta and meta["fingerprint"] != fingerprint:
                raise StoreMismatchError(
                    f"label store {self.where} belongs to another dataset ({meta.get('n_items')} items, "
                    f"fingerprint {meta['fingerprint'][:12]}) but this session has {n_items} items "
                    f"(fingerprint {fingerprint[:12]}); open the matching data or choose a new store path")
            if "classes" in meta:
                old = json.loads(meta["classes"])
                used = {r[0] for r in c.execute("SELECT DISTINCT label FROM events WHERE label IS NOT NULL")}
                row = c.execute("SELECT value FROM meta WHERE key = 'propagated_labels'").fetchone()
                used |= set(json.loads(row[0])) if row else set()
                missing = sorted(used - set(classes))
                if missing:
                    raise StoreMismatchError(
                        f"label store {self.where} holds labels {missing} that are not among the classes "
                        f"{classes}; add them to classes (the store had {old})")
            if meta.get("fingerprint") == fingerprint and meta.get("classes") == json.dumps(classes) \
                    and meta.get("n_items") == str(int(n_items)):
                return                   # already bound so: no write (a read-only store still opens)
            self._set_meta(c, "fingerprint", fingerprint)
            self._set_meta(c, "n_items", str(int(n_items)))
            self._set_meta(c, "classes", json.dumps(classes))

        meta = self.meta()
        if meta.get("fingerprint") == fingerprint and meta.get("classes") == json.dumps(classes) \
                and meta.get("n_items") == str(int(n_items)):
            return
        self._write(check)

    # -- writes --------------------------------------------------------------------------------
    def append(self, items: Iterable[int], labels: Iterable[str], *, annotator: str | None = None,
               source: str = "human", confidence: Iterable[float] | None = None,
               model_version: str | None = None, claimed: bool = False) -> int:
        """Append one label event per item in a single transaction; returns the batch id.

        A human or review label consumes the annotator's claims on its items. ``claimed=True``: the
        labels come from a page working on claimed items; if another annotator now holds the claim on
        one of them (this annotator's lease ran out and the item went to someone else), nothing is
        written and ``ClaimLostError`` names the holder."""
        items, labels, conf = self._checked(items, labels, confidence, source)
        if source == "propagated":         # a model's labels: one snapshot version, not events
            return self.write_propagated(items, labels, conf, model_version=model_version, annotator=annotator)
        return self._insert(items, labels, conf, annotator, source, model_version, bulk=False, claimed=claimed)

    def append_bulk(self, items: Sequence[int], labels: Sequence[str], *, rows: int = 5_000,
                    annotator: str | None = None, source: str = "propagated",
                    confidence: Sequence[float] | None = None, model_version: str | None = None) -> int:
        """``append`` in transactions of ``rows`` events (each its own batch), for labels that need not be
        atomic, such as a model's labels for every item: one transaction of 200k rows held the write lock
        for 2.5 s, and a person's label waited that long to commit. Parts hold the lock about ``PART_S``
        (sized from the previous part's time, at most ``rows`` rows). Everything is checked before the
        first part is written; before each part it lets people's labels go first, from this process or
        any other process on the store (``_yield_to_people``). Returns the last batch id (0 for nothing).

        ``source="propagated"`` writes one snapshot version instead (``write_propagated``: one transaction
        of the changed items only)."""
        items, labels, conf = self._checked(items, labels, confidence, source)
        if source == "propagated":
            return self.write_propagated(items, labels, conf, model_version=model_version, annotator=annotator)
        rows, batch, a = max(1, int(rows)), 0, 0
        size = min(rows, 1_000)
        while a < len(items):
            self._yield_to_people()
            t = time.perf_counter()
            batch = self._insert(items[a:a + size], labels[a:a + size], conf[a:a + size], annotator, source,
                                 model_version, bulk=True)
            a += size
            took = time.perf_counter() - t
            # parts sized to hold the write lock about PART_S: a label arriving mid-part waits at most that
            size = max(1, min(rows, max(100, int(size * self.PART_S / max(took, 1e-4)))))
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
                source: str, model_version: str | None, bulk: bool, claimed: bool = False) -> int:
        """Write checked rows as one batch in one transaction; returns the batch id (0 for no rows)."""
        ts = time.time()

        def insert(c: Tx) -> int:
            # the claim check's read goes out with the batch number's (PostgreSQL: one round trip)
            asked = self._ask_claims(c, items, ts) if claimed else []
            batch = self._next_batch(c)
            if self._already_written(c, batch):
                return batch
            if claimed:
                self._check_claims_held(asked, annotator)
            c.executemany(
                "INSERT INTO events (item, label, annotator, source, confidence, model_version, batch, ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(i, lab, annotator, source, cf, model_version, batch, ts)
                 for i, lab, cf in zip(items, labels, conf)])
            if source in PEOPLE and annotator is not None:
                self._consume_claims(c, annotator, items)
            return batch

        return self._write(insert, bulk=bulk) if items else 0

    @staticmethod
    def _ask_claims(c: Tx, items: list[int], now: float) -> list[Any]:
        """Send the reads of the live claims on ``items`` (read by `_check_claims_held`)."""
        return [c.execute(f"SELECT item, annotator FROM claims WHERE expires > ? AND item IN ({marks(len(part))})",
                          [now, *part]) for part in chunks(sorted(set(items)))]

    @staticmethod
    def _check_claims_held(asked: list[Any], annotator: str | None) -> None:
        """Raise ClaimLostError if another annotator holds a live claim on one of the items asked about
        (`_ask_claims`) that ``annotator`` does not hold too (with overlap several annotators hold one item)."""
        for cur in asked:
            rows = cur.fetchall()
            mine = {r[0] for r in rows if r[1] == annotator}
            lost = sorted({(r[0], r[1]) for r in rows if r[1] != annotator and r[0] not in mine})
            if lost:
                item, holder = lost[0]
                more = f" (and {len(lost) - 1} more)" if len(lost) > 1 else ""
                raise ClaimLostError(f"item {item} is now claimed by {holder!r}{more}: {annotator!r}'s claim on it "
                                     "ran out; the label was not written")

    def _retract_rows(self, c: Tx, cond: str, params: list) -> list[tuple]:
        row = c.execute(
            f"SELECT MAX(e.batch) FROM events e WHERE {cond} AND e.label IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM events r WHERE r.retracts = e.seq)", params).fetchone()
        if row is None or row[0] is None:
            return []
        return c.execute(
            f"SELECT e.seq, e.item, e.label, e.annotator, e.source, e.ts FROM events e WHERE e.batch = ? "
            f"AND {cond} AND e.label IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM events r WHERE r.retracts = e.seq) ORDER BY e.seq", [row[0], *params]).fetchall()

    def undo(self, annotator: str | None = None, sources: Sequence[str] = PEOPLE) -> pd.DataFrame:
        """Retract the latest not-yet-retracted batch (of `annotator`, if given); returns what was undone.

        Propagated labels are not undone: a new model round replaces them.
        """
        src = tuple(sources)
        if "propagated" in src or any(x not in SOURCES for x in src):
            raise ValueError(f"undo takes sources among {[x for x in SOURCES if x != 'propagated']}, got {src}")

        def retract(c: Tx) -> list[tuple]:
            cond, params = f"e.source IN ({marks(len(src))})", list(src)
            if annotator is not None:
                cond += f" AND e.annotator {self.NULL_SAFE_EQ} ?"
                params.append(annotator)
            batch, ts = self._next_batch(c), time.time()
            if self._already_written(c, batch):
                return c.execute("SELECT e.seq, e.item, e.label, e.annotator, e.source, e.ts FROM events e JOIN "
                                 "events r ON r.retracts = e.seq WHERE r.batch = ? ORDER BY e.seq", (batch,)).fetchall()
            rows = self._retract_rows(c, cond, params)
            if rows:
                c.executemany("INSERT INTO events (item, label, annotator, source, batch, retracts, ts)"
                              " VALUES (?, NULL, ?, ?, ?, ?, ?)",
                              [(r[1], annotator, r[4], batch, r[0], ts) for r in rows])
            return rows

        rows = self._write(retract)
        return pd.DataFrame([r[1:] for r in rows], columns=["id", "label", "annotator", "source", "ts"])

    # -- reads ---------------------------------------------------------------------------------
    @staticmethod
    def _live(sources: Sequence[str]) -> tuple[str, list]:
        src = tuple(sources)
        bad = [s for s in src if s not in SOURCES]
        if bad:
            raise ValueError(f"unknown source(s) {bad}; expected some of {SOURCES}")
        sql = (f"SELECT e.seq, e.item, e.label, e.annotator, e.source, e.ts, e.confidence, e.model_version "
               f"FROM events e WHERE e.source IN ({marks(len(src))}) AND e.label IS NOT NULL AND NOT EXISTS "
               f"(SELECT 1 FROM events r WHERE r.retracts = e.seq)")
        return sql, list(src)

    def _split(self, sources: Sequence[str]) -> tuple[tuple[str, ...], bool]:
        """(the sources read from events, whether propagated labels come from the snapshots)."""
        src = tuple(sources)
        self._live(src)                        # checks the names
        snap = "propagated" in src and not self._legacy
        return tuple(x for x in src if not (snap and x == "propagated")), snap

    def events(self, sources: Sequence[str] = SOURCES, include_retracted: bool = False) -> pd.DataFrame:
        """Every live label event in order (all events, retractions included, if asked). A propagated
        version appears as one row per item it labeled, all with the version's seq and batch."""
        if include_retracted:
            rows = self._read("SELECT seq, item, label, annotator, source, ts, confidence, model_version, "
                              "batch, retracts FROM events ORDER BY seq")
            out = pd.DataFrame(rows, columns=["seq", "id", "label", "annotator", "source", "ts",
                                              "confidence", "model_version", "batch", "retracts"])
            return out if self._legacy else self._by_seq(out, self._propagated_events())
        ev_src, snap = self._split(sources)
        out = pd.DataFrame(columns=["seq", *COLUMNS])
        if ev_src:
            sql, params = self._live(ev_src)
            out = pd.DataFrame(self._read(sql + " ORDER BY e.seq", params), columns=["seq", *COLUMNS])
        return self._by_seq(out, self._propagated_events()[["seq", *COLUMNS]]) if snap else out

    @staticmethod
    def _by_seq(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
        if b.empty:
            return a
        if a.empty:
            return b.reset_index(drop=True)
        return inferred(pd.concat([a, b], ignore_index=True).sort_values("seq", kind="stable", ignore_index=True))

    def current(self, sources: Sequence[str] = PEOPLE, ids: Iterable[int] | None = None) -> pd.DataFrame:
        """The current label of each item: its latest live event among `sources`, except that a review
        label (a lead's resolution) wins over other sources whatever their order. A propagated label
        counts as written at its version's place among the events.

        ``ids``: only these items (a page of a grid), read through the item indexes. Without it every
        labeled item is read (the propagated ones from the decoded snapshots, not row by row)."""
        if ids is not None:
            arr = ids if isinstance(ids, np.ndarray) else np.fromiter((int(i) for i in ids), dtype=np.int64)
            ids = np.unique(arr.astype(np.int64)).tolist()
            parts = [self._current_of(sources, part) for part in chunks(ids)] or [self._current_of(sources, [])]
            return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        return self._current_of(sources, None)

    def _current_of(self, sources: Sequence[str], ids: list[int] | None) -> pd.DataFrame:
        if ids is not None and not ids:
            return pd.DataFrame([], columns=COLUMNS).astype({"id": "int64"})
        extra = [] if ids is None else ids
        ev_src, snap = self._split(sources)

        def only(col: str) -> str:      # the SQL restricting `col` to the ids asked, if any
            return "" if ids is None else f" AND {col} IN ({marks(len(ids))})"

        if snap and not ev_src:         # a model's labels only: from the snapshots
            p = self._propagated_frame(ids)
            p["annotator"] = None
            return p[COLUMNS]
        if tuple(sources) == ("propagated",):  # a store of schema < 3 opened read-only: its derived table
            rows = self._read("SELECT item, label, NULL, 'propagated', ts, confidence, model_version "
                              f"FROM propagated_latest WHERE 1 = 1{only('item')} ORDER BY item", extra)
            return pd.DataFrame(rows, columns=COLUMNS).astype({"id": "int64"})
        sql, params = self._live(ev_src)
        sql += only("e.item")
        rows = self._read(
            f"SELECT seq, item, label, annotator, source, ts, confidence, model_version FROM "
            f"(SELECT l.*, ROW_NUMBER() OVER (PARTITION BY item ORDER BY "
            f"CASE WHEN source = 'review' THEN 1 ELSE 0 END DESC, seq DESC) AS rn FROM ({sql}) AS l) AS t "
            f"WHERE rn = 1 ORDER BY item", params + extra)
        ev = pd.DataFrame(rows, columns=["seq", *COLUMNS]).astype({"id": "int64"})
        if snap:                        # people's labels and a model's: the latest, a review first
            both = pd.concat([ev, self._propagated_frame(ids)], ignore_index=True)
            both["_review"] = both["source"] == "review"
            ev = inferred(both.sort_values(["id", "_review", "seq"], ascending=[True, False, False], kind="stable")
                          .drop_duplicates("id"))
        return ev[COLUMNS].reset_index(drop=True)

    # -- exclusions (additive, for the Inspect panel: items kept out of training) -------------------
    def set_excluded(self, items: Iterable[int], excluded: bool = True, *, annotator: str | None = None,
                     reason: str | None = None) -> None:
        """Append exclusion events (latest per item wins; nothing is deleted), committed before returning.
        Excluding an item also ends every annotator's claim on it (team pages; ``TeamMixin``)."""
        rows = [(int(i), int(bool(excluded)), annotator, reason, time.time()) for i in items]

        def write(c: Tx) -> None:
            c.executemany("INSERT INTO exclusions (item, excluded, annotator, reason, ts) VALUES (?, ?, ?, ?, ?)", rows)
            if excluded:
                self._drop_claims(c, [r[0] for r in rows])

        if rows:
            self._write(write)

    def excluded(self) -> list[int]:
        """Items currently excluded from training, sorted."""
        rows = self._read("SELECT item FROM (SELECT item, excluded, ROW_NUMBER() OVER (PARTITION BY item ORDER BY "
                          "seq DESC) AS rn FROM exclusions) AS t WHERE rn = 1 AND excluded = 1 ORDER BY item")
        return [int(r[0]) for r in rows]

    def agreement(self) -> pd.DataFrame:
        """Per item labeled by people: annotators, majority label and the fraction that agree with it."""
        ev = self.events(PEOPLE)
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
        ev = self.events(PEOPLE)
        if ev.empty:
            return pd.DataFrame(columns=["annotator", "items"])
        per = ev.groupby("annotator", dropna=False)["id"].nunique().rename("items").reset_index()
        return per.sort_values("items", ascending=False, ignore_index=True)

    def __len__(self) -> int:
        """Label events, counting each item of each propagated version as one (as the events did)."""
        n = int(self._read("SELECT COUNT(*) FROM events")[0][0])
        return n if self._legacy else n + self._n_propagated()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r}, events={len(self)})"
