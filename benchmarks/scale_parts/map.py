"""Scale part ``map`` (issue 18): the map at 1M-10M items.

1. **Build** (``map_build_s_1m``, ``map_build_s_10m``): `SampledMap` (UMAP on a 50,000-row seeded sample,
   every other row placed from its 3 nearest sample points through FAISS, in chunks) on the shared
   synthetic set (`synth.clustered`, 1M and 10M x 128). Quality of the 1M map on 2,000 seeded rows:
   share of each row's 10 nearest map neighbours in its own cluster (the generator's centre nearest to
   the row), the same for rows of the rare concept, and 10-NN preservation.
2. **Layout kept?** (baseline in the same run: the old path, full UMAP on the FAISS kNN graph, at a size
   it can still build here): on the first 20,000 rows, full UMAP vs the sampled map at the 1M run's
   sampling ratio (1:20) vs umap-learn's own ``transform`` on the same sample: time and the same quality
   figures.
3. **Browser at 1M** (Voila + headless Chromium): first render (click that builds the map -> BokehJS
   reports its document idle, i.e. painted) and lasso latency (pointer up -> the "n selected" count over all items shown), for the map
   view before issue 18 (``map_view.py`` at f85e1b6: 50,000 random points drawn with WebGL) and the new
   one (density image of all items + 10,000 level-of-detail points), alternated, median of the repeats;
   plus a wheel zoom on the new view (wheel -> points redrawn for the view). The lasso (a circle of 5 % of
   the frame's width) and the zoom go to the map's densest spot, located through BokehJS's frame and ranges. The map drawn is the sampled
   map built in step 1.

Figures: map_build_s_1m, map_build_s_10m, map_first_render_ms_1m, map_lasso_ms_1m (new view) and the
``*_before`` baselines. `--quick`: 60,000 rows, no 10M, one browser repeat (smoke only).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BEFORE = "f85e1b6"   # the commit before issue 18's map work: map_view.py as the baseline view


def _labels(X, chunk: int = 250_000) -> np.ndarray:
    """Each row's nearest generator centre (its cluster), in chunks."""
    from scale_parts.synth import centers

    C = centers(X.shape[1])
    c2 = (C ** 2).sum(1)
    out = np.empty(len(X), np.int16)
    for lo in range(0, len(X), chunk):
        x = np.asarray(X[lo:lo + chunk], dtype=np.float32)
        out[lo:lo + chunk] = np.argmin(c2[None, :] - 2 * x @ C.T, axis=1)
    return out


def quality(X, Y, clusters, rare, n_query: int = 2000, k: int = 10, seed: int = 0, exact: bool = True) -> dict:
    """Cluster agreement, rare-concept agreement and (`exact`: it copies X into a flat index) 10-NN
    preservation of map Y on `n_query` rows."""
    import faiss
    from sklearn.neighbors import KDTree

    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(len(X), min(n_query, len(X)), replace=False))
    tree = KDTree(Y)
    nb_map = tree.query(Y[q], k=k + 1, return_distance=False)[:, 1:]
    rq = np.flatnonzero(rare)
    rq = rq[np.sort(rng.choice(len(rq), min(200, len(rq)), replace=False))]
    nb_r = tree.query(Y[rq], k=k + 1, return_distance=False)[:, 1:]
    out = {"cluster_agreement": round(float((clusters[nb_map] == clusters[q, None]).mean()), 4),
           "rare_agreement": round(float(rare[nb_r].mean()), 4)}
    if not exact:
        return out
    ex = faiss.IndexFlatL2(X.shape[1])
    for lo in range(0, len(X), 250_000):
        ex.add(np.ascontiguousarray(X[lo:lo + 250_000], dtype=np.float32))
    nb_x = ex.search(np.ascontiguousarray(X[q], dtype=np.float32), k + 1)[1][:, 1:]
    out["nn10_preservation"] = round(float(np.mean([len(set(a) & set(b)) / k for a, b in zip(nb_map, nb_x)])), 4)
    return out


def build(X, sample_size: int) -> tuple[np.ndarray, dict]:
    from dcai_widgets.mapping_scale import SampledMap

    est = SampledMap(sample_size=sample_size, seed=0)
    t0 = time.perf_counter()
    est.fit(X)
    t1 = time.perf_counter()
    Y = est.transform(X)
    Y[est.sample_ids_] = est.sample_map_
    t2 = time.perf_counter()
    return Y, {"fit_s": round(t1 - t0, 1), "place_s": round(t2 - t1, 1), "build_s": round(t2 - t0, 1),
               "place_us_per_row": round(1e6 * (t2 - t1) / len(X), 2), "search": est.search_settings_}


def compare_small(X, clusters, rare, n: int = 20_000, ratio: int = 20) -> dict:
    """Old path (full UMAP on the FAISS kNN graph) vs the sampled map vs umap-learn's transform."""
    import warnings

    import umap

    from dcai_widgets.mapping import umap_from_knn
    from dcai_widgets.mapping_scale import SampledMap
    from dcai_widgets.neighbors import NeighborIndex

    Xs = np.ascontiguousarray(X[:n], dtype=np.float32)
    cl, ra = clusters[:n], rare[:n]
    out = {"n": n, "sample": n // ratio}
    umap_from_knn(Xs[:200], *NeighborIndex(kind="flat").fit(Xs[:200]).knn_graph(16))   # numba JIT, not timed
    t = time.perf_counter()
    ids, dist = NeighborIndex(kind="flat").fit(Xs).knn_graph(16)
    Yf = umap_from_knn(Xs, ids, dist, seed=0)
    out["full_umap_s"] = round(time.perf_counter() - t, 1)
    out["full_umap"] = quality(Xs, Yf, cl, ra)
    t = time.perf_counter()
    est = SampledMap(sample_size=n // ratio, seed=0, progress=False)
    Ys = est.fit_transform(Xs)
    out["sampled_s"] = round(time.perf_counter() - t, 1)
    out["sampled"] = quality(Xs, Ys, cl, ra)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        red = umap.UMAP(random_state=0, n_jobs=1).fit(Xs[est.sample_ids_])
        t1 = time.perf_counter()
        rest = np.setdiff1d(np.arange(n), est.sample_ids_)
        Yt = np.empty((n, 2), np.float32)
        Yt[est.sample_ids_] = red.embedding_
        Yt[rest] = red.transform(Xs[rest])
    out["umap_transform_s"] = round(time.perf_counter() - t, 1)
    out["umap_transform_place_us_per_row"] = round(1e6 * (time.perf_counter() - t1) / len(rest), 1)
    out["umap_transform"] = quality(Xs, Yt, cl, ra)
    return out


NOTEBOOK = r'''
import sys, time, importlib.util, warnings
warnings.simplefilter("ignore")
import numpy as np, ipywidgets as W
sys.path.insert(0, {bench!r})
from scale_parts.synth import clustered
import dcai_widgets as dw
from dcai_widgets.widgets.map_view import MapView, load_bokehjs
from bokeh.events import RangesUpdate
spec = importlib.util.spec_from_file_location("dcai_widgets.widgets._map_view_before", {before!r})
before = importlib.util.module_from_spec(spec); spec.loader.exec_module(before)
load_bokehjs(); before._BOKEHJS_LOADED = True   # BokehJS goes into the page while this cell runs
X, rare = clustered({n}, work={work!r})
s = dw.Session.from_embeddings(X, ["other", "rare"], store={store!r}, cache_dir={cache!r})
s._map = np.load({mapfile!r})
box, probe, zoom = W.VBox(), W.HTML(), W.HTML()
def make(kind):
    def go(_):
        box.children = []
        t = time.perf_counter()
        v = (before.MapView if kind == "before" else MapView)(s)
        built = time.perf_counter() - t
        def on_range(e):
            zoom.value = f'<span id="zoom" data-drawn="{{len(v.shown)}}" data-t="{{time.time()}}">zoom</span>'
        v.figure.on_event(RangesUpdate, on_range)
        box.children = [v]
        # the densest spot of the map (data coordinates): where the lasso and the zoom go
        lo, hi = v.xy.min(0), v.xy.max(0)
        H = np.histogram2d(v.xy[:, 0], v.xy[:, 1], bins=40, range=[[lo[0], hi[0]], [lo[1], hi[1]]])[0]
        tx, ty = lo + (np.array(np.unravel_index(np.argmax(H), H.shape)) + 0.5) / 40 * (hi - lo)
        probe.value = (f'<span id="built" data-kind="{{kind}}" data-build-s="{{built:.3f}}" '
                       f'data-tx="{{tx}}" data-ty="{{ty}}">built</span>')
    return go
def clear(_):
    box.children = []
    probe.value = ""
buttons = [W.Button(description="clear")]
buttons[0].add_class("go-clear"); buttons[0].on_click(clear)
for kind in ("before", "new"):
    b = W.Button(description=kind); b.add_class("go-" + kind); b.on_click(make(kind)); buttons.append(b)
W.VBox([W.HBox(buttons), probe, zoom, box])
'''

PAINTED = """() => {
  // BokehJS marks a document idle once its views have painted; the map is the newest document
  const B = window.Bokeh;
  if (!B || !B.documents || !B.documents.length) return false;
  const d = B.documents[B.documents.length - 1];
  if (d === window.__lastdoc || !d.is_idle) return false;
  const root = d.roots()[0];
  if (!root || !root.title || !String(root.title.text).startsWith('map of')) return false;
  return Object.values(B.index).some(v => v.model === root) ? performance.now() : false;
}"""

LASTDOC = ("() => { const B = window.Bokeh; "
           "window.__lastdoc = B && B.documents ? B.documents[B.documents.length - 1] : null; }")

TO_PAGE = """([tx, ty]) => {
  // data coordinates -> page pixels through the newest map's frame and ranges
  const B = window.Bokeh, d = B.documents[B.documents.length - 1], root = d.roots()[0];
  const v = Object.values(B.index).find(v => v.model === root);
  const f = v.frame.bbox, r = v.canvas_view.el.getBoundingClientRect(), xr = root.x_range, yr = root.y_range;
  return {x: r.left + f.x0 + (tx - xr.start) / (xr.end - xr.start) * (f.x1 - f.x0),
          y: r.top + f.y1 - (ty - yr.start) / (yr.end - yr.start) * (f.y1 - f.y0), w: f.x1 - f.x0};
}"""

WATCH = """() => {
  window.__sel = []; window.__up = null;
  window.addEventListener('pointerup', () => { window.__up = performance.now(); }, true);
  const obs = new MutationObserver(() => {
    const e = document.querySelector('.dcai-map-selected');
    if (e) { const c = +e.dataset.count; const last = window.__sel[window.__sel.length - 1];
             if (!last || last[1] !== c) window.__sel.push([performance.now(), c]); } });
  obs.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def circle(page, x: float, y: float, r: float, steps: int = 32) -> None:
    """A closed lasso gesture: a circle of radius r pixels around (x, y)."""
    ang = np.linspace(0, 2 * np.pi, steps + 1)
    page.mouse.move(x + r, y)
    page.mouse.down()
    for a in ang[1:]:
        page.mouse.move(x + r * np.cos(a), y + r * np.sin(a))
    page.mouse.up()


def browser(n: int, mapfile: Path, work: str, repeats: int, tmp: Path) -> dict:
    """First render and lasso latency of the map view before issue 18 and now, in Voila + Chromium."""
    import nbformat
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests"))
    from e2e.harness import launch, serve_notebook

    before = tmp / "map_view_before.py"
    before.write_text(subprocess.run(["git", "show", f"{BEFORE}:dcai_widgets/widgets/map_view.py"], cwd=ROOT,
                                     check=True, capture_output=True, text=True).stdout)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK.format(
        bench=str(HERE.parent), before=str(before), n=n, work=work, store=str(tmp / "labels.db"),
        cache=str(tmp / "cache"), mapfile=str(mapfile)))]
    nbformat.write(nb, tmp / "map.ipynb")
    server = serve_notebook(tmp / "map.ipynb", tmp / "voila.log")
    runs: dict[str, list] = {"before": [], "new": []}
    try:
        with sync_playwright() as p:
            br = launch(p)
            page = br.new_page(viewport={"width": 1200, "height": 1300})
            t = time.perf_counter()
            page.goto(server.url, timeout=600_000)
            page.locator(".go-new").first.wait_for(timeout=600_000)
            out = {"page_ready_s": round(time.perf_counter() - t, 1)}
            page.evaluate(WATCH)
            page.on("pageerror", lambda e: print(f"[map] page error: {e}", flush=True))
            for rep in range(repeats):
                for kind in ("before", "new"):
                    page.locator(".go-clear").first.click()     # no map left from the last run
                    page.wait_for_function("() => !document.querySelector('.dcai-map-view') && "
                                           "!document.getElementById('built')", timeout=120_000)
                    page.evaluate("() => { window.__sel = []; }")
                    page.evaluate(LASTDOC)
                    t0 = page.evaluate("() => performance.now()")
                    page.locator(f".go-{kind}").first.click()
                    print(f"[map] {kind} rep {rep}: clicked", flush=True)
                    try:
                        painted = page.wait_for_function(PAINTED, polling="raf", timeout=300_000).json_value()
                    except Exception:
                        page.screenshot(path=str(Path(work) / "map_browser_failed.png"))
                        raise
                    built = page.locator("#built").first
                    built.wait_for(timeout=60_000)
                    build_s = float(built.get_attribute("data-build-s"))
                    target = [float(built.get_attribute("data-tx")), float(built.get_attribute("data-ty"))]
                    time.sleep(1.0)
                    at = page.evaluate(TO_PAGE, target)     # the densest spot, in page pixels
                    tx, ty, radius = at["x"], at["y"], 0.05 * at["w"]
                    circle(page, tx, ty, radius)
                    time.sleep(4.0)    # every message of the gesture has arrived
                    sel = page.evaluate("() => window.__sel")
                    up = page.evaluate("() => window.__up")
                    final = sel[-1][1] if sel else 0
                    first_final = next(t for t, c in sel if c == final) if sel else None
                    run = {"first_render_ms": round(painted - t0, 1), "python_build_ms": round(1000 * build_s, 1),
                           "lasso_ms": round(first_final - up, 1) if sel else None, "selected": final}
                    if kind == "new":
                        page.mouse.move(tx, ty)
                        for _ in range(6):
                            page.mouse.wheel(0, -240)
                        tw = time.time()
                        page.wait_for_function(
                            f"() => {{ const e = document.getElementById('zoom'); return e && +e.dataset.t > {tw - 0.5}; }}",
                            timeout=60_000)
                        run["zoom_ms"] = round(1000 * (time.time() - tw), 1)   # bokeh's wheel debounce included
                        time.sleep(2.0)
                        run["zoom_drawn"] = int(page.locator("#zoom").first.get_attribute("data-drawn"))
                    runs[kind].append(run)
                    print(f"[map] browser {kind} rep {rep}: {run}", flush=True)
            br.close()
    finally:
        server.kill()
    for kind, rs in runs.items():
        for key in ("first_render_ms", "lasso_ms", "python_build_ms"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            out[f"{key}_{kind}"] = round(float(np.median(vals)), 1) if vals else None
        out[f"selected_{kind}"] = rs[-1]["selected"] if rs else None
    zooms = [r["zoom_ms"] for r in runs["new"] if "zoom_ms" in r]
    out["zoom_ms_new"] = round(float(np.median(zooms)), 1) if zooms else None
    out["zoom_drawn_new"] = runs["new"][-1].get("zoom_drawn") if runs["new"] else None
    out["runs"] = runs
    return out


def python_side(n: int, mapfile: Path, work: str, tmp: Path) -> dict:
    """Kernel-side costs of the new view at n: build, one pan/zoom redraw, a lasso over all items."""
    import warnings

    import dcai_widgets as dw
    from dcai_widgets.widgets.map_view import MapView, geometry_mask
    from scale_parts.synth import clustered

    warnings.simplefilter("ignore")
    X, _ = clustered(n, work=work)
    s = dw.Session.from_embeddings(X, ["other", "rare"], store=tmp / "py.db", cache_dir=tmp / "pycache")
    s._map = np.load(mapfile)
    t = time.perf_counter()
    MapView(s, grid=False)
    out = {"view_build_cold_s": round(time.perf_counter() - t, 3)}    # bokeh imports, BokehJS inline
    t = time.perf_counter()
    v = MapView(s, grid=False)
    out["view_build_s"] = round(time.perf_counter() - t, 3)
    xy = v.xy
    cx, cy = xy[int(np.random.default_rng(0).integers(len(xy)))]   # around an item: never an empty view
    sx, sy = xy.std(0) / 20
    t = time.perf_counter()
    v.show_range(cx - sx, cx + sx, cy - sy, cy + sy)
    out["zoom_redraw_s"] = round(time.perf_counter() - t, 3)
    out["zoom_drawn"], out["zoom_full"] = len(v.shown), not v._image.visible
    sx, sy = sx * 4, sy * 4    # a lasso around a cluster-sized region
    ang = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    poly = {"type": "poly", "x": (cx + sx * np.cos(ang)).tolist(), "y": (cy + sy * np.sin(ang)).tolist()}
    t = time.perf_counter()
    mask = geometry_mask(xy, poly)
    out["lasso_200_vertices_s"] = round(time.perf_counter() - t, 3)
    out["lasso_selected"] = int(mask.sum())
    g = MapView(s, grid=True)

    class Lasso:   # the whole kernel-side handling of a browser lasso: mask, selection, grid, count
        geometry = poly

    t = time.perf_counter()
    g._on_geometry(Lasso())
    out["lasso_handler_s"] = round(time.perf_counter() - t, 3)
    return out


def run(args) -> dict:
    """All steps; ``DCAI_MAP_STEPS`` (comma-separated subset of build,compare,python,browser,10m,quality10m) runs
    some of them alone (the browser steps then draw the 1M map an earlier build saved in --work)."""
    sys.path.insert(0, str(HERE.parent))
    from scale_parts.synth import clustered

    steps = set(os.environ.get("DCAI_MAP_STEPS", "build,compare,python,browser,10m").split(","))
    n1 = 60_000 if args.quick else 1_000_000     # quick: still above the view's 50,000 drawn points
    sample = 3_000 if args.quick else 50_000
    fig: dict = {"load_avg_start": [round(x, 1) for x in os.getloadavg()], "n": n1, "sample_size": sample,
                 "steps": sorted(steps)}
    work = Path(args.work)
    mapfile = work / f"map_sampled_n{n1}.npy"
    X, rare = clustered(n1, 128, work=args.work)
    clusters = _labels(X)
    if "build" in steps:
        Y, b = build(X, sample)
        fig["build_1m"] = b
        fig["map_build_s_1m"] = b["build_s"]
        np.save(mapfile, Y)
        fig["quality_1m"] = quality(X, Y, clusters, rare)
        print("[map] build", json.dumps(fig, default=float), flush=True)
    if "compare" in steps:
        fig["compare_20k"] = compare_small(X, clusters, rare, n=5_000 if args.quick else 20_000)
        print("[map] compare", json.dumps(fig["compare_20k"], default=float), flush=True)
    with tempfile.TemporaryDirectory(prefix="dcai-map-") as tmp:
        if "python" in steps:
            fig["python_side_1m"] = python_side(n1, mapfile, args.work, Path(tmp))
            print("[map] python side", json.dumps(fig["python_side_1m"], default=float), flush=True)
        if "browser" in steps:
            b = browser(n1, mapfile, args.work, 1 if args.quick else 3, Path(tmp))
            fig["browser_1m"] = b
            fig["map_first_render_ms_1m"] = b["first_render_ms_new"]
            fig["map_lasso_ms_1m"] = b["lasso_ms_new"]
            fig["map_first_render_ms_1m_before"] = b["first_render_ms_before"]
            fig["map_lasso_ms_1m_before"] = b["lasso_ms_before"]
    map10 = work / "map_sampled_n10000000.npy"
    if "10m" in steps and not args.quick and args.n >= 10_000_000:
        X10, _ = clustered(10_000_000, 128, work=args.work)
        Y10, b10 = build(X10, sample)
        fig["build_10m"] = b10
        fig["map_build_s_10m"] = b10["build_s"]
        np.save(map10, Y10)
        del Y10
        steps.add("quality10m")
    if "quality10m" in steps and map10.exists():   # no 10-NN preservation: exact search would copy 5 GB
        X10, rare10 = clustered(10_000_000, 128, work=args.work)
        fig["quality_10m"] = quality(X10, np.load(map10), _labels(X10), rare10, exact=False)
        print("[map] quality 10m", json.dumps(fig["quality_10m"]), flush=True)
    fig["load_avg_end"] = [round(x, 1) for x in os.getloadavg()]
    return fig
