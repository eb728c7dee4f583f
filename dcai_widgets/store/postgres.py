"""PgLabelStore: the label store in a PostgreSQL database (psycopg 3), for a team on several machines.

Same tables and semantics as the SQLite store (append-only events, retractions, propagated snapshot
versions and the derived ``propagated_chunks``, exclusions, registry, claims); only the transactions differ. PostgreSQL lets
writers run side by side, so the writes whose logic reads before it writes (labels with their claims,
undo, claims, registry) take one transaction-level advisory lock and run one at a time, like SQLite's
``BEGIN IMMEDIATE``; a model's bulk parts take another, so they never hold up people's labels. The
cross-process priority signal is a shared advisory lock held while a person's label is written; a bulk
writer checks it (``pg_try_advisory_lock``) before each part. Batch ids come from a sequence.

On the wire (what a team of pages pressing keys costs the server): each write is one psycopg pipeline,
so a person's label with its claim check waits for the server twice (the reads it needs, then COMMIT)
instead of ten times; ``IN (...)`` lists go as one array parameter, so statements keep one text and are
prepared; and a connection whose thread ended serves the next thread (background work runs in a new
thread each time). benchmarks/RESULTS.md, "Team load on PostgreSQL".

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
from psycopg import pq

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


_IN_LIST = re.compile(r"\bIN \(\s*\?(?:\s*,\s*\?)*\s*\)")


@functools.lru_cache(maxsize=512)
def _in_lists(sql: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """``sql`` with each ``IN (?, ..., ?)`` list as ``= ANY(%s)`` and the rest as `pg_sql`, and where
    each list's parameters start and how many there are."""
    out, lists, pos, k = [], [], 0, 0
    for m in _IN_LIST.finditer(sql):
        before = sql[pos:m.start()]
        k += before.count("?")
        n = m.group(0).count("?")
        out.append(before + "= ANY(?)")
        lists.append((k, n))
        k, pos = k + n, m.end()
    out.append(sql[pos:])
    return "".join(out).replace("?", "%s"), tuple(lists)


def pg_query(sql: str, params: Sequence = ()) -> tuple[str, list | None]:
    """The shared SQL and its parameters for psycopg, with every ``IN (?, ..., ?)`` list sent as one
    array parameter (``= ANY(%s)``, the same meaning for these non-NULL values): the statement text no
    longer depends on how many ids are asked, so psycopg caches its parsing and prepares it on the
    server after a few uses, and neither side parses a list of hundreds of placeholders each time
    (most of a claim's CPU before; benchmarks/RESULTS.md)."""
    text, lists = _in_lists(sql)
    params = list(params)
    if not lists:
        return text, params or None
    out, pos = [], 0
    for start, n in lists:
        out += params[pos:start]
        out.append(params[start:start + n])
        pos = start + n
    out += params[pos:]
    return text, out


def masked(url: str) -> str:
    """The URL without its password, for messages and repr."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class _Tx:
    """A psycopg connection inside a transaction, offering the calls the shared logic makes.

    Inside a write the connection is in pipeline mode: statements are sent without waiting, and the
    client waits for the server only where the logic needs a result (a fetch, a rowcount) and at
    COMMIT, so a label's write costs 3 round trips instead of 10 (benchmarks/RESULTS.md)."""

    def __init__(self, conn: psycopg.Connection, pipeline: Any = None):
        self.conn, self.pipeline = conn, pipeline

    def execute(self, sql: str, params: Sequence = ()) -> Any:
        cur = self.conn.execute(*pg_query(sql, params))
        return cur if self.pipeline is None else _Pending(cur, self.pipeline)

    def executemany(self, sql: str, rows: Iterable[Sequence]) -> psycopg.Cursor:
        cur = self.conn.cursor()
        rows = list(rows)
        if rows:
            cur.executemany(pg_sql(sql), rows)
        return cur


def _abandon(conn: psycopg.Connection, pipeline: Any) -> None:
    """Roll back the pipelined transaction after an error (the caller raises it again); a connection
    that broke meanwhile is left to the retry (the server drops its transaction)."""
    with contextlib.suppress(psycopg.Error):
        pipeline.sync()                  # collect what was sent (an aborted pipeline resumes here)
    if not conn.closed and not conn.broken and conn.info.transaction_status != pq.TransactionStatus.IDLE:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")
            pipeline.sync()


class _Pending:
    """A cursor of a pipelined statement: fetching waits for its result (psycopg does that); so does
    ``rowcount``, which psycopg leaves at -1 until the result has come back."""

    def __init__(self, cur: psycopg.Cursor, pipeline: Any):
        self._cur, self._pipeline = cur, pipeline

    @property
    def rowcount(self) -> int:
        if self._cur.pgresult is None:
            self._pipeline.sync()
        return self._cur.rowcount

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list:
        return self._cur.fetchall()

    def __iter__(self) -> Iterator:
        return iter(self._cur.fetchall())


class _Idle:
    """Connections of threads that ended, kept (at most ``keep``) for the next thread that needs one.

    A page's background work (claiming the next items, a queue refit) runs in a new thread each time,
    and each thread has its own connection: without this every claim opened a new connection, a new
    server process (fork, authentication, catalog caches) and then closed it again, which cost more
    server CPU than the queries themselves (benchmarks/RESULTS.md)."""

    def __init__(self, keep: int = 4):
        self.keep = int(keep)
        self._conns: list[psycopg.Connection] = []
        self._lock = threading.RLock()

    @staticmethod
    def _usable(conn: psycopg.Connection) -> bool:
        return (not conn.closed and not conn.broken and conn._pipeline is None
                and conn.info.transaction_status == pq.TransactionStatus.IDLE)

    def put(self, conn: psycopg.Connection) -> None:
        if self._usable(conn):
            with self._lock:
                if len(self._conns) < self.keep:
                    self._conns.append(conn)
                    return
        conn.close()

    def take(self) -> psycopg.Connection | None:
        with self._lock:
            while self._conns:
                conn = self._conns.pop()
                if self._usable(conn):
                    return conn
                conn.close()
        return None

    def clear(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


class _ThreadConn:
    """Lives in a thread's ``threading.local`` beside its connection: when the thread ends and its local
    goes, the connection goes back to the store's `_Idle` instead of being closed."""

    def __init__(self, conn: psycopg.Connection, idle: _Idle):
        self.conn, self.idle = conn, idle

    def __del__(self) -> None:
        try:
            self.idle.put(self.conn)
        except Exception:  # interpreter shutdown, a connection already gone: nothing to keep
            pass


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
        self._idle = _Idle()
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
        """This thread's connection: its own, else one an ended thread left (`_Idle`), else a new one."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._idle.take()
            if conn is None:
                try:
                    conn = psycopg.connect(self.target, autocommit=True, connect_timeout=self.connect_timeout)
                except psycopg.OperationalError as e:
                    if not self._connected:       # never reached: a wrong URL, not a restart; say so now
                        raise StoreUnavailableError(f"cannot open label store {self.where}: {str(e).strip()}") from e
                    raise
            self._local.conn = conn
            self._local.held = _ThreadConn(conn, self._idle)
            self._connected = True
        return conn

    def close(self) -> None:
        """Close this thread's connection and the idle ones (a later call opens a new one)."""
        super().close()
        self._idle.clear()

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
                return fn(lambda sql, params=(): conn.execute(*pg_query(sql, params)).fetchall())

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
            # one pipeline: BEGIN, the priority signal, the lock timeout and the writers' lock go out
            # with the write's first statements, COMMIT with its last; the client waits only where the
            # logic reads a result, and at the end (psycopg's conn.transaction() would add a wait for
            # BEGIN and one for COMMIT)
            with conn.pipeline() as pipeline:
                conn.execute("BEGIN")
                try:
                    if not bulk and self.priority:   # a person writes: bulk writers hold back until COMMIT
                        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (PRIORITY_KEY,))
                    conn.execute(f"SET LOCAL lock_timeout = {max(1, int(self.timeout * 1000))}")
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                    out = fn(_Tx(conn, pipeline))
                except BaseException:
                    _abandon(conn, pipeline)
                    raise
                conn.execute("COMMIT")
            return out

        return self._retrying(run)

    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return self._retrying(lambda conn: conn.execute(*pg_query(sql, params)).fetchall())

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
