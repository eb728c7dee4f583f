"""How the PostgreSQL store talks to the server on the team's hot path (issue 13, flat-out latency):
``IN (?, ...)`` lists sent as one array parameter, writes pipelined (one wait for the reads a write
needs, one at COMMIT), and connections of ended threads reused. Semantics are checked on both
backends (``make_store``); the wire details only on PostgreSQL."""
import threading

import pytest

from dcai_widgets.store import ClaimLostError, StoreBusyError
from dcai_widgets.store.postgres import pg_query


def test_in_lists_become_one_array_parameter():
    sql, params = pg_query("SELECT a FROM t WHERE x > ? AND item IN (?,?,?) AND s IN ( ? ) AND y = ?",
                           (1, 2, 3, 4, "a", 9))
    assert sql == "SELECT a FROM t WHERE x > %s AND item = ANY(%s) AND s = ANY(%s) AND y = %s"
    assert params == [1, [2, 3, 4], ["a"], 9]
    # the text no longer depends on how many ids are asked (psycopg caches and prepares it)
    assert pg_query("DELETE FROM c WHERE a = ? AND item IN (?,?)", ["x", 1, 2])[0] == \
        pg_query("DELETE FROM c WHERE a = ? AND item IN (?,?,?,?,?)", ["x", 1, 2, 3, 4, 5])[0]
    assert pg_query("SELECT 1") == ("SELECT 1", None)
    assert pg_query("SELECT 1 FROM t WHERE a IN (SELECT b FROM u WHERE c = ?)", [1]) == \
        ("SELECT 1 FROM t WHERE a IN (SELECT b FROM u WHERE c = %s)", [1])


def test_claims_labels_and_releases_keep_their_meaning(make_store):
    """The pipelined claim/label/release paths: the claim check refuses a label (nothing written, the
    transaction rolled back, the store usable at once), release counts rows, many ids in one list."""
    s = make_store()
    many = list(range(1200))                         # over one 900-id part and one 500-id chunk
    assert s.claim("ada", many, n=3) == [0, 1, 2]
    assert s.claim("bo", many, n=2) == [3, 4]
    s.append([5, 6], ["x", "y"], annotator="cy")     # labeled by someone: not claimable (overlap 1)
    assert s.claim("bo", many, n=3) == [3, 4, 7]     # held first, then the next open ones
    with pytest.raises(ClaimLostError, match="item 3 is now claimed by 'bo'"):
        s.append([0, 3], ["x", "x"], annotator="ada", claimed=True)
    assert s.current(ids=[0, 3]).empty               # nothing of the refused batch was written
    s.append([0], ["x"], annotator="ada", claimed=True)
    assert s.current(ids=[0])["annotator"].tolist() == ["ada"]
    assert sorted(s.claims().query("annotator == 'ada'")["id"]) == [1, 2]   # the label consumed its claim
    assert s.release_claims("ada", many) == 2 and s.release_claims("bo", [3, 4, 999]) == 2
    assert s.claims()["id"].tolist() == [7]
    s.set_excluded([7, 8])
    assert s.claims().empty and s.claim("ada", [7, 8, 9], n=3) == [9]


def test_busy_write_lock_is_reported_and_the_connection_stays_usable(make_store):
    """A write that cannot get the writers' lock in time fails with StoreBusyError (from inside the
    pipeline on PostgreSQL) and leaves the connection idle for the next write."""
    s = make_store()
    if not s.target.startswith("postgresql"):
        pytest.skip("the writers' advisory lock is PostgreSQL's")
    from dcai_widgets.store import open_store
    from dcai_widgets.store.postgres import WRITE_KEY

    quick = open_store(s.target, timeout=0.2)
    holder = s._conn()
    with holder.transaction():
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_KEY,))
        with pytest.raises(StoreBusyError):
            quick.append([1], ["x"], annotator="ada")
    quick.append([1], ["x"], annotator="ada")
    assert quick.current(ids=[1])["label"].tolist() == ["x"]
    quick.close()


def test_connections_of_ended_threads_are_reused(make_store):
    """Each background job of a page runs in a new thread: it takes the connection an ended thread left
    rather than opening a new one (a new server process per claim before)."""
    s = make_store()
    if not s.target.startswith("postgresql"):
        pytest.skip("SQLite connections are files, not server processes")
    pids = []

    def job():
        s.claim("ada", [len(pids)], n=1)
        pids.append(s._conn().info.backend_pid)

    for _ in range(3):
        t = threading.Thread(target=job)
        t.start()
        t.join()
    assert len(set(pids)) == 1
    s.close()                                        # closes this thread's and the idle connections
    assert s._idle.take() is None
    assert s.claims()["id"].tolist() == [0, 1, 2]    # and reconnects when used again
