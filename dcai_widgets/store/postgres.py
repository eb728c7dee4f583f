"""PgLabelStore: the label store in a PostgreSQL database (psycopg 3), for a team on several machines.

Same tables and semantics as the SQLite store (append-only events, retractions, propagated snapshot
versions and the derived ``propagated_chunks``, exclusions, registry, claims); only the transactions differ. PostgreSQL lets
writers run side by side, so the writes whose logic reads before it writes (labels with their claims,
undo, claims, registry) take one transaction-level advisory lock and run one at a time, like SQLite's
``BEGIN IMMEDIATE``; a model's bulk parts take another, so they never hold up people's labels. The
cross-process priority signal is a shared advisory lock held while a person's label is written; a bulk
writer checks it (``pg_try_advisory_lock``) before each part. Batch ids come from a sequence.

A lost connection (server restarted, network blip) is retried with backoff for up to ``retry_s``
seconds before ``StoreUnavailableError``. A write whose COMMIT was sent but never acknowledged is not
applied twice: its batch id is drawn once, and the retry first looks whether that batch is stored.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors as pge

from .base import BaseLabelStore
from .errors import (StoreBusyError, StoreFullError, StoreReadOnlyError, StoreUnavailableError, StoreVersionError,
                     busy_message, full_message, read_only_message)
from .schema import POSTGRES_DDL, SCHEMA_VERSION, plan_migration
from .sqlite import statements

WRITE_KEY, BULK_KEY, PRIORITY_KEY = 0x6463_6169_0001, 0x6463_6169_0002, 0x6463_6169_0003


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """The shared SQL's ``?`` placeholders as psycopg's ``%s`` (the shared SQL has no literal ? or %)."""
    return sql.replace("?", "%s")


def masked(url: str) -> str:
    """The URL without its password, for messages and repr."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class _Tx:
    """A psycopg connection inside a transaction, offering the calls the shared logic makes."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def execute(self, sql: str, params: Sequence = ()) -> psycopg.Cursor:
        return self.conn.execute(pg_sql(sql), list(params) or None)

    def executemany(self, sql: str, rows: Iterable[Sequence]) -> psycopg.Cursor:
        cur = self.conn.cursor()
        rows = list(rows)
        if rows:
            cur.executemany(pg_sql(sql), rows)
        return cur


class PgLabelStore(BaseLabelStore):
    """Append-only label events in a PostgreSQL database; see the module docstring."""

    NULL_SAFE_EQ = "IS NOT DISTINCT FROM"

    def __init__(self, url: str, *, timeout: float = 10.0, retry_s: float = 30.0, connect_timeout: int = 5,
                 priority: bool = True):
        self.target = url
        self.where = self.path = masked(url)
        self.timeout, self.retry_s, self.connect_timeout = float(timeout), float(retry_s), int(connect_timeout)
        self.read_only, self.priority = False, bool(priority)
        self._local = threading.local()
        self._connected = False
        try:
            self._write(self._init)
        except StoreReadOnlyError as e:       # a role that may only read, or a standby server
            self.read_only, self._ro_reason = True, e

    def _init(self, c: _Tx) -> None:
        """Create missing tables (one process at a time: both advisory locks held) and check the version."""
        c.execute("SELECT pg_advisory_xact_lock(?)", (BULK_KEY,))
        for stmt in statements(POSTGRES_DDL):
            c.execute(stmt)
        row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        has_events = c.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchone()[0]
        try:
            steps = plan_migration(row[0] if row else None, bool(has_events))
        except ValueError as e:
            raise StoreVersionError(f"label store {self.where}: {e}; open it with a newer dcai-widgets") from e
        if steps:
            self._migrate_propagated(c)
            self._set_meta(c, "migrated", f"{' '.join(steps)} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
        self._set_meta(c, "schema_version", SCHEMA_VERSION)
        self._rebuild_propagated_if_missing(c)

    # -- connections ---------------------------------------------------------------------------
    def _conn(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            try:
                conn = psycopg.connect(self.target, autocommit=True, connect_timeout=self.connect_timeout)
            except psycopg.OperationalError as e:
                if not self._connected:       # never reached: a wrong URL, not a restart; say so now
                    raise StoreUnavailableError(f"cannot open label store {self.where}: {str(e).strip()}") from e
                raise
            self._local.conn = conn
            self._connected = True
        return conn

    def _next_batch(self, c: _Tx) -> int:
        """The batch id of the write in progress: drawn once, and kept across its retries."""
        batch = getattr(self._local, "batch", None)
        if batch is None:
            batch = self._local.batch = int(c.execute("SELECT nextval('batches')").fetchone()[0])
        return batch

    def _already_written(self, c: _Tx, batch: int) -> bool:
        if not getattr(self._local, "retried", False):
            return False
        return bool(c.execute("SELECT EXISTS (SELECT 1 FROM events WHERE batch = ?) OR EXISTS "
                              "(SELECT 1 FROM propagated_versions WHERE version = ?)", (batch, batch)).fetchone()[0])

    def _reserve_seq(self, c: _Tx) -> int:
        return int(c.execute("SELECT nextval(pg_get_serial_sequence('events', 'seq'))").fetchone()[0])

    def _read_all(self, fn: Callable[[Callable[..., list]], Any]) -> Any:
        """fn(query) with all its queries in one REPEATABLE READ transaction (one snapshot)."""
        def run(conn: psycopg.Connection) -> Any:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return fn(lambda sql, params=(): conn.execute(pg_sql(sql), list(params) or None).fetchall())

        return self._retrying(run)

    def _yield_to_people(self) -> None:
        """Wait (at most 2 s) while any process holds the people's shared priority lock."""
        if not self.priority:
            return
        t0 = time.monotonic()
        delay = 0.0005

        def free(conn) -> bool:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (PRIORITY_KEY,)).fetchone()[0]
            if got:
                conn.execute("SELECT pg_advisory_unlock(%s)", (PRIORITY_KEY,))
            return bool(got)

        while not self._retrying(free) and time.monotonic() - t0 < 2.0:
            time.sleep(delay)
            delay = min(delay * 2, 0.005)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Callable[[str], list[tuple]]]:
        with psycopg.connect(self.target, autocommit=True, connect_timeout=self.connect_timeout) as conn:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                yield lambda sql: conn.execute(pg_sql(sql)).fetchall()

    def _after_copy(self, c: _Tx) -> None:
        c.execute("SELECT setval(pg_get_serial_sequence('events', 'seq'), GREATEST(COALESCE((SELECT MAX(seq) FROM "
                  "events), 0), COALESCE((SELECT MAX(seq) FROM propagated_versions), 0)) + 1, false)")
        c.execute("SELECT setval(pg_get_serial_sequence('exclusions', 'seq'), "
                  "COALESCE((SELECT MAX(seq) FROM exclusions), 0) + 1, false)")
        c.execute("SELECT setval('batches', GREATEST(COALESCE((SELECT MAX(batch) FROM events), 0), "
                  "COALESCE((SELECT MAX(version) FROM propagated_versions), 0)) + 1, false)")

    @staticmethod
    @contextlib.contextmanager
    def _person(conn: psycopg.Connection) -> Iterator[None]:
        conn.execute("SELECT pg_advisory_lock_shared(%s)", (PRIORITY_KEY,))
        try:
            yield
        finally:
            if not conn.broken and not conn.closed:
                conn.execute("SELECT pg_advisory_unlock_shared(%s)", (PRIORITY_KEY,))

    def person_writing(self) -> contextlib.AbstractContextManager[None]:
        """Raise the priority signal: bulk writers in every process wait before their next part."""
        return self._person(self._conn())

    # -- transactions --------------------------------------------------------------------------
    def _write(self, fn: Callable[[_Tx], Any], *, bulk: bool = False) -> Any:
        """Run fn in one transaction under the writers' advisory lock (``bulk``: the bulk writers' lock),
        waiting at most ``timeout`` s for it; retried on a lost connection."""
        if self.read_only:
            raise self._ro_reason
        key = BULK_KEY if bulk else WRITE_KEY
        self._local.batch, self._local.retried = None, False
        attempts = [0]

        def run(conn: psycopg.Connection) -> Any:
            attempts[0] += 1
            self._local.retried = attempts[0] > 1       # an earlier attempt may have committed
            with contextlib.nullcontext() if bulk or not self.priority else self._person(conn):
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = {max(1, int(self.timeout * 1000))}")
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                    return fn(_Tx(conn))

        return self._retrying(run)

    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return self._retrying(lambda conn: conn.execute(pg_sql(sql), list(params) or None).fetchall())

    def _retrying(self, run: Callable[[psycopg.Connection], Any]) -> Any:
        """run(conn), reconnecting with backoff while the server cannot be reached (up to retry_s)."""
        t0 = time.monotonic()
        delay = 0.05
        while True:
            try:
                return run(self._conn())
            except pge.LockNotAvailable as e:
                raise StoreBusyError(busy_message(self.where, time.monotonic() - t0)) from e
            except pge.DiskFull as e:
                raise StoreFullError(errno.ENOSPC, full_message(self.where, e)) from e
            except (pge.ReadOnlySqlTransaction, pge.InsufficientPrivilege) as e:
                raise StoreReadOnlyError(errno.EROFS, read_only_message(self.where, e, database=True)) from e
            except psycopg.OperationalError as e:
                conn = getattr(self._local, "conn", None)
                lost = conn is None or conn.closed or conn.broken or isinstance(
                    e, (pge.AdminShutdown, pge.CannotConnectNow, pge.CrashShutdown))
                if not lost:
                    raise
                self.close()
                if time.monotonic() - t0 >= self.retry_s:
                    raise StoreUnavailableError(
                        f"label store {self.where}: the PostgreSQL server could not be reached for "
                        f"{self.retry_s:.0f} s ({e}); the label was NOT saved. Check the server and try again") from e
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
