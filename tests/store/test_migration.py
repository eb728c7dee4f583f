"""Schema versions: a store written by the version-1 code (schema "1") is migrated on open, keeping every
event (its propagated events become snapshot versions, schema 3); a newer schema is refused (see
test_failures). The 2 -> 3 migration itself: test_snapshots.py."""
import sqlite3

from dcai_widgets.store import SCHEMA_VERSION, LabelStore
from dcai_widgets.store.schema import SQLITE_V1_DDL

# The schema exactly as version-1 files hold it (frozen in schema.py; labelstore.py before schema 2).
V1_SCHEMA = SQLITE_V1_DDL


def build_v1(path):
    c = sqlite3.connect(path)
    c.executescript(V1_SCHEMA)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    c.execute("INSERT INTO meta VALUES ('classes', '[\"a\", \"b\"]')")
    rows = [(1, "a", "ada", "human", None, None, 1, None, 100.0),
            (2, "b", "ada", "human", None, None, 1, None, 100.0),
            (2, None, "ada", "human", None, None, 2, 2, 101.0),          # undo of item 2
            (3, "b", None, "propagated", 0.7, "m1", 3, None, 102.0),
            (1, "b", "bo", "review", None, None, 4, None, 103.0)]
    c.executemany("INSERT INTO events (item, label, annotator, source, confidence, model_version, batch, retracts, ts)"
                  " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    c.execute("INSERT INTO propagated_latest VALUES (3, 4, 'b', 0.7, 'm1', 102.0)")
    # v1 created the exclusions table on first use only
    c.execute("CREATE TABLE exclusions (seq INTEGER PRIMARY KEY AUTOINCREMENT, item INTEGER NOT NULL, "
              "excluded INTEGER NOT NULL, annotator TEXT, reason TEXT, ts REAL NOT NULL)")
    c.execute("INSERT INTO exclusions (item, excluded, annotator, reason, ts) VALUES (5, 1, 'ada', 'blurry', 104.0)")
    c.commit()
    before = c.execute("SELECT * FROM events ORDER BY seq").fetchall()
    c.close()
    return before


def test_a_version_1_store_is_migrated_keeping_every_event(tmp_path):
    path = tmp_path / "v1.db"
    before = build_v1(path)
    s = LabelStore(path)
    meta = s.meta()
    assert meta["schema_version"] == SCHEMA_VERSION == "3"
    assert meta["migrated"].startswith("1->2 2->3 at ")
    assert meta["classes"] == '["a", "b"]'
    after = sqlite3.connect(path).execute("SELECT * FROM events ORDER BY seq").fetchall()
    assert after == [e for e in before if e[4] != "propagated"]   # people's events kept, unchanged
    prop = s.events(("propagated",))                              # the propagated one, now a version
    cols = ["seq", "id", "label", "annotator", "source", "confidence", "model_version", "ts"]
    assert prop[cols].values.tolist() == [[e[0], *e[1:7], e[9]] for e in before if e[4] == "propagated"]
    assert s.current().set_index("id")["label"].to_dict() == {1: "b"}   # review wins, 2 was undone
    assert s.current(("propagated",))["label"].tolist() == ["b"]
    assert s.excluded() == [5]
    # the new tables work on the migrated file
    s.add_annotator("ada", token_hash="h")
    assert s.annotator_for_token_hash("h") == ("ada", "annotator")
    assert s.claim("ada", [1, 2, 3], n=2) == [2, 3]               # ada labeled 1 already
    s.append([4], ["a"], annotator="ada")
    assert len(s) == len(before) + 1
    # opening again does not migrate again
    assert LabelStore(path).meta()["migrated"] == meta["migrated"]


def test_a_store_without_a_version_row_is_treated_as_version_1(tmp_path):
    path = tmp_path / "old.db"
    before = build_v1(path)
    c = sqlite3.connect(path)
    c.execute("DELETE FROM meta WHERE key = 'schema_version'")
    c.commit()
    c.close()
    s = LabelStore(path)
    assert s.schema_version == "3" and s.meta()["migrated"].startswith("1->2")
    assert len(s) == len(before)


def test_a_read_only_version_1_store_still_opens_for_reading(tmp_path):
    import subprocess

    import pytest

    from dcai_widgets.store import StoreReadOnlyError

    path = tmp_path / "v1.db"
    before = build_v1(path)
    for f in tmp_path.glob("v1.db-*"):
        f.unlink()
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        s = LabelStore(path)
        assert s.read_only and s.schema_version == "1"          # not migrated: it cannot be written
        assert len(s) == len(before) and s.annotators().empty and s.claims().empty
        # its propagated labels are still events, read the old way
        assert s.current(("propagated",))[["id", "label", "model_version"]].values.tolist() == [[3, "b", "m1"]]
        assert s.current(("human", "review", "propagated")).set_index("id")["label"].to_dict() == {1: "b", 3: "b"}
        assert s.events(("propagated",))["id"].tolist() == [3]
        with pytest.raises(StoreReadOnlyError, match="labels cannot be saved"):
            s.append([9], ["a"])
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)
