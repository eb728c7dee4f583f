"""Propagated labels as versioned snapshots (schema 3): every reader's frame is what the per-item events
gave (checked against a plain-Python model of the event semantics over random rounds, on both
backends), a round stores only its changed items, another store object catches up, and a schema-2 file
written by the old code migrates with every row's meaning kept."""
from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from dcai_widgets.store import LabelStore, open_store
from dcai_widgets.store.schema import SQLITE_V2_DDL, v2_append
from dcai_widgets.store.snapshots import CHUNK as CHUNK_TEST

CLASSES = ["a", "b", "c"]


class Reference:
    """The schema-2 semantics in plain Python: every write is an event with a growing seq."""

    def __init__(self):
        self.seq = 0
        self.prop: dict[int, tuple] = {}      # item -> (label, conf, model_version, seq)
        self.people: dict[int, tuple] = {}    # item -> (label, source, seq) of the winning people's label
        self.n_events = 0

    def propagate(self, ids, labels, conf, mv):
        self.seq += 1
        for i, lab, c in zip(ids, labels, conf):
            self.prop[int(i)] = (lab, c, mv, self.seq)
        self.n_events += len({int(i) for i in ids})

    def person(self, ids, label, source):
        self.seq += 1
        for i in ids:
            old = self.people.get(int(i))
            if source == "review" or old is None or old[1] != "review":
                self.people[int(i)] = (label, source, self.seq)
        self.n_events += len(ids)

    def mixed(self) -> dict[int, str]:
        out = {i: v[0] for i, v in self.prop.items()}
        for i, (lab, src, seq) in self.people.items():
            if src == "review" or i not in self.prop or seq > self.prop[i][3]:
                out[i] = lab
        return out


def plain(df: pd.DataFrame) -> pd.DataFrame:
    """Missing values as None in object columns: a page whose annotators are all missing has an object
    column, the full read a string one (also so with the events)."""
    return df.astype({c: object for c in df.columns if c not in ("id", "ts", "confidence")}).where(df.notna(), None)


def random_rounds(store, rng, n_items=400, rounds=6):
    ref = Reference()
    conf_values = np.array([0.5, 0.7, 0.9])
    for r in range(rounds):
        ids = rng.choice(n_items, size=int(rng.integers(1, n_items)), replace=False)
        if r == 3:
            ids = np.concatenate([ids, ids[:5]])          # an item given twice keeps its last label
        labels = [CLASSES[k] for k in rng.integers(0, 3, len(ids))]
        conf = conf_values[rng.integers(0, 3, len(ids))]
        store.append_bulk(ids.tolist(), labels, source="propagated", confidence=conf.tolist(), model_version=f"m{r}")
        ref.propagate(ids, labels, conf, f"m{r}")
        people = rng.choice(n_items, size=5, replace=False).tolist()
        src = "review" if r % 3 == 2 else "human"
        store.append(people, [CLASSES[r % 3]] * 5, annotator="ada", source=src)
        ref.person(people, CLASSES[r % 3], src)
    return ref


def test_every_reader_gives_what_the_events_gave(make_store):
    rng = np.random.default_rng(0)
    s = make_store()
    early = open_store(s.target)          # another store object (as another process): must catch up
    early.current(("propagated",), ids=[1, 2])
    ref = random_rounds(s, rng)
    versions = s.propagated_versions().set_index("model_version")
    for store in (s, early):
        got = store.current(("propagated",)).set_index("id")
        assert sorted(got.index) == sorted(ref.prop)
        for i, (lab, c, mv, _) in ref.prop.items():
            row = got.loc[i]
            assert (row["label"], row["confidence"], row["model_version"]) == (lab, c, mv)
            assert row["ts"] == versions.loc[mv, "ts"] and row["source"] == "propagated"
        assert store.current(("human", "review", "propagated")).set_index("id")["label"].to_dict() == ref.mixed()
        for sources in [("propagated",), ("human", "propagated"), ("human", "review", "propagated")]:
            full = store.current(sources)
            for ids in ([0, 5, 399, 5], rng.choice(400, 150, replace=False).tolist(), [], [10_000]):
                want = full[full["id"].isin(ids)].reset_index(drop=True)
                pd.testing.assert_frame_equal(plain(store.current(sources, ids=ids)), plain(want), check_dtype=False)
        assert len(store) == ref.n_events
    ev = s.events(("propagated",))
    assert len(ev) == sum(versions["n"]) and ev["seq"].is_monotonic_increasing
    last = ev.groupby("id").tail(1).set_index("id")
    assert last["label"].to_dict() == {i: v[0] for i, v in ref.prop.items()}
    # a version sits among the events where it was written: after the people's labels before it
    both = s.events(("human", "review", "propagated"))
    assert both["seq"].is_monotonic_increasing
    assert both.groupby("model_version", sort=False).ngroup().max() == len(versions) - 1


def test_a_round_stores_only_the_changed_items(tmp_path):
    s = LabelStore(tmp_path / "s.db")
    n = 50_000
    ids = np.arange(n)
    labels = np.array(CLASSES, dtype=object)[ids % 3]
    conf = np.random.default_rng(0).random(n)                # a model's confidences: barely compressible

    def size_after(fn) -> int:
        fn()
        s._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return (tmp_path / "s.db").stat().st_size

    start = size_after(lambda: None)
    first = size_after(lambda: s.write_propagated(ids, labels, conf, model_version="r1"))
    changed = np.random.default_rng(1).choice(n, 200, replace=False)
    labels2, conf2 = labels.copy(), conf.copy()
    labels2[changed[:100]] = "c"                           # some labels change (some already were "c")
    conf2[changed[100:]] = 0.123                           # some confidences change
    want = int(((labels2 != labels) | (conf2 != conf)).sum())
    second = size_after(lambda: s.write_propagated(ids, labels2, conf2, model_version="r2"))
    v = s.propagated_versions()
    assert v["n"].tolist() == [n, n] and v["n_changed"].tolist() == [n, want]
    assert (second - first) * 10 < (first - start)         # O(changed) growth (a few pages), not O(N)
    third = size_after(lambda: s.write_propagated(ids, labels2, conf2, model_version="r3"))
    assert (third - second) * 10 < (first - start) and s.propagated_versions()["n_changed"].iloc[-1] == 0
    cur = s.current(("propagated",)).set_index("id")
    assert (cur["model_version"] == "r3").all()            # every item's latest round, as events gave
    assert cur["label"].to_numpy().tolist() == labels2.tolist()
    assert np.array_equal(cur["confidence"].to_numpy(), conf2)
    # a round over part of the items: the others keep their label and round
    s.write_propagated(ids[:10], ["a"] * 10, np.full(10, 0.5), model_version="r4")
    page = s.current(("propagated",), ids=[0, 9, 10]).set_index("id")
    assert page["model_version"].to_dict() == {0: "r4", 9: "r4", 10: "r3"}
    assert s.propagated_versions()["n_changed"].iloc[-1] == 10
    assert s.current(("propagated",), ids=[0]).iloc[0]["model_version"] == "r4"


def test_bad_input_writes_no_version(make_store):
    s = make_store()
    with pytest.raises(ValueError, match="labels"):
        s.write_propagated([1, 2], ["a"])
    with pytest.raises(ValueError, match="confidences"):
        s.write_propagated([1, 2], ["a", "b"], [0.5])
    with pytest.raises(ValueError, match=">= 0"):
        s.write_propagated([-1], ["a"])
    assert s.write_propagated([], []) == 0
    assert s.propagated_versions().empty and len(s) == 0
    s.write_propagated([3], ["a"])                           # no confidence: stored as none
    assert pd.isna(s.current(("propagated",))["confidence"].iloc[0])


V2_WRITES = [
    ([1, 2], ["a", "b"], {"source": "human", "annotator": "ada"}),
    (list(range(60)), ["b"] * 60, {"source": "propagated", "confidence": [0.6] * 60, "model_version": "m1"}),
    ([5], ["c"], {"source": "human", "annotator": "bo"}),
    (list(range(30)), ["c"] * 30, {"source": "propagated", "confidence": [0.7] * 30, "model_version": "m2"}),
    ([7], ["a"], {"source": "review", "annotator": "lead"}),
    (list(range(30, 60)), ["b"] * 30, {"source": "propagated", "confidence": [0.6] * 30, "model_version": "m2"}),
    ([40], ["a"], {"source": "human", "annotator": "ada"}),
]


class V2Database:
    """A schema-2 store written by the old code (the frozen v2 writer) on either backend; ``query``
    runs the old readers' SQL on it."""

    def __init__(self, backend: str, tmp_path, request):
        self.backend = backend
        if backend == "sqlite":
            self.target = str(tmp_path / "v2.db")
            self.conn = sqlite3.connect(self.target, isolation_level=None)
            self.conn.executescript(SQLITE_V2_DDL)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.tx = self.conn
        else:
            import psycopg

            from dcai_widgets.store.postgres import _Tx
            from dcai_widgets.store.schema import POSTGRES_V2_DDL
            from dcai_widgets.store.sqlite import statements

            self.target = request.getfixturevalue("pg_server").new_database()
            self.conn = psycopg.connect(self.target, autocommit=True)
            for stmt in statements(POSTGRES_V2_DDL):
                self.conn.execute(stmt)
            self.tx = _Tx(self.conn)
        self.tx.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        self.tx.execute("INSERT INTO meta VALUES ('classes', '[\"a\", \"b\", \"c\"]')")
        for batch, (items, labels, kw) in enumerate(V2_WRITES, start=1):
            self.in_transaction(lambda b=batch, i=items, lab=labels, k=kw: v2_append(
                self.tx, i, lab, batch=b, ts=100.0 + b, **k))
        self.tx.execute("INSERT INTO events (item, label, annotator, source, batch, retracts, ts) "
                        "VALUES (2, NULL, 'ada', 'human', 8, 2, 108.0)")      # ada's label of item 2 undone
        if backend == "postgresql":
            self.tx.execute("SELECT setval('batches', 8)")          # v2 drew batch ids from this sequence

    def in_transaction(self, fn) -> None:
        if self.backend == "sqlite":
            self.conn.execute("BEGIN")
            fn()
            self.conn.execute("COMMIT")
        else:
            with self.conn.transaction():
                fn()

    def query(self, sql: str) -> list[tuple]:
        return self.tx.execute(sql).fetchall()


OLD_LIVE = ("SELECT e.seq, e.item, e.label, e.annotator, e.source, e.ts, e.confidence, e.model_version FROM events e "
            "WHERE e.source IN ({}) AND e.label IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM events r WHERE r.retracts = e.seq)")
OLD_CURRENT = ("SELECT item, label, annotator, source, ts, confidence, model_version FROM "
               "(SELECT l.*, ROW_NUMBER() OVER (PARTITION BY item ORDER BY CASE WHEN source = 'review' THEN 1 "
               "ELSE 0 END DESC, seq DESC) AS rn FROM ({}) AS l) AS t WHERE rn = 1 ORDER BY item")
COLS = ["id", "label", "annotator", "source", "ts", "confidence", "model_version"]


def old_frames(db: V2Database) -> dict:
    """What the schema-2 code's readers returned for this store."""
    three = "'human', 'review', 'propagated'"
    return {
        "propagated": pd.DataFrame(db.query("SELECT item, label, NULL, 'propagated', ts, confidence, model_version "
                                            "FROM propagated_latest ORDER BY item"), columns=COLS),
        "mixed": pd.DataFrame(db.query(OLD_CURRENT.format(OLD_LIVE.format(three))), columns=COLS),
        "events": pd.DataFrame(db.query(OLD_LIVE.format(three) + " ORDER BY e.seq"), columns=["seq", *COLS]),
        "count": db.query("SELECT COUNT(*) FROM events")[0][0],
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_version_2_store_migrates_keeping_every_rows_meaning(tmp_path, request, backend):
    db = V2Database(backend, tmp_path, request)
    old = old_frames(db)
    s = open_store(db.target)
    assert s.schema_version == "3" and s.meta()["migrated"].startswith("2->3 at ")
    assert s.propagated_versions()["version"].tolist() == [2, 4, 6]         # one per old batch
    assert s.propagated_versions()["n_changed"].tolist() == [60, 30, 0]     # the third part changed nothing
    pd.testing.assert_frame_equal(plain(s.current(("propagated",))), plain(old["propagated"]), check_dtype=False)
    pd.testing.assert_frame_equal(plain(s.current(("human", "review", "propagated"))), plain(old["mixed"]),
                                  check_dtype=False)
    ev = s.events(("human", "review", "propagated"))
    pd.testing.assert_frame_equal(plain(ev[COLS]), plain(old["events"][COLS]), check_dtype=False)
    # each old batch's rows sit where they were among the events
    assert (ev["seq"].to_numpy() >= old["events"]["seq"].to_numpy()).all()
    assert len(s) == old["count"]                                  # every event, the retraction included
    assert db.query("SELECT COUNT(*) FROM events WHERE source = 'propagated'")[0][0] == 0
    gone = ("SELECT name FROM sqlite_master WHERE name = 'propagated_latest'" if backend == "sqlite" else
            "SELECT tablename FROM pg_tables WHERE tablename = 'propagated_latest'")
    assert db.query(gone) == []
    # the migrated store keeps working: a new round after a person's label sorts after it
    s.append([50], ["c"], annotator="ada")
    s.write_propagated([50, 51], ["a", "a"], [0.9, 0.9], model_version="m3")
    assert s.current(("human", "propagated"), ids=[50]).iloc[0][["label", "model_version"]].tolist() == ["a", "m3"]
    again = open_store(db.target)
    assert again.meta()["migrated"] == s.meta()["migrated"]
    pd.testing.assert_frame_equal(again.current(("propagated",)), s.current(("propagated",)))
    for store in (s, again):
        store.close()
    db.conn.close()


class OnlyTheProtocol:
    """A store object with just LabelStoreLike's methods (no write_propagated), delegating to a LabelStore."""

    def __init__(self, inner):
        self.inner = inner

    def bind(self, *a, **kw):
        return self.inner.bind(*a, **kw)

    def append(self, *a, **kw):
        return self.inner.append(*a, **kw)

    def append_bulk(self, *a, **kw):
        self.bulk_calls = getattr(self, "bulk_calls", 0) + 1
        return self.inner.append_bulk(*a, **kw)

    def undo(self, *a, **kw):
        return self.inner.undo(*a, **kw)

    def current(self, *a, **kw):
        return self.inner.current(*a, **kw)

    def events(self, *a, **kw):
        return self.inner.events(*a, **kw)

    def set_excluded(self, *a, **kw):
        return self.inner.set_excluded(*a, **kw)

    def excluded(self):
        return self.inner.excluded()


def test_session_writes_a_round_as_one_version_and_falls_back_for_protocol_only_stores(tmp_path):
    import dcai_widgets as dw

    s = dw.Session.demo(store=tmp_path / "a.db")
    s.set_propagated([3, 1, 2], [s.classes[k] for k in (1, 2, 3)], [0.9, 0.8, 0.7], model_version="m")
    assert s.store.propagated_versions()["n"].tolist() == [3]
    assert s.propagated().set_index("id")["label"].to_dict() == {1: s.classes[2], 2: s.classes[3], 3: s.classes[1]}
    plain = OnlyTheProtocol(LabelStore(tmp_path / "b.db"))
    t = dw.Session.demo(store=plain)
    t.set_propagated([3, 1, 2], [t.classes[k] for k in (1, 2, 3)], [0.9, 0.8, 0.7], model_version="m")
    assert plain.bulk_calls == 1
    pd.testing.assert_frame_equal(t.propagated(), s.propagated())


def dies_before_part(store, k):
    """Make ``store``'s process "die" just before the k-th part of its next round's blocks (the first call
    of ``_yield_to_people`` comes before the round's first transaction)."""
    calls = []

    def gate():
        calls.append(1)
        if len(calls) == k + 1:
            del store._yield_to_people
            raise KeyboardInterrupt

    store._yield_to_people = gate


def test_a_round_cut_off_between_its_parts_is_completed_from_the_history(tmp_path):
    """A process dies after the version row and one part of the blocks: the next open replays the history
    (the round counts whole), and a writer that meanwhile waits for it falls back to one transaction."""
    n = 20_000                                           # 79 blocks: a first part of 64, then the rest
    ids = np.arange(n)
    labels = np.array(CLASSES, dtype=object)[ids % 3]
    ref = LabelStore(tmp_path / "ref.db")
    ref.write_propagated(ids, labels, np.full(n, 0.5), model_version="r1")
    ref.write_propagated(ids[::2], labels[::-2], np.full(n // 2, 0.7), model_version="r2")
    want = ref.current(("propagated",))
    cols = ["id", "label", "confidence", "model_version"]

    s = LabelStore(tmp_path / "s.db")
    s.write_propagated(ids, labels, np.full(n, 0.5), model_version="r1")
    dies_before_part(s, 2)
    with pytest.raises(KeyboardInterrupt):
        s.write_propagated(ids[::2], labels[::-2], np.full(n // 2, 0.7), model_version="r2")
    assert s.propagated_versions()["model_version"].tolist() == ["r1", "r2"]
    half = s.current(("propagated",))
    assert (half["model_version"] == "r2").sum() == 64 * CHUNK_TEST // 2       # one part in, as events in parts
    again = LabelStore(tmp_path / "s.db")                                  # open: replayed from the history
    pd.testing.assert_frame_equal(again.current(("propagated",))[cols], want[cols])
    assert again._read("SELECT COUNT(*) FROM propagated_versions WHERE applied = 0")[0][0] == 0

    s2 = LabelStore(tmp_path / "t.db", timeout=0.3)
    s2.write_propagated(ids, labels, np.full(n, 0.5), model_version="r1")
    dies_before_part(s2, 2)
    with pytest.raises(KeyboardInterrupt):
        s2.write_propagated(ids[::2], labels[::-2], np.full(n // 2, 0.7), model_version="r2")
    s2.write_propagated(ids[:5], ["c"] * 5, np.full(5, 0.9), model_version="r3")   # waits 0.3 s, then one transaction
    assert s2.propagated_versions()["model_version"].tolist() == ["r1", "r2", "r3"]
    got = s2.current(("propagated",)).set_index("id")
    exp = want.set_index("id")
    exp.loc[ids[:5], ["label", "confidence", "model_version"]] = ["c", 0.9, "r3"]
    pd.testing.assert_frame_equal(got[cols[1:]], exp[cols[1:]])
    assert s2._read("SELECT COUNT(*) FROM propagated_versions WHERE applied = 0")[0][0] == 0
