"""store.backup: SQLite's online backup API (WAL content included) and a snapshot table copy for
PostgreSQL (to an SQLite file or another PostgreSQL database)."""
import shutil
import sqlite3

import pandas as pd
import pytest

from dcai_widgets.store import LabelStore, backup, open_store


def test_backup_while_serving_includes_the_labels_still_in_the_wal(tmp_path):
    path = tmp_path / "labels.db"
    s = LabelStore(path)
    s._conn().execute("PRAGMA wal_autocheckpoint = 0")          # as a busy server: nothing checkpointed yet
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM events").fetchone()    # an open reader pins the WAL too
    for i in range(300):
        s.append([i], [f"c{i % 3}"], annotator="ada")
    assert (tmp_path / "labels.db-wal").stat().st_size > 0
    naive = tmp_path / "naive.db"
    shutil.copy(path, naive)                                    # what `cp labels.db` gets: the main file only
    nc = sqlite3.connect(naive)
    has_events = nc.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone()
    assert (nc.execute("SELECT COUNT(*) FROM events").fetchone()[0] if has_events else 0) == 0
    out = backup(path, tmp_path / "copy.db")
    assert out == {"dest": str(tmp_path / "copy.db"), "events": 300, "method": "sqlite online backup"}
    copy = LabelStore(tmp_path / "copy.db")
    assert len(copy) == 300
    pd.testing.assert_frame_equal(copy.current(), s.current())
    reader.execute("COMMIT")
    with pytest.raises(FileExistsError, match="never overwrites"):
        backup(path, tmp_path / "copy.db")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        backup(path, tmp_path / "nope" / "copy.db")


def fill(s):
    s.bind("fp", 100, ["a", "b", "c"])
    s.append([1, 2, 3], ["a", "b", "c"], annotator="ada")
    s.append([2], ["a"], annotator="bo")
    s.undo("bo")
    s.append_bulk(range(50), ["b"] * 50, rows=20, source="propagated", confidence=[0.5] * 50, model_version="m")
    s.append([3], ["a"], annotator="lead", source="review")
    s.set_excluded([7, 8], annotator="ada", reason="dup")
    s.add_annotator("ada", token_hash="h-ada")
    s.add_annotator("lead", role="lead", token_hash="h-lead")
    s.revoke_annotator("bo")
    s.claim("ada", range(10, 20), n=3)


def same(a, b):
    pd.testing.assert_frame_equal(a.events(include_retracted=True), b.events(include_retracted=True),
                                  check_dtype=False)
    for src in [("human", "review"), ("propagated",)]:
        pd.testing.assert_frame_equal(a.current(src), b.current(src), check_dtype=False)
    assert a.excluded() == b.excluded()
    pd.testing.assert_frame_equal(a.annotators(), b.annotators(), check_dtype=False)
    pd.testing.assert_frame_equal(a.claims(), b.claims(), check_dtype=False)
    assert a.meta()["fingerprint"] == b.meta()["fingerprint"]


def test_postgresql_store_backs_up_to_an_sqlite_file(pg_server, tmp_path):
    src = open_store(pg_server.new_database())
    fill(src)
    out = backup(src.target, tmp_path / "pg-copy.db")
    assert out["method"] == "table copy" and out["events"] == len(src)
    copy = LabelStore(tmp_path / "pg-copy.db")
    same(src, copy)
    copy.append([4], ["c"], annotator="ada")                 # the copy is a working store
    assert 4 in set(copy.current()["id"])


def test_any_store_copies_into_an_empty_postgresql_database(pg_server, tmp_path):
    src = LabelStore(tmp_path / "l.db")
    fill(src)
    dest = pg_server.new_database()
    out = backup(src, dest)
    assert out["events"] == len(src)
    copy = open_store(dest)
    same(src, copy)
    last = int(copy.events(include_retracted=True)["seq"].max())
    last_batch = int(copy.events(include_retracted=True)["batch"].max())
    copy.append([5], ["a"], annotator="ada")                 # counters continue after the copied rows
    ev = copy.events(include_retracted=True)
    assert int(ev["seq"].max()) > last and int(ev["batch"].max()) > last_batch
    with pytest.raises(FileExistsError, match="already holds labels"):
        backup(src, dest)


def test_backup_of_a_read_only_store(tmp_path):
    import subprocess

    d = tmp_path / "ro"
    d.mkdir()
    s = LabelStore(d / "l.db")
    s.append(range(50), ["a"] * 50, annotator="ada")
    s.close()
    for f in d.glob("l.db-*"):
        f.unlink()
    if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        out = backup(d / "l.db", tmp_path / "copy.db")         # what the read-only message tells people to do
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=False)
    assert out["events"] == 50
    assert len(LabelStore(tmp_path / "copy.db").current()) == 50


def test_backup_of_a_damaged_store_copies_it_and_says_how_to_recover(tmp_path):
    from dcai_widgets.store import StoreDamagedError

    path = tmp_path / "l.db"
    s = LabelStore(path)
    for k in range(30):
        s.append(range(k * 100, k * 100 + 100), ["abc"] * 100, annotator="ada")
    s.close()
    with open(path, "r+b") as f:
        f.seek(4096 * 5)
        f.write(b"\x5a" * 4096 * 2)
    with pytest.raises(StoreDamagedError, match="recover the labels from the copy") as e:
        backup(path, tmp_path / "copy.db")
    assert "keep the original" in str(e.value)
    assert (tmp_path / "copy.db").exists() and path.exists()
    # the recovery the message describes, with Python's own dump (the sqlite3 command's .dump does the same)
    dump = "\n".join(sqlite3.connect(tmp_path / "copy.db").iterdump())
    recovered = sqlite3.connect(tmp_path / "recovered.db")
    recovered.executescript(dump)
    n = recovered.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert n >= 2000                      # the label events come back (here the damage hit index pages)


def test_backup_stays_the_function_after_a_first_call(tmp_path):
    """The package's `backup` is a function; importing its implementation must not replace it with a module."""
    import dcai_widgets.store as store_pkg
    from dcai_widgets.store import LabelStore

    src = tmp_path / "a.db"
    LabelStore(src).append([0], ["x"], annotator="ada")
    store_pkg.backup(src, tmp_path / "b.db")
    assert callable(store_pkg.backup)
    store_pkg.backup(src, tmp_path / "c.db")
    assert list(LabelStore(tmp_path / "c.db").current(("human",))["id"]) == [0]
