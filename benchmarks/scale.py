"""Ten million items on one machine, and past one machine on Ray (issue 18).

Runs the scale parts in ``benchmarks/scale_parts/`` (each a module with ``run(args) -> dict`` that
measures its own baseline in the same run) and merges their figures. Every part also writes its
figures to ``--out/scale_<part>.json``, so a part can be re-run alone (``--parts map``) and the
summary rebuilt from the saved parts (``--merge-only``).

Parts: ``memory`` (memory-mapped embeddings, IVF-PQ index with re-ranking, SEALS at 10M and AP vs
exact SEALS at 1M), ``map`` (sampled UMAP + transform, aggregated view, lasso in Chromium at 1M),
``snapshots`` (LANCET propagated labels as versioned snapshots: store size and write time per round),
``ray`` (Ray vs in-process on embedding 1M items).

Last line: JSON with ``anon_rss_gib_10m``, ``recall_at_100``, ``seals_round_s_10m``,
``map_lasso_ms_1m``, ``lancet_write_s_1m``, ``ray_equal`` (and each part's full figures).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ("memory", "map", "snapshots", "ray")
# summary key -> (part, key in that part's figures)
SUMMARY = {
    "anon_rss_gib_10m": ("memory", "anon_rss_gib_10m"),
    "recall_at_100": ("memory", "recall_at_100"),
    "seals_round_s_10m": ("memory", "seals_round_s_10m"),
    "map_lasso_ms_1m": ("map", "map_lasso_ms_1m"),
    "lancet_write_s_1m": ("snapshots", "lancet_write_s_1m"),
    "ray_equal": ("ray", "ray_equal"),
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    ap.add_argument("--n", type=int, default=10_000_000, help="items in the large synthetic set")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run (not for RESULTS.md)")
    ap.add_argument("--work", default="/tmp/dcai_scale", help="scratch directory for the large files")
    ap.add_argument("--out", default=str(HERE / "out"), help="where each part's figures are saved")
    ap.add_argument("--merge-only", action="store_true", help="only merge the parts' saved figures")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    if not args.merge_only:
        for part in [p for p in args.parts.split(",") if p]:
            if part not in PARTS:
                ap.error(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
            mod = importlib.import_module(f"scale_parts.{part}")
            t0 = time.perf_counter()
            figures = mod.run(args)
            figures["part_wall_s"] = round(time.perf_counter() - t0, 1)
            (out / f"scale_{part}.json").write_text(json.dumps(figures, indent=1, default=float))
            print(f"[{part}]", json.dumps(figures, default=float), flush=True)
    parts = {}
    for part in PARTS:
        f = out / f"scale_{part}.json"
        parts[part] = json.loads(f.read_text()) if f.exists() else {}
    summary: dict = {k: parts[p].get(key) for k, (p, key) in SUMMARY.items()}
    summary["parts"] = parts
    print(json.dumps(summary, default=float))
    return summary


if __name__ == "__main__":
    main()
