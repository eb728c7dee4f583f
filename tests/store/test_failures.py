"""Failures a person can see, each with a message that says what happened and never suggests giving up
recoverable labels: a long lock, a full disk, a read-only file or folder, a damaged file, a newer
schema, a PostgreSQL restart."""
import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from dcai_widgets.store import (LabelStore, NotAStoreError, StoreBusyError, StoreDamagedError, StoreFullError,
                                StoreReadOnlyError, StoreVersionError, open_store)


@contextlib.contextmanager
def write_lock_held(store):
    """Another client holds the store's write lock (SQLite: a BEGIN IMMEDIATE; PostgreSQL: the writers'
    advisory lock inside an open transaction)."""
    if isinstance(store, LabelStore):
        c = sqlite3.connect(store.path, isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            c.execute("ROLLBACK")
            c.close()
    else:
        import psycopg

        from dcai_widgets.store.postgres import WRITE_KEY

        with psycopg.connect(store.target) as c:       # not autocommit: the lock lasts until rollback
            c.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_KEY,))
            yield
            c.rollback()


def test_a_long_lock_ends_in_a_clear_error_within_the_bound_and_reads_still_work(make_store):
    s = make_store(timeout=0.5)
    s.append([1], ["a"], annotator="ada")
    with write_lock_held(s):
        t = time.monotonic()
        with pytest.raises(StoreBusyError, match="stayed locked.*NOT saved") as err:
            s.append([2], ["b"], annotator="ada")
        waited = time.monotonic() - t
        assert s.where in str(err.value)
        assert isinstance(err.value, TimeoutError)
        assert waited < 30          # bounded (before: retries added up to ~10 minutes)
        assert s.current()["id"].tolist() == [1]               # reading is not blocked
    s.append([2], ["b"], annotator="ada")                     # the lock is gone: writing works again
    assert sorted(s.current()["id"]) == [1, 2]


def test_sqlite_full_database_says_so_and_keeps_earlier_labels(tmp_path):
    s = LabelStore(tmp_path / "l.db")
    s.append([1], ["a"])
    pages = s._conn().execute("PRAGMA page_count").fetchone()[0]
    s._conn().execute(f"PRAGMA max_page_count = {pages + 2}")   # SQLite's own size limit: SQLITE_FULL
    with pytest.raises(StoreFullError, match="disk is full.*NOT saved") as err:
        s.append(range(10_000), ["x" * 50] * 10_000)
    assert isinstance(err.value, OSError) and err.value.errno == 28
    assert s.current()["id"].tolist() == [1]


@pytest.fixture
def tiny_fs():
    """A real 512 KiB filesystem (tmpfs) mounted for the test; skipped where mounting is not allowed."""
    d = Path(tempfile.mkdtemp(prefix="dcai-tinyfs-"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or 'not root'}); the SQLITE_FULL "
                    "mapping is still checked by test_sqlite_full_database_says_so_and_keeps_earlier_labels")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)
    shutil.rmtree(d, ignore_errors=True)


def test_a_really_full_disk_says_so_and_keeps_earlier_labels(tiny_fs):
    s = LabelStore(tiny_fs / "l.db")
    s.append([1], ["a"])
    with pytest.raises(StoreFullError, match="disk is full.*NOT saved"):
        for k in range(200):              # fill the disk with labels until it refuses one
            s.append(range(k * 1000, k * 1000 + 1000), ["y" * 40] * 1000)
    s.close()
    again = LabelStore(tiny_fs / "l.db")
    assert 1 in set(again.current()["id"])


def _chattr(flag: str, path: Path) -> bool:
    r = subprocess.run(["chattr", flag, str(path)], capture_output=True)
    return r.returncode == 0


@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_store_reads_and_says_labels_cannot_be_saved(tmp_path, what):
    """chattr +i makes a file or folder immutable even for root (chmod would not stop root)."""
    d = tmp_path / "ro"
    d.mkdir()
    s = LabelStore(d / "l.db")
    s.append([1, 2], ["a", "b"], annotator="ada")
    s.close()
    for f in d.glob("l.db-*"):
        f.unlink()
    target = d / "l.db" if what == "file" else d
    if not _chattr("+i", target):
        pytest.skip("chattr +i is not supported on this filesystem or for this user")
    try:
        before = (d / "l.db").read_bytes()
        ro = LabelStore(d / "l.db")
        assert ro.current().set_index("id")["label"].to_dict() == {1: "a", 2: "b"}    # reads work
        with pytest.raises(StoreReadOnlyError, match="read-only.*labels cannot be saved.*copy it to a writable") as e:
            ro.append([3], ["c"], annotator="ada")
        assert "choose a new store" not in str(e.value)
        assert ("folder cannot be written" in str(e.value)) == (what == "folder")
        ro.close()
        assert (d / "l.db").read_bytes() == before
        if what == "folder":
            with pytest.raises(StoreReadOnlyError, match="cannot be created.*choose a writable folder"):
                LabelStore(d / "new.db")
    finally:
        _chattr("-i", target)


def _as_nobody(path: str, out: int) -> None:
    """In a forked child: become user nobody, open the store, read, try to write; report on the pipe."""
    text = ""
    try:
        os.setgid(65534)
        os.setuid(65534)
        s = LabelStore(path)
        labels = s.current()["label"].tolist()
        try:
            s.append([9], ["z"])
            msg = "written"
        except StoreReadOnlyError as e:
            msg = str(e)
        text = f"{labels}\n{msg}"
    except BaseException as e:       # noqa: BLE001 - reported to the parent
        text = f"ERR {type(e).__name__}: {e}"
    finally:
        os.write(out, text.encode())
        os._exit(0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_read_only_folder_for_a_non_root_user(tmp_path):
    """A folder the user may not write (permissions, as a non-root user sees them)."""
    d = Path(tempfile.mkdtemp(prefix="dcai-ro-"))
    os.chmod(d, 0o755)
    s = LabelStore(d / "l.db")
    s.append([1], ["a"])
    s.close()
    for f in d.glob("l.db-*"):
        f.unlink()
    os.chmod(d / "l.db", 0o644)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _as_nobody(str(d / "l.db"), w)
    os.close(w)
    os.waitpid(pid, 0)
    text = os.read(r, 65536).decode()
    os.close(r)
    shutil.rmtree(d, ignore_errors=True)
    assert text.startswith("['a']"), text
    assert "read-only" in text and "labels cannot be saved" in text and "copy it to a writable place" in text


def test_damaged_file_says_recoverable_and_is_left_alone(tmp_path):
    path = tmp_path / "l.db"
    s = LabelStore(path)
    s.append(range(3000), ["abc"] * 3000, annotator="ada")
    s.close()
    with open(path, "r+b") as f:
        f.seek(4096 * 3)
        f.write(b"\x5a" * 4096 * 4)
    before = path.read_bytes()
    with pytest.raises(StoreDamagedError) as e:
        LabelStore(path).current()
    msg = str(e.value)
    assert "damaged (SQLite said" in msg and "recover" in msg and "do not delete" in msg
    assert "choose a new store" not in msg
    assert path.read_bytes() == before


def test_not_a_store_and_newer_schema_are_refused_without_changing_the_file(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("my notes\n" * 100)
    with pytest.raises(NotAStoreError, match="not an SQLite file"):
        LabelStore(junk)
    assert junk.read_text() == "my notes\n" * 100
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE recipes (name TEXT)").connection.commit()
    with pytest.raises(NotAStoreError, match="another program.*recipes"):
        LabelStore(other)
    newer = tmp_path / "newer.db"
    LabelStore(newer).append([1], ["a"])
    c = sqlite3.connect(newer)
    c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    c.commit()
    c.close()
    with pytest.raises(StoreVersionError, match="newer"):
        LabelStore(newer)


def test_postgresql_restart_is_survived_with_retries(pg_server):
    s = open_store(pg_server.new_database(), retry_s=60)
    s.append([1], ["a"], annotator="ada")
    pg_server.restart()                               # every connection is dropped
    s.append([2], ["b"], annotator="ada")             # reconnects and writes
    pg_server.stop()                                  # down for a while: the write waits, then lands
    starter = threading.Timer(1.5, pg_server.start)
    starter.start()
    try:
        s.append([3], ["c"], annotator="ada")
    finally:
        starter.join()
    assert sorted(s.current()["id"]) == [1, 2, 3]
    assert len(open_store(s.target).events()) == 3


def test_a_wrong_postgresql_url_fails_at_once_with_the_reason(pg_server):
    from dcai_widgets.store import StoreUnavailableError

    url = pg_server.url("no_such_database")
    t = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="cannot open label store .*no_such_database"):
        open_store(url)
    assert time.monotonic() - t < 20               # no retrying for a store that was never reached


def test_a_postgresql_role_that_may_only_read(pg_server):
    import psycopg

    url = pg_server.new_database()
    s = open_store(url)
    s.append([1], ["a"], annotator="ada")
    db = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reader') THEN "
                  "CREATE ROLE reader LOGIN; END IF; END $$")
        c.execute(f'GRANT CONNECT ON DATABASE "{db}" TO reader')
        c.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
    ro = open_store(url.replace("dcai@", "reader@"))
    assert ro.read_only and ro.current()["label"].tolist() == ["a"]
    with pytest.raises(StoreReadOnlyError, match="read-only.*labels cannot be saved"):
        ro.append([2], ["b"], annotator="ada")


class _CommitThenDrop:
    """A connection whose next transaction commits and then loses the connection before the client
    hears back (what a server restart at the wrong moment does)."""

    def __init__(self, conn):
        self.conn = conn

    def __getattr__(self, name):
        return getattr(self.conn, name)

    @contextlib.contextmanager
    def transaction(self):
        import psycopg

        with self.conn.transaction():
            yield
        self.conn.close()
        raise psycopg.OperationalError("server closed the connection unexpectedly")


@pytest.mark.parametrize("op", ["append", "undo"])
def test_postgresql_write_retried_after_a_lost_acknowledgement_is_applied_once(pg_server, op):
    s = open_store(pg_server.new_database())
    s.append([1, 2], ["a", "b"], annotator="ada")
    real = s._conn

    def once():
        s._conn = real                    # only the first connection of the write drops
        return _CommitThenDrop(real())

    s._conn = once
    if op == "append":
        batch = s.append([3], ["c"], annotator="ada")
        ev = s.events(include_retracted=True)
        assert ev["id"].tolist() == [1, 2, 3] and ev["batch"].iloc[-1] == batch
    else:
        undone = s.undo("ada")
        assert sorted(undone["id"]) == [1, 2]                   # the caller learns what was undone
        ev = s.events(include_retracted=True)
        assert len(ev) == 4 and s.current().empty               # two retractions, not four


def _open_and_label(path: str, who: int) -> None:
    from dcai_widgets.store import LabelStore

    st = LabelStore(path)
    st.append([who], ["a"], annotator=f"p{who}")
    st.close()


def test_many_processes_opening_a_new_store_at_once_all_get_in(tmp_path):
    """Eight kernels of a team open a brand-new file together; switching it to WAL is retried, not refused."""
    import multiprocessing as mp

    from dcai_widgets.store import LabelStore

    path = str(tmp_path / "new.db")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_open_and_label, args=(path, i)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    assert sorted(LabelStore(path).current(("human",))["id"]) == list(range(8))
