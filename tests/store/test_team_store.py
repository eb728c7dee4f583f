"""Annotator registry and claims with leases, on every backend (``make_store``: SQLite and PostgreSQL)."""
import hashlib
import multiprocessing as mp
import threading
import time

import pytest

from dcai_widgets.store import ClaimLostError, open_store


def h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def test_registry_upsert_revoke_and_lookup(make_store):
    s = make_store()
    assert s.annotators().empty and s.annotator_for_token_hash(h("x")) is None
    s.add_annotator("ada", token_hash=h("t-ada"))
    s.add_annotator("bo", role="lead", token_hash=h("t-bo"))
    assert s.annotator_for_token_hash(h("t-ada")) == ("ada", "annotator")
    assert s.annotator_for_token_hash(h("t-bo")) == ("bo", "lead")
    assert s.annotator_for_token_hash(h("nope")) is None and s.annotator_for_token_hash("") is None
    assert s.revoke_annotator("ada") is True and s.revoke_annotator("nobody") is False
    assert s.annotator_for_token_hash(h("t-ada")) is None            # revoked
    df = s.annotators().set_index("name")
    assert list(df.columns) == ["role", "token_hash", "revoked", "created"]
    assert bool(df.loc["ada", "revoked"]) and not bool(df.loc["bo", "revoked"])
    created = df.loc["ada", "created"]
    s.add_annotator("ada")                   # un-revokes, keeps the stored hash (links stable across restarts)
    assert s.annotator_for_token_hash(h("t-ada")) == ("ada", "annotator")
    s.add_annotator("ada", role="lead", token_hash=h("t-new"))
    assert s.annotator_for_token_hash(h("t-ada")) is None
    assert s.annotator_for_token_hash(h("t-new")) == ("ada", "lead")
    assert s.annotators().set_index("name").loc["ada", "created"] == created
    with pytest.raises(ValueError, match="unknown role"):
        s.add_annotator("cy", role="boss")
    with pytest.raises(ValueError, match="non-empty"):
        s.add_annotator("  ")


def test_claims_skip_held_labeled_and_expire(make_store):
    s = make_store()
    assert s.claim("ada", range(10), n=3) == [0, 1, 2]
    assert s.claim("bo", range(10), n=3) == [3, 4, 5]            # ada's items are not offered
    assert s.claim("ada", range(10), n=4) == [0, 1, 2, 6]        # held items come first
    s.append([0], ["x"], annotator="ada", claimed=True)          # a label consumes the claim
    cl = s.claims()
    assert list(cl.columns) == ["id", "annotator", "expires"]
    assert sorted(cl[cl.annotator == "ada"]["id"]) == [1, 2, 6]
    assert s.claim("ada", [0, 7], n=2) == [7]                    # ada already labeled 0
    assert s.claim("cy", [0, 8], n=2) == [8]                     # 0 has ada's label: per_item=1 is full
    # overlap: 0 can go to one more annotator
    assert s.claim("cy", [0], n=1, per_item=2) == [0]
    assert s.claim("dee", [0, 9], n=2, per_item=lambda i: 2 if i == 0 else 1) == [9]
    assert s.release_claims("bo", [3]) == 1 and s.claim("dee", [3]) == [3]
    assert s.release_claims("bo") == 2 and "bo" not in set(s.claims()["annotator"])
    # leases: an expired claim returns its item to the queue and is not renewed
    assert s.claim("eve", [20, 21], n=2, lease_s=0.2) == [20, 21]
    assert s.renew_claims("eve", [20], lease_s=0.2) == [20]
    time.sleep(0.35)
    assert s.renew_claims("eve") == []
    assert s.claim("fay", [20, 21], n=2) == [20, 21]


def test_claimed_write_by_a_loser_writes_nothing_and_names_the_holder(make_store):
    s = make_store()
    assert s.claim("ada", [5], lease_s=0.2) == [5]
    time.sleep(0.3)                                              # ada's lease ran out ...
    assert s.claim("bo", [5]) == [5]                             # ... and the item went to bo
    n = len(s)
    with pytest.raises(ClaimLostError, match="'bo'"):
        s.append([5], ["x"], annotator="ada", claimed=True)
    assert len(s) == n
    s.append([5], ["y"], annotator="bo", claimed=True)
    assert s.current().set_index("id")["label"].to_dict() == {5: "y"}
    assert s.claims().empty
    # with overlap both holders keep their labels
    s.claim("ada", [6], per_item=2)
    s.claim("bo", [6], per_item=2)
    s.append([6], ["a"], annotator="ada", claimed=True)
    s.append([6], ["b"], annotator="bo", claimed=True)
    assert s.events().query("id == 6")["annotator"].tolist() == ["ada", "bo"]
    # an undone label frees the item for its annotator again
    s.undo("bo")
    assert s.claim("bo", [6], per_item=2) == [6]


def test_review_label_wins_whatever_the_order(make_store):
    s = make_store()
    s.append([1, 2], ["a", "a"], annotator="ada")
    s.append([1], ["r"], annotator="lead", source="review")
    s.append([1, 2], ["b", "b"], annotator="bo")                 # later human labels do not override review
    cur = s.current().set_index("id")
    assert cur["label"].to_dict() == {1: "r", 2: "b"} and cur.loc[1, "source"] == "review"
    assert s.current(ids=[1]).set_index("id")["label"].to_dict() == {1: "r"}
    s.undo("lead")
    assert s.current().set_index("id")["label"].to_dict() == {1: "b", 2: "b"}


def _race(target, annotator, rounds, out):
    s = open_store(target)
    got = []
    for r in range(rounds):
        got += s.claim(annotator, range(r * 10, r * 10 + 10), n=3)
    out.put((annotator, got))
    s.close()


def test_processes_racing_never_get_the_same_item(make_store):
    s = make_store()
    target = s.target
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(target, f"p{k}", 30, out)) for k in range(4)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=180) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    every = [i for got in results.values() for i in got]
    assert len(every) == len(set(every))                 # no item to two annotators
    assert len(every) == 300                            # 10 per round, 4 x 3 asked: every item claimed once
    claims = s.claims()
    assert len(claims) == 300 and claims["id"].is_unique


def test_threads_racing_with_overlap_get_each_item_at_most_twice(make_store):
    s = make_store()
    target = s.target
    got: dict[str, list[int]] = {}

    def worker(name):
        st = open_store(target)
        mine = []
        for r in range(20):
            new = st.claim(name, range(r * 5, r * 5 + 5), n=3, per_item=2)
            mine += new
            st.append(new[:1], ["x"] * len(new[:1]), annotator=name, claimed=True)   # label one, keep the rest
        got[name] = mine
        st.close()

    ths = [threading.Thread(target=worker, args=(f"t{k}",)) for k in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(120)
    counts: dict[int, int] = {}
    for mine in got.values():
        assert len(mine) == len(set(mine))
        for i in mine:
            counts[i] = counts.get(i, 0) + 1
    assert max(counts.values()) <= 2 and len(got) == 4
    labeled = s.events().groupby("id")["annotator"].nunique()
    assert labeled.max() <= 2
