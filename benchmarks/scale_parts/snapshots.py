"""Scale part "snapshots" (issue 18): LANCET propagated labels stored as one versioned snapshot per round
(schema 3, ``dcai_widgets.store.snapshots``) against the schema-2 path (one event per item, written in
transactions of 5,000 rows as ``append_bulk`` did), in the same run, on SQLite files at 1M items.

Rounds come from a LANCET-like model on the shared synthetic set (``synth.clustered``): each round a
few hundred more items are labeled by the oracle (class = generating cluster mod 10), a nearest-centroid
model is refitted on the labeled rows, and every unlabeled item gets its argmax class with the softmax
probability as confidence. As in LANCET, a refit moves almost every confidence, so "changed" is close
to N; a second scenario ("flips") changes only the labels and confidences of a fixed fraction of items
per round, which shows the O(changed) growth on its own.

Per round and path: write time (the whole store call, list building included for the old path, as
``Session.set_propagated`` did), store file growth (after a WAL checkpoint), items changed; then one
grid page (100 ids) and the full current propagated labels read from each; finally the old file is
migrated to schema 3 (time) and a page of its labels compared with the old reader's. Also the MetaStore
manifest: bytes and seconds to list 200 shards with the append-only log vs rewriting the JSON manifest
per shard (the former code).
Figures: ``lancet_write_s_1m`` (median write per round, LANCET-like rounds, snapshots).
"""
from __future__ import annotations

import itertools
import os
import sqlite3
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dcai_widgets.store import LabelStore
from dcai_widgets.store.base import COLUMNS
from dcai_widgets.store.schema import SQLITE_V2_DDL, v2_append

from .synth import CHUNK, centers, clustered

CLASSES = np.array([str(k) for k in range(10)], dtype=object)
OLD_PART = 5_000            # the schema-2 Session's PROPAGATE_ROWS (append_bulk's parts were at most this)


def oracle(X: np.ndarray, d: int) -> np.ndarray:
    """Each row's class: its generating cluster (nearest centre) mod 10, computed in chunks."""
    C = centers(d)
    out = np.empty(len(X), dtype=np.int64)
    cc = (C * C).sum(1)
    for a in range(0, len(X), CHUNK):
        x = np.asarray(X[a:a + CHUNK], dtype=np.float32)
        out[a:a + CHUNK] = np.argmin(cc[None, :] - 2 * x @ C.T, axis=1) % 10
    return out


def lancet_like_rounds(X: np.ndarray, y: np.ndarray, rounds: int, per_round: int, seed: int = 0):
    """Yield (ids, class index, confidence) per round: nearest-centroid softmax on a growing labeled set."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    for r in range(1, rounds + 1):
        lab = order[:per_round * r]
        mu = np.stack([np.asarray(X[np.sort(lab[y[lab] == k])], dtype=np.float32).mean(0) for k in range(10)])
        mm = (mu * mu).sum(1)
        pred, conf = np.empty(len(X), np.int64), np.empty(len(X))
        for a in range(0, len(X), CHUNK):
            x = np.asarray(X[a:a + CHUNK], dtype=np.float32)
            z = -(mm[None, :] - 2 * x @ mu.T) / 50.0
            z -= z.max(1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(1, keepdims=True)
            pred[a:a + CHUNK], conf[a:a + CHUNK] = p.argmax(1), p.max(1)
        keep = np.ones(len(X), bool)
        keep[lab] = False
        ids = np.flatnonzero(keep)
        yield ids, pred[ids], conf[ids]


def flip_rounds(n: int, rounds: int, frac: float, seed: int = 1):
    """Yield rounds over all items where only ``frac`` of them get a new label and confidence."""
    rng = np.random.default_rng(seed)
    pred, conf = rng.integers(0, 10, n), rng.random(n)
    for _ in range(rounds):
        yield np.arange(n), pred.copy(), conf.copy()
        ch = rng.random(n) < frac
        pred[ch], conf[ch] = rng.integers(0, 10, int(ch.sum())), rng.random(int(ch.sum()))


def file_mb(path: Path, conn: sqlite3.Connection) -> float:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size / 2**20


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def old_store(path: Path) -> sqlite3.Connection:
    c = sqlite3.connect(path, isolation_level=None)
    c.executescript(SQLITE_V2_DDL)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("PRAGMA synchronous = FULL")
    c.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    return c


def old_write(c: sqlite3.Connection, batch0: int, ids: np.ndarray, pred: np.ndarray, conf: np.ndarray,
              mv: str) -> int:
    """The schema-2 write: lists as Session built them, then transactions of OLD_PART events."""
    items, names, cf = ids.tolist(), CLASSES[pred].tolist(), conf.tolist()
    batch = batch0
    for a in range(0, len(items), OLD_PART):
        batch += 1
        c.execute("BEGIN IMMEDIATE")
        v2_append(c, items[a:a + OLD_PART], names[a:a + OLD_PART], source="propagated", batch=batch,
                  ts=time.time(), confidence=cf[a:a + OLD_PART], model_version=mv)
        c.execute("COMMIT")
    return batch


def scenario(name: str, rounds, work: Path, n: int, old_path: bool = True) -> dict:
    old_p, new_p = work / f"snap_{name}_v2.db", work / f"snap_{name}_v3.db"
    for p in (old_p, new_p):
        for f in (p, Path(f"{p}-wal"), Path(f"{p}-shm"), Path(f"{p}-priority")):
            f.unlink(missing_ok=True)
    oc, new = old_store(old_p), LabelStore(new_p)
    nc = new._conn()
    sizes_old, sizes_new = [file_mb(old_p, oc)], [file_mb(new_p, nc)]
    t_old, t_new, changed, batch = [], [], [], 0
    for r, (ids, pred, conf) in enumerate(rounds):
        mv = f"lancet-{r}"
        if old_path:
            t = time.perf_counter()
            batch = old_write(oc, batch, ids, pred, conf, mv)
            t_old.append(time.perf_counter() - t)
            sizes_old.append(file_mb(old_p, oc))
        t = time.perf_counter()
        new.write_propagated(ids, pd.Categorical.from_codes(pred, categories=CLASSES), conf, model_version=mv)
        t_new.append(time.perf_counter() - t)
        sizes_new.append(file_mb(new_p, nc))
        changed.append(int(new.propagated_versions()["n_changed"].iloc[-1]))
        old_s = f"old {t_old[-1]:.2f} s +{sizes_old[-1] - sizes_old[-2]:.1f} MB | " if old_path else ""
        print(f"  [{name}] round {r}: {old_s}snapshot {t_new[-1]:.2f} s +{sizes_new[-1] - sizes_new[-2]:.1f} MB, "
              f"changed {changed[-1]:,}", flush=True)
    rng = np.random.default_rng(2)
    page = np.sort(rng.choice(n, 100, replace=False))
    pages = [np.sort(rng.choice(n, 100, replace=False)) for _ in range(5)]
    t = time.perf_counter()
    new_page = new.current(("propagated",), ids=page)
    page_new = time.perf_counter() - t
    page_new_warm = statistics.median(timed(lambda p=p: new.current(("propagated",), ids=p)) for p in pages)
    t = time.perf_counter()
    new.current(("propagated",))
    full_new = time.perf_counter() - t
    new.close()
    grow = lambda s: [round(b - a, 2) for a, b in itertools.pairwise(s)]
    out = {"write_s_snapshot": [round(x, 2) for x in t_new], "growth_mb_snapshot": grow(sizes_new),
           "changed": changed, "file_mb_snapshot": round(sizes_new[-1], 1),
           "page_read_ms_snapshot": round(page_new * 1000, 2),
           "page_read_ms_snapshot_warm": round(page_new_warm * 1000, 2), "full_read_s_snapshot": round(full_new, 2)}
    if old_path:
        out.update(old_side(oc, old_p, page, new_page, pages))
    oc.close()
    for p in (old_p, new_p):
        for f in (p, Path(f"{p}-wal"), Path(f"{p}-shm"), Path(f"{p}-priority")):
            f.unlink(missing_ok=True)
    if old_path:
        out.update({"write_s_old": [round(x, 2) for x in t_old], "growth_mb_old": grow(sizes_old),
                    "file_mb_old": round(sizes_old[-1], 1)})
    return out


def old_side(oc: sqlite3.Connection, old_p: Path, page: np.ndarray, new_page: pd.DataFrame,
             pages: list[np.ndarray]) -> dict:
    """The schema-2 file's reads (a page by id, every label), then its migration to schema 3 (time, and
    the page read again from the migrated store)."""
    def old_read(ids: np.ndarray | None) -> pd.DataFrame:      # the schema-2 reader, frame included
        where = "" if ids is None else f" WHERE item IN ({','.join('?' * len(ids))})"
        rows = oc.execute("SELECT item, label, NULL, 'propagated', ts, confidence, model_version FROM "
                          f"propagated_latest{where} ORDER BY item", [] if ids is None else ids.tolist()).fetchall()
        return pd.DataFrame(rows, columns=COLUMNS).astype({"id": "int64"})

    t = time.perf_counter()
    old_frame = old_read(page)
    page_old = time.perf_counter() - t
    page_old_warm = statistics.median(timed(lambda p=p: old_read(p)) for p in pages)
    cols = ["id", "label", "confidence", "model_version"]
    old_page = [tuple(r) for r in old_frame[cols].itertuples(index=False, name=None)]
    same = old_page == [tuple(r) for r in new_page[cols].itertuples(index=False, name=None)]
    t = time.perf_counter()
    old_read(None)
    full_old = time.perf_counter() - t
    oc.close()
    t = time.perf_counter()
    migrated = LabelStore(old_p)               # schema 2 -> 3 on open
    migrate_s = time.perf_counter() - t
    mig_page = migrated.current(("propagated",), ids=page)
    same_migrated = old_page == [tuple(r) for r in mig_page[cols].itertuples(index=False, name=None)]
    mig_mb = file_mb(old_p, migrated._conn())
    migrated.close()
    return {"page_read_ms_old": round(page_old * 1000, 2), "page_read_ms_old_warm": round(page_old_warm * 1000, 2),
            "full_read_s_old": round(full_old, 2),
            "page_equal": bool(same), "migrate_s": round(migrate_s, 1), "migrated_mb": round(mig_mb, 1),
            "migrated_page_equal": bool(same_migrated)}


def manifest_figures(work: Path, shards: int, rows: int) -> dict:
    """MetaStore manifest cost per shard listed: the append-only log (``LayerShards._append``, the code in
    use) against rewriting the whole JSON manifest per shard (the former ``_save_manifest``: one
    ``atomic_write`` of ``json.dumps(manifest)``), for the same shard records; bytes written and seconds."""
    import json
    import shutil

    from dcai_widgets.metastore.storage import MANIFEST, LayerShards, ShardCache, atomic_write, read_manifest

    root = work / "snap_manifest"
    shutil.rmtree(root, ignore_errors=True)
    ls = LayerShards(root, ShardCache())
    ls.manifest.update({"mode": "full", "T": 1, "a": 2, "b": 2})
    old = {"mode": "full", "T": 1, "a": 2, "b": 2, "shards": []}
    t_new = t_old = 0.0
    old_bytes = 0
    for k in range(shards):
        entry = {"file": f"shard-{k:06d}.bin", "ids": list(range(k * rows, (k + 1) * rows)), "rows": rows,
                 "y": [float(i % 10) for i in range(rows)], "arrays": {"ids": ["<i8", [rows], 0]},
                 "bytes": 8 * rows, "xxh3": 12345678901234}
        t = time.perf_counter()
        ls._append({"add": entry})
        t_new += time.perf_counter() - t
        old["shards"].append(entry)
        t = time.perf_counter()
        data = json.dumps(old).encode()
        atomic_write(root / "old-manifest.json", data)
        t_old += time.perf_counter() - t
        old_bytes += len(data)
    new_bytes = (root / MANIFEST).stat().st_size
    assert len(read_manifest(root / MANIFEST, "")[0]["shards"]) == shards
    shutil.rmtree(root, ignore_errors=True)
    return {"shards": shards, "rows_per_shard": rows, "written_mb_log": round(new_bytes / 2**20, 2),
            "written_mb_rewrite": round(old_bytes / 2**20, 1), "s_log": round(t_new, 2), "s_rewrite": round(t_old, 2),
            "bytes_per_shard_log": new_bytes // shards}


def run(args) -> dict:
    n = 100_000 if args.quick else 1_000_000
    rounds = 3
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    X, _ = clustered(n, 128, work=work)
    y = oracle(X, 128)
    out = {"n": n, "rounds": rounds, "load_avg_start": round(os.getloadavg()[0], 1)}
    out["lancet_like"] = scenario("lancet", lancet_like_rounds(X, y, rounds, per_round=200), work, n)
    out["flips_2pct"] = scenario("flips", flip_rounds(n, rounds, 0.02), work, n, old_path=False)
    out["manifest"] = manifest_figures(work, 60 if args.quick else 200, 500)
    out["load_avg_end"] = round(os.getloadavg()[0], 1)
    key = "1m" if n == 1_000_000 else f"{n // 1000}k"
    lan, fl = out["lancet_like"], out["flips_2pct"]
    out[f"lancet_write_s_{key}"] = round(statistics.median(lan["write_s_snapshot"]), 2)
    out[f"lancet_write_s_old_{key}"] = round(statistics.median(lan["write_s_old"]), 2)
    out["growth_mb_per_round_old"] = round(statistics.median(lan["growth_mb_old"]), 1)
    out["growth_mb_per_round_snapshot"] = round(statistics.median(lan["growth_mb_snapshot"]), 1)
    out["growth_mb_per_round_snapshot_2pct"] = round(statistics.median(fl["growth_mb_snapshot"][1:]), 2)
    out["page_read_ms_snapshot"] = lan["page_read_ms_snapshot_warm"]
    out["page_read_ms_old"] = lan["page_read_ms_old_warm"]
    return out
