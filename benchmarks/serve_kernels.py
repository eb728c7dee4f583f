"""Kernels left behind by page reloads: plain Voila (the old `serve`) vs `dcai-widgets serve` (issue 13).

Each page load of the app starts a kernel. Plain Voila never shuts one down (its page-close beacon is
refused for a missing `_xsrf`, and no culler runs), so reloads pile kernels up. This opens the app in
headless Chromium, reloads it `--reloads` times, and counts the server's kernel processes and their
memory after the reloads and again `--settle` seconds after the page is closed. Both servers are run in
the same session on the same store and data. Last line: one JSON object with both figures.

usage: python benchmarks/serve_kernels.py [--reloads 5] [--settle 20]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import PANEL_ID, Served, Server, launch


def kernel_processes(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in kids if "ipykernel_launcher" in " ".join(p.cmdline())]


def census(pid: int) -> tuple[int, float]:
    procs = kernel_processes(pid)
    rss = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return len(procs), rss / 2**20


def run(server: Served, reloads: int, settle: float) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})  # a tab in a window:
        page = context.new_page()  # (a bare browser.new_page() closed this way never runs its unload)
        page.goto(server.url, timeout=300_000)
        page.locator(PANEL_ID).first.wait_for(timeout=300_000)
        for _ in range(reloads):
            page.reload(timeout=300_000)
            page.locator(PANEL_ID).first.wait_for(timeout=300_000)
        time.sleep(2)
        n, mb = census(server.proc.pid)
        page.close(run_before_unload=True)
        time.sleep(settle)
        n_after, mb_after = census(server.proc.pid)
        context.close()
        browser.close()
    return {"page_loads": reloads + 1, "kernels_after_reloads": n, "kernel_mb_after_reloads": round(mb),
            "kernels_after_close": n_after, "kernel_mb_after_close": round(mb_after)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--settle", type=float, default=20.0)
    a = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "DCAI_DATA": "digits", "DCAI_STORE": str(tmp / "labels.db"), "DCAI_ANNOTATOR": "bench"}
        env.pop("DCAI_TEAM", None)
        baseline = Served([sys.executable, "-m", "voila", str(ROOT / "dcai_widgets" / "notebooks" / "app.ipynb"),
                           "--port={port}", "--no-browser", "--Voila.ip=127.0.0.1", "--theme=light"],
                          tmp / "voila.log", env=env, what="plain voila")
        try:
            out["plain_voila"] = run(baseline, a.reloads, a.settle)
        finally:
            baseline.kill()
        guarded = Server(tmp / "labels.db", tmp / "serve.log", annotator="bench")
        try:
            out["dcai_serve"] = run(guarded, a.reloads, a.settle)
        finally:
            guarded.kill()
    out["settle_s"] = a.settle
    print(json.dumps(out))


if __name__ == "__main__":
    main()
