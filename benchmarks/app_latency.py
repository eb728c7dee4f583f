"""Keypress -> next item shown, in the served digits app, in headless Chromium (median and p95 over 50 labels).

The time is taken inside the page: from the keydown event (a capture listener on window, which runs before
the app's own listener) to the first animation frame after the Label panel's item caption changes (the
kernel commits the label to SQLite before it sends the next item). Baseline, same run: a naive panel served
the same way that, on each key, commits the label and then rebuilds the whole widget tree (new image, new
buttons, recounted progress) instead of updating a prefetched card in place.

usage: python benchmarks/app_latency.py [--labels 50] [--warmup 5]
Last line: JSON with p50_ms, p95_ms (the app), baseline figures and the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from e2e.harness import CHROMIUM_ARGS, PANEL_ID, Server, serve_notebook

NAIVE_NOTEBOOK = r'''
import os
import ipywidgets as W
import numpy as np
import dcai_widgets as dw
from dcai_widgets.widgets.keyboard import KeyboardShortcuts

s = dw.Session.open("digits", store=os.environ["DCAI_STORE"])
order = [int(i) for i in np.random.default_rng(0).permutation(len(s))]
state = {"k": 0, "seq": 0}
root = W.VBox()

def build():
    """Rebuild everything from scratch: what a panel without prefetch or in-place updates does."""
    i = order[state["k"]]
    state["seq"] += 1
    v = s.label_vector()
    counts = " · ".join(f"{c}: {int((v == k).sum())}" for k, c in enumerate(s.classes))
    root.children = [
        W.Image(value=s.items.thumbnail(i, size=224), format="png"),
        W.HTML(f'<span class="dcai-item-id" data-item="{i}" data-seq="{state["seq"]}">#{i}</span>'),
        W.HBox([W.Button(description=c) for c in s.classes]),
        W.IntProgress(value=int((v >= 0).sum()), max=len(s)),
        W.HTML(counts),
    ]

def on_key(key):
    s.label([order[state["k"]]], [key], annotator="naive")
    state["k"] += 1
    build()

kb = KeyboardShortcuts(keys=list(s.classes))
kb.on_key(on_key)
build()
W.VBox([root, kb], _dom_classes=["dcai-label-panel"])
'''

INSTRUMENT = """
() => {
  window.__lat = [];
  window.addEventListener('keydown', () => { window.__t0 = performance.now(); }, true);
  const root = document.body;
  let last = null;
  new MutationObserver(() => {
    const e = document.querySelector('%s');
    if (!e || e.dataset.seq === last) return;
    last = e.dataset.seq;
    const t0 = window.__t0;
    if (t0 === undefined) return;
    window.__t0 = undefined;
    requestAnimationFrame(() => window.__lat.push(performance.now() - t0));
  }).observe(root, {subtree: true, childList: true, attributes: true, characterData: true});
}
""" % PANEL_ID


def measure(browser, url: str, n: int, warmup: int) -> list[float]:
    """Press digit keys n + warmup times, each after the previous item showed; return the n latencies (ms)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, timeout=180_000)
    page.locator(PANEL_ID).first.wait_for(timeout=180_000)
    time.sleep(1.0)
    page.evaluate(INSTRUMENT)
    for k in range(n + warmup):
        before = page.evaluate("() => window.__lat.length")
        page.keyboard.press(str(k % 10))
        page.wait_for_function(f"() => window.__lat.length > {before}", timeout=30_000)
        time.sleep(0.05)  # a person does not type faster than ~20 keys/s
    lat = page.evaluate("() => window.__lat")
    page.close()
    return [float(x) for x in lat[warmup:]]


def commit_only(n: int) -> list[float]:
    """Milliseconds of session.label for one item (the SQLite commit, fsync'd), in this process."""
    import dcai_widgets as dw

    with tempfile.TemporaryDirectory() as d:
        s = dw.Session.open("digits", store=Path(d) / "c.db")
        out = []
        for k in range(n):
            t = time.perf_counter()
            s.label([k], [str(k % 10)], annotator="bench")
            out.append((time.perf_counter() - t) * 1000)
        return out


def main() -> None:
    import nbformat
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dcai-bench-"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(NAIVE_NOTEBOOK)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp / "naive.ipynb")

    server = Server(tmp / "app.db", tmp / "app.log", annotator="bench")
    naive_server = serve_notebook(tmp / "naive.ipynb", tmp / "naive.log",
                                  env={**os.environ, "DCAI_STORE": str(tmp / "naive.db")})
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            app = measure(browser, server.url, a.labels, a.warmup)
            naive = measure(browser, naive_server.url, a.labels, a.warmup)
            browser.close()
    finally:
        server.kill()
        naive_server.kill()
    commit = commit_only(a.labels)

    def q(x, p):
        return float(np.percentile(x, p))

    res = {
        "labels": len(app), "p50_ms": round(q(app, 50), 1), "p95_ms": round(q(app, 95), 1),
        "max_ms": round(max(app), 1),
        "baseline_rebuild_p50_ms": round(q(naive, 50), 1), "baseline_rebuild_p95_ms": round(q(naive, 95), 1),
        "speedup_p95_vs_rebuild": round(q(naive, 95) / q(app, 95), 2),
        "commit_only_p50_ms": round(q(commit, 50), 2), "commit_only_p95_ms": round(q(commit, 95), 2),
        "goal_p95_ms": 150, "meets_goal": q(app, 95) < 150,
    }
    print(f"app (prefetch, in-place update): p50 {res['p50_ms']} ms, p95 {res['p95_ms']} ms over {len(app)} labels")
    print(f"baseline (rebuild whole widget): p50 {res['baseline_rebuild_p50_ms']} ms, "
          f"p95 {res['baseline_rebuild_p95_ms']} ms")
    print(f"ratio baseline/app at p95: {res['speedup_p95_vs_rebuild']}x; "
          f"SQLite commit alone p50 {res['commit_only_p50_ms']} ms")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
