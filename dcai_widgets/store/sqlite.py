"""LabelStore: the label store in one SQLite file (WAL), the embedded default.

Several processes may write one file at once (WAL; every write is one ``BEGIN IMMEDIATE`` transaction,
retried while another writer holds the lock, for at most ``timeout`` seconds in all), and a write is
committed with synchronous=FULL before the call returns, so an acknowledged label survives a crash.
Failures are reported in words a person can act on: a long lock (``StoreBusyError``), a full disk
(``StoreFullError``), a read-only file or folder (``StoreReadOnlyError``; reading still works), a
damaged file (``StoreDamagedError``, which points at recovery and never suggests deleting it).
"""
from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .base import BaseLabelStore
from .errors import (NotAStoreError, StoreBusyError, StoreDamagedError, StoreFullError, StoreReadOnlyError,
                     StoreVersionError, busy_message, damaged_message, full_message, read_only_message)
from .priority import PrioritySignal
from .schema import SCHEMA_VERSION, SQLITE_DDL, plan_migration

HEADER = b"SQLite format 3\x00"
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26


def _code(e: sqlite3.Error) -> int:
    return int(getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF


def statements(ddl: str) -> list[str]:
    return [s.strip() for s in ddl.split(";") if s.strip()]


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that only reads ``path``: mode=ro reads a WAL store when its -shm can be opened;
    immutable=1 when even that is impossible (a folder nobody may write: no process can be writing it)."""
    uri = Path(path).resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)


class LabelStore(BaseLabelStore):
    """Append-only label events in one SQLite file; see the module docstring for the guarantees.

    ``timeout``: the longest a write waits for another writer's lock, in seconds, retries included,
    before ``StoreBusyError`` (before: up to about 10 minutes of retries with the defaults).
    ``priority=False`` turns the cross-process priority signal off (for measuring what it buys)."""

    def __init__(self, path: str | os.PathLike, *, timeout: float = 10.0, priority: bool = True):
        path = Path(path)
        if path.exists() and path.is_dir():
            raise ValueError(f"store path {str(path)!r} is a directory; give a file path such as 'labels.db'")
        if not path.parent.exists():
            raise ValueError(f"store folder {str(path.parent)!r} does not exist; create it or choose another path")
        self.path = path
        self.where = self.target = str(path)
        self.timeout = float(timeout)
        self.read_only = False
        self._ro_reason = ""
        self._local = threading.local()
        self._waiting = 0                   # this process's people's writes in progress
        self._waiting_lock = threading.Lock()
        self.priority = PrioritySignal(f"{path}-priority") if priority else None
        self._check_header()
        self._open()

    # -- opening -------------------------------------------------------------------------------
    def _check_header(self) -> None:
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(HEADER))
        except FileNotFoundError:
            return
        except OSError as e:
            raise NotAStoreError(f"label store {self.where} cannot be read ({e.strerror})") from e
        if head and head != HEADER:
            raise NotAStoreError(f"{self.where!r} is not a dcai-widgets label store (it is not an SQLite file; "
                                 "it was not changed); choose another store path")

    def _open(self) -> None:
        """Create or migrate the tables; fall back to reading only when the file cannot be written."""
        try:
            self._conn()
            state = self._schema_state()
            if state != "current":
                self._write(self._init)
        except (StoreReadOnlyError, PermissionError) as e:
            self._become_read_only(e)
        except sqlite3.OperationalError as e:
            if _code(e) not in (_READONLY, _CANTOPEN):
                self._raise(e)
            self._become_read_only(e)
        except sqlite3.DatabaseError as e:
            self._raise(e)

    def _schema_state(self) -> str:
        c = self._conn()
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables - {"sqlite_sequence"}:
            return "empty"
        if "events" not in tables:
            raise NotAStoreError(f"{self.where!r} is an SQLite database of another program (tables: "
                                 f"{', '.join(sorted(tables)[:5])}), not a dcai-widgets label store; it was not "
                                 "changed; choose another store path")
        found = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if "meta" in tables else None
        try:
            steps = plan_migration(found[0] if found else None, True)
        except ValueError as e:
            raise StoreVersionError(f"label store {self.where}: {e}; open it with a newer dcai-widgets") from e
        if steps:
            return "old"
        return "derived-behind" if self._current_behind(c) else "current"

    def _init(self, c: sqlite3.Connection) -> None:
        """Inside one write transaction: create missing tables, migrate, refill derived rows."""
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        found = None
        if "meta" in tables:
            row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            found = row[0] if row else None
        steps = plan_migration(found, "events" in tables)
        for stmt in statements(SQLITE_DDL):
            c.execute(stmt)
        if steps:
            self._migrate_propagated(c)
            self._set_meta(c, "migrated", f"{' '.join(steps)} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
        self._set_meta(c, "schema_version", SCHEMA_VERSION)
        self._rebuild_propagated_if_missing(c)

    def _become_read_only(self, why: BaseException) -> None:
        """Reopen for reading only (reads work; every write says why it cannot be saved)."""
        self.close()
        if not self.path.exists():
            raise StoreReadOnlyError(errno.EROFS, f"label store {self.where} cannot be created: its folder cannot be "
                                                  f"written ({why}); choose a writable folder")
        self.read_only, self._ro_reason = True, self._why_read_only(why)
        try:
            self._conn().execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as e:
            self._raise(e)

    def _why_read_only(self, why: object) -> str:
        try:
            with open(self.path, "r+b"):
                pass
        except OSError as e:
            return f"the file cannot be written: {e.strerror}"
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".dcai-write-test-")
            os.close(fd)
            os.unlink(tmp)
        except OSError as e:
            return (f"its folder cannot be written ({e.strerror}); SQLite needs to create "
                    f"{self.path.name}-wal and -shm beside it")
        return f"SQLite said: {why}"

    # -- connections ---------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self.read_only:
            conn = connect_read_only(self.path)
        else:
            conn = sqlite3.connect(self.path, timeout=0.02, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 20")       # short: _try_write polls finely until timeout
            mode = self._journal_wal(conn)
            if str(mode).lower() != "wal":
                conn.close()
                raise ValueError(f"could not put {self.path} in WAL mode (got {mode}); use a local disk")
            conn.execute("PRAGMA synchronous = FULL")
        self._local.conn = conn
        return conn

    def _journal_wal(self, conn: sqlite3.Connection) -> str:
        """Put the file in WAL mode. Switching needs a moment of exclusive access: when several processes
        open a new store at once (eight kernels of a team), the others are told "locked", so retry within
        the store's total lock wait."""
        deadline, delay = time.monotonic() + self.timeout, 0.005
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as e:
                if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                    conn.close()
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Callable[[str], list[tuple]]]:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            conn.execute("BEGIN")
            yield lambda sql: conn.execute(sql).fetchall()
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _read_all(self, fn: Callable[[Callable[..., list]], Any]) -> Any:
        """fn(query) with all its queries in one read transaction (one WAL snapshot)."""
        c = self._conn()
        if c.in_transaction:
            return fn(self._read)
        c.execute("BEGIN")
        try:
            return fn(self._read)
        finally:
            self._rollback(c)

    # -- transactions --------------------------------------------------------------------------
    def _next_batch(self, c: sqlite3.Connection) -> int:
        return int(c.execute("SELECT COALESCE(MAX(b), 0) FROM (SELECT MAX(batch) AS b FROM events UNION ALL "
                             "SELECT MAX(version) FROM propagated_versions) AS t").fetchone()[0] or 0) + 1

    def _reserve_seq(self, c: sqlite3.Connection) -> int:
        """Take the next number of the events' AUTOINCREMENT counter (sqlite_sequence) for a version."""
        row = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        top = max(int(row[0]) if row else 0,
                  int(c.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]),
                  int(c.execute("SELECT COALESCE(MAX(seq), 0) FROM propagated_versions").fetchone()[0])) + 1
        if row:
            c.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (top,))
        else:
            c.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (top,))
        return top

    def _after_copy(self, c: sqlite3.Connection) -> None:
        """After a table copy: events drawn later come after every copied version."""
        top = int(c.execute("SELECT COALESCE(MAX(seq), 0) FROM propagated_versions").fetchone()[0])
        if top:
            self._reserve_seq(c)

    def _yield_to_people(self) -> None:
        while self._waiting:                # this process's people first
            time.sleep(0.001)
        if self.priority is not None:
            self.priority.wait_for_people()     # ... and every other process's

    def _write(self, fn: Callable[[sqlite3.Connection], Any], *, bulk: bool = False) -> Any:
        """Run fn(conn) in one IMMEDIATE transaction, retrying while another writer holds the lock.
        A person's write (not ``bulk``) raises the priority signal while it waits and writes."""
        if self.read_only:
            raise StoreReadOnlyError(errno.EROFS, read_only_message(self.where, self._ro_reason))
        if bulk:
            return self._try_write(fn)
        with self.person_writing():
            return self._try_write(fn)

    @contextlib.contextmanager
    def person_writing(self) -> Iterator[None]:
        """Raise the priority signal: bulk writers in this and other processes wait before their next part."""
        with self._waiting_lock:
            self._waiting += 1
        try:
            with self.priority.person() if self.priority is not None else contextlib.nullcontext():
                yield
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _try_write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        t0 = time.monotonic()
        delay = 0.001
        while True:
            c = self._conn()
            try:
                c.execute("BEGIN IMMEDIATE")
                result = fn(c)
                c.execute("COMMIT")
                return result
            except sqlite3.OperationalError as e:
                self._rollback(c)
                if _code(e) not in (_BUSY, _LOCKED) and "locked" not in str(e):
                    self._raise(e)
                waited = time.monotonic() - t0
                if waited >= self.timeout:
                    raise StoreBusyError(busy_message(self.where, waited)) from e
                time.sleep(min(delay, max(0.0, self.timeout - waited)))
                delay = min(delay * 2, 0.01)
            except sqlite3.DatabaseError as e:
                self._rollback(c)
                self._raise(e)
            except BaseException:
                self._rollback(c)
                raise

    @staticmethod
    def _rollback(c: sqlite3.Connection) -> None:
        if c.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")

    def _read(self, sql: str, params=()) -> list[tuple]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.OperationalError as e:
            if _code(e) in (_BUSY, _LOCKED):
                raise StoreBusyError(busy_message(self.where, 0.0)) from e
            if self.read_only and "no such table" in str(e):
                return []          # an older store opened read-only cannot be migrated: its new tables are empty
            self._raise(e)
        except sqlite3.DatabaseError as e:
            self._raise(e)

    def _raise(self, e: sqlite3.Error) -> None:
        mapped = self._mapped(e)
        if mapped is e:
            raise e
        raise mapped from e

    def _mapped(self, e: sqlite3.Error) -> Exception:
        """The error to show for an SQLite failure (the original stays attached as the cause)."""
        code, text = _code(e), str(e)
        if code == _FULL or "disk is full" in text:
            return StoreFullError(errno.ENOSPC, full_message(self.where, text))
        if code == _READONLY or "readonly" in text:
            return StoreReadOnlyError(errno.EROFS, read_only_message(self.where, self._why_read_only(text)))
        if code in (_CORRUPT, _NOTADB) or "malformed" in text:
            return StoreDamagedError(damaged_message(self.where, text))
        if code == _IOERR:
            return OSError(errno.EIO, f"label store {self.where}: the disk reported an error (SQLite said: "
                                      f"{text}); the label was NOT saved. Check the disk; do not delete the file")
        return e
