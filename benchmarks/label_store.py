"""LabelStore speed: one acknowledged label (committed, synchronous=FULL), and reading current labels
after many propagation rounds, against deriving them with a plain window query over all events.

Last line: JSON with label_p50_ms, label_p95_ms, read_human_ms, read_propagated_ms and the speedups.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from dcai_widgets.store import LabelStore

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
    a = ap.parse_args()
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
    prop_naive = timed(lambda: con.execute(NAIVE.format(q="'propagated'")).fetchall(), repeats=3)
    print(f"current human labels: {human * 1000:.1f} ms vs naive {human_naive * 1000:.1f} ms "
          f"({human_naive / human:.1f}x)")
    print(f"current propagated labels: {prop * 1000:.1f} ms vs naive {prop_naive * 1000:.1f} ms "
          f"({prop_naive / prop:.1f}x)")
    print(json.dumps({"events": len(s), "label_p50_ms": round(float(np.median(lat_ms)), 3),
                      "label_p95_ms": round(float(np.percentile(lat_ms, 95)), 3),
                      "propagation_round_ms": round(per_round * 1000, 1),
                      "read_human_ms": round(human * 1000, 2), "read_human_naive_ms": round(human_naive * 1000, 2),
                      "read_human_speedup": round(human_naive / human, 1),
                      "read_propagated_ms": round(prop * 1000, 2),
                      "read_propagated_naive_ms": round(prop_naive * 1000, 2),
                      "read_propagated_speedup": round(prop_naive / prop, 1)}))


if __name__ == "__main__":
    main()
