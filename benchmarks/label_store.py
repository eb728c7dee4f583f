"""LabelStore speed: one acknowledged label (committed, synchronous=FULL), and reading current labels
after many propagation rounds, against deriving them with a plain window query over all events (people's
labels) or by replaying every round's snapshot (propagated labels, schema 3); one grid page's labels read
by id against the full read; and how long a person's label waits to commit while a model writes labels
for many items: a snapshot version whose blocks go in parts (``write_propagated``) against the same
version in one transaction.

Last line: JSON with label_p50_ms, label_p95_ms, read_human_ms, read_propagated_ms, the speedups,
read_page_ms and the contention figures.

Cross-process (issue 13): another PROCESS writes a model's 200k propagated labels (``append_bulk``)
while this one labels an item every 50 ms; the wait of each label, for the store as it was before
(commit a3ab74e, loaded from git), the current store with its priority signal turned off, and the
current store (people hold the ``-priority`` lock file shared; the bulk writer waits for it between
parts); with ``--pg`` the same on a private PostgreSQL server (advisory-lock signal off / on).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dcai_widgets.store import LabelStore, open_store
from dcai_widgets.store.snapshots import encode_members

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "a3ab74e"          # the last commit before the cross-process priority signal

NAIVE = ("SELECT item, label FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY item ORDER BY seq DESC) rn "
         "FROM events e WHERE source IN ({q}) AND retracts IS NULL AND NOT EXISTS "
         "(SELECT 1 FROM events r WHERE r.retracts = e.seq)) WHERE rn = 1")


def timed(fn, repeats: int = 5) -> float:
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t)
    return float(np.median(best))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=100, help="propagation rounds, each labels every item")
    ap.add_argument("--labels", type=int, default=200, help="single human labels to time")
    ap.add_argument("--contend-items", type=int, default=200_000,
                    help="items a model labels while a person labels one item every 50 ms")
    ap.add_argument("--pg", action="store_true", help="also run the cross-process case on a private PostgreSQL")
    ap.add_argument("--only-cross", action="store_true", help="run only the cross-process case")
    a = ap.parse_args()
    if a.only_cross:
        cross = cross_process_all(a.contend_items, a.pg)
        print(json.dumps({"cross_process": cross}))
        return
    path = Path(tempfile.mkdtemp()) / "bench.db"
    s = LabelStore(path)
    rng = np.random.default_rng(0)

    lat = []
    for i in range(a.labels):
        t = time.perf_counter()
        s.append([int(rng.integers(a.items))], [str(rng.integers(10))], annotator="ada")
        lat.append(time.perf_counter() - t)
    lat_ms = np.array(lat) * 1000
    print(f"one label, committed: p50 {np.median(lat_ms):.2f} ms, p95 {np.percentile(lat_ms, 95):.2f} ms")

    t = time.perf_counter()
    for r in range(a.rounds):
        s.append(range(a.items), rng.integers(0, 10, a.items).astype(str), source="propagated",
                 confidence=rng.random(a.items), model_version=f"v{r}")
    per_round = (time.perf_counter() - t) / a.rounds
    print(f"{a.rounds} propagation rounds of {a.items:,} labels: {per_round * 1000:.0f} ms per round; "
          f"{len(s):,} events")

    con = s._conn()
    human = timed(lambda: s.current(("human", "review", "import")))
    human_naive = timed(lambda: con.execute(NAIVE.format(q="'human','review','import'")).fetchall())
    prop = timed(lambda: s.current(("propagated",)))
    # propagated labels are snapshot versions (schema 3): the naive way replays every round's items
    prop_naive = timed(lambda: s.events(("propagated",)).groupby("id").tail(1), repeats=3)
    print(f"current human labels: {human * 1000:.1f} ms vs naive {human_naive * 1000:.1f} ms "
          f"({human_naive / human:.1f}x)")
    print(f"current propagated labels: {prop * 1000:.1f} ms vs naive {prop_naive * 1000:.1f} ms "
          f"({prop_naive / prop:.1f}x)")
    page = rng.choice(a.items, 24, replace=False)
    read_page = timed(lambda: s.current(("propagated",), ids=page))
    print(f"one grid page (24 items) of propagated labels by id: {read_page * 1000:.2f} ms vs the full read "
          f"{prop * 1000:.1f} ms ({prop / read_page:.0f}x)")
    contention = {mode: contend(mode, a.contend_items) for mode in ("one_transaction", "bulk")}   # bulk: in parts
    for mode, c in contention.items():
        print(f"a person labels every 50 ms while a model writes {a.contend_items:,} labels ({mode}): "
              f"model {c['model_s']:.2f} s; {c['labels']} labels committed meanwhile, wait p50 "
              f"{c['wait_p50_ms']:.0f} ms, max {c['wait_max_ms']:.0f} ms")
    ratio = contention["one_transaction"]["wait_max_ms"] / max(contention["bulk"]["wait_max_ms"], 1e-9)
    print(f"longest wait, one transaction / in parts: {ratio:.1f}x")
    cross = cross_process_all(a.contend_items, a.pg)
    print(json.dumps({"events": len(s), "label_p50_ms": round(float(np.median(lat_ms)), 3),
                      "label_p95_ms": round(float(np.percentile(lat_ms, 95)), 3),
                      "propagation_round_ms": round(per_round * 1000, 1),
                      "read_human_ms": round(human * 1000, 2), "read_human_naive_ms": round(human_naive * 1000, 2),
                      "read_human_speedup": round(human_naive / human, 1),
                      "read_propagated_ms": round(prop * 1000, 2),
                      "read_propagated_naive_ms": round(prop_naive * 1000, 2),
                      "read_propagated_speedup": round(prop_naive / prop, 1),
                      "read_page_ms": round(read_page * 1000, 3), "read_page_speedup": round(prop / read_page, 1),
                      "contention": contention, "wait_max_ratio": round(ratio, 1), "cross_process": cross}))


def contend(mode: str, n: int) -> dict:
    """A model writes labels for ``n`` items as one snapshot version (in one transaction, or with its blocks
    in parts: ``append_bulk`` / ``write_propagated``) in a thread while this thread labels one item every
    50 ms: how long each of those labels waited to commit."""
    s = LabelStore(Path(tempfile.mkdtemp()) / "contend.db")
    rng = np.random.default_rng(1)
    labels, conf = rng.integers(0, 10, n).astype(str).tolist(), rng.random(n).tolist()
    out: dict = {}

    def model() -> None:
        t = time.perf_counter()
        if mode == "bulk":
            s.append_bulk(range(n), labels, source="propagated", confidence=conf, model_version="m")
        else:
            ids, lab = np.arange(n), pd.Categorical(labels)
            s._write(lambda c: s._one_transaction(c, ids, [str(x) for x in lab.categories], lab.codes.astype(np.int64),
                                                  np.asarray(conf), encode_members(ids), "m", None), bulk=True)
        out["model_s"] = time.perf_counter() - t

    th = threading.Thread(target=model)
    th.start()
    waits = []
    time.sleep(0.05)
    while th.is_alive():
        t = time.perf_counter()
        s.append([int(rng.integers(n))], ["1"], annotator="ada")
        waits.append(time.perf_counter() - t)
        time.sleep(0.05)
    th.join()
    w = np.array(waits or [0.0]) * 1000
    return {"model_s": round(out["model_s"], 3), "labels": len(waits), "wait_p50_ms": round(float(np.median(w)), 1),
            "wait_max_ms": round(float(w.max()), 1)}


def before_module_path() -> Path:
    """The store module as of BEFORE, written to a temp file (the baseline of the cross-process case)."""
    src = subprocess.run(["git", "show", f"{BEFORE}:dcai_widgets/store/labelstore.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "labelstore_before.py"
    path.write_text(src)
    return path


def open_variant(variant: str, target: str, before_path: str | None):
    if variant == "before":
        spec = importlib.util.spec_from_file_location("labelstore_before", before_path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.LabelStore(target)
    return open_store(target, priority=variant != "no_signal")


def _bulk_child(variant: str, target: str, n: int, before_path: str | None, started, out) -> None:
    s = open_variant(variant, target, before_path)
    rng = np.random.default_rng(2)
    labels, conf = rng.integers(0, 10, n).astype(str).tolist(), rng.random(n).tolist()
    started.set()
    t = time.perf_counter()
    s.append_bulk(range(n), labels, source="propagated", confidence=conf, model_version="m")
    out.put(time.perf_counter() - t)


def cross_process(variant: str, target: str, n: int, before_path: str | None) -> dict:
    """Another process writes ``n`` propagated labels while this one labels an item every 50 ms."""
    s = open_variant(variant, target, before_path)
    ctx = mp.get_context("spawn")
    started, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_bulk_child, args=(variant, target, n, before_path, started, out))
    proc.start()
    started.wait(120)
    rng = np.random.default_rng(3)
    waits = []
    time.sleep(0.05)
    while proc.is_alive() and out.empty():
        t = time.perf_counter()
        s.append([int(rng.integers(n))], ["1"], annotator="ada")
        waits.append(time.perf_counter() - t)
        time.sleep(0.05)
    model_s = out.get(timeout=600)
    proc.join(60)
    w = np.array(waits or [0.0]) * 1000
    return {"model_s": round(model_s, 2), "labels": len(waits), "wait_p50_ms": round(float(np.median(w)), 1),
            "wait_p99_ms": round(float(np.percentile(w, 99)), 1), "wait_max_ms": round(float(w.max()), 1)}


def cross_process_all(n: int, pg: bool) -> dict:
    before_path = str(before_module_path())
    res: dict = {"sqlite": {}}
    for variant in ("before", "no_signal", "after"):
        target = str(Path(tempfile.mkdtemp()) / "cross.db")
        res["sqlite"][variant] = c = cross_process(variant, target, n, before_path)
        print(f"another process writes {n:,} labels, SQLite, {variant}: model {c['model_s']:.2f} s; {c['labels']} "
              f"labels meanwhile, wait p50 {c['wait_p50_ms']:.0f} ms, p99 {c['wait_p99_ms']:.0f} ms, "
              f"max {c['wait_max_ms']:.0f} ms")
    if pg:
        spec = importlib.util.spec_from_file_location("tests_conftest", ROOT / "tests" / "conftest.py")
        conftest = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(conftest)
        server = conftest.PgServer(Path(tempfile.mkdtemp(prefix="dcai-pg-bench-")), durable=True)
        try:
            res["postgresql"] = {}
            for variant in ("no_signal", "after"):
                res["postgresql"][variant] = c = cross_process(variant, server.new_database(), n, None)
                print(f"another process writes {n:,} labels, PostgreSQL, {variant}: model {c['model_s']:.2f} s; "
                      f"wait p50 {c['wait_p50_ms']:.0f} ms, p99 {c['wait_p99_ms']:.0f} ms, max {c['wait_max_ms']:.0f} ms")
        finally:
            server.stop("immediate")
    return res


if __name__ == "__main__":
    main()
