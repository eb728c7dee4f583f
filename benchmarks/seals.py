"""SEALS vs full scan: same strategy, estimator and seed set; quality, fraction scored, selection time.

Claims checked (issue 4, Coleman et al. AAAI 2022): at 1M points the candidate pool scores <= 5% of
the data, selection is >= 20x faster per round than a full scan, and average precision on a held-out
split stays within 2 points; information density becomes tractable; the map and neighbour grid stay
responsive.  Also runs on real embeddings (ADBench CIFAR10_0, MNIST with one digit made rare).

    python benchmarks/seals.py                 # 1M x 128 synthetic + real data + render timings
    python benchmarks/seals.py --n 100000      # quick run
Ends with one JSON line of the figures (the synthetic case at the largest budget).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import average_precision_score
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dcai_widgets.neighbors import NeighborIndex
from dcai_widgets.seals import InformationDensity, Seals
from dcai_widgets.seals.engine import EXPLORE_QUOTA
from dcai_widgets.seals.strategies import MISSING


def shared_data() -> Path | None:
    env = os.environ.get("DCAI_SHARED_DATA")
    p = Path(env) if env else ROOT / ".." / "shared" / "data"
    return p.resolve() if p.is_dir() else None


# -- data ------------------------------------------------------------------------------------------
def make_rare_mixture(n: int, d: int = 128, n_clusters: int = 1000, rare_frac: float = 0.001,
                      n_rare_clusters: int = 5, concept: str = "attribute", noise: float = 0.5,
                      level: float | None = None, seed: int = 0):
    """Gaussian mixture of many clusters (uneven sizes and spreads) with a rare concept made of a few small
    sub-clusters, each overlapping a common "host" cluster.  Returns X float32 (n, d), y {0,1}.

    concept="attribute": the rare sub-clusters share one latent attribute (their coordinate along a
    direction u is raised to `level`, where common clusters sit at N(0, 1)), so the concept is linearly
    decodable everywhere, as linear probes on learned embeddings assume.  concept="offset": each rare
    sub-cluster is shifted from its host in its own random direction, so no single direction separates
    the concept globally (a harder, adversarial case for any locally trained linear model).
    """
    if concept not in ("attribute", "offset"):
        raise ValueError(f"concept must be 'attribute' or 'offset'; got {concept!r}")
    level = (3.0 if concept == "attribute" else 4.0) if level is None else level
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, (n_clusters, d)).astype(np.float32)
    spread = rng.uniform(0.7, 1.3, n_clusters).astype(np.float32)
    n_rare = max(n_rare_clusters, int(round(n * rare_frac)))
    hosts = rng.choice(n_clusters, n_rare_clusters, replace=False)
    rare_centers = centers[hosts].copy()
    if concept == "attribute":
        u = rng.normal(size=d).astype(np.float32)
        u /= np.linalg.norm(u)
        rare_centers += (level - rare_centers @ u)[:, None] * u[None, :]
    else:
        dirs = rng.normal(size=(n_rare_clusters, d)).astype(np.float32)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        rare_centers += level * dirs
    all_centers = np.vstack([centers, rare_centers])
    all_spread = np.concatenate([spread, np.full(n_rare_clusters, 0.8, np.float32)]) * noise
    w = rng.dirichlet(np.full(n_clusters, 2.0))
    assign = np.concatenate([rng.choice(n_clusters, n - n_rare, p=w),
                             n_clusters + rng.integers(0, n_rare_clusters, n_rare)])
    rng.shuffle(assign)
    X = np.empty((n, d), np.float32)
    for lo in range(0, n, 200_000):
        a = assign[lo:lo + 200_000]
        X[lo:lo + len(a)] = all_centers[a] + rng.standard_normal((len(a), d), np.float32) * all_spread[a, None]
    y = (assign >= n_clusters).astype(np.int64)
    return X, y


def load_cifar(data: Path):
    z = np.load(data / "adbench" / "CIFAR10_0.npz")
    return z["X"].astype(np.float32), z["y"].astype(np.int64)


def load_mnist_rare(data: Path, digit: int = 7, rare_frac: float = 0.01, seed: int = 0):
    """MNIST test set, PCA-50 features; one digit subsampled to rare_frac of the set is the concept."""
    d = data / "mnist-test"
    img = np.frombuffer(gzip.open(d / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 784)
    lab = np.frombuffer(gzip.open(d / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8).astype(np.int64)
    rng = np.random.default_rng(seed)
    others = np.flatnonzero(lab != digit)
    n_rare = int(round(rare_frac * len(others) / (1 - rare_frac)))
    keep = np.sort(np.concatenate([others, rng.choice(np.flatnonzero(lab == digit), n_rare, replace=False)]))
    X = PCA(50, random_state=0).fit_transform(img[keep].astype(np.float32) / 255.0).astype(np.float32)
    return X, (lab[keep] == digit).astype(np.int64)


def split(n: int, test_frac: float, seed: int):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = int(round(n * test_frac))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def seed_labels(y: np.ndarray, n_pos: int, n_neg: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.full(len(y), MISSING, np.int64)
    lab[rng.choice(np.flatnonzero(y == 1), n_pos, replace=False)] = 1
    lab[rng.choice(np.flatnonzero(y == 0), n_neg, replace=False)] = 0
    return lab


# -- one active-learning run -------------------------------------------------------------------------
ESTIMATOR = None   # None: Seals' default (balanced logistic regression); set from --estimator


def make_estimator(name: str):
    """The estimator both SEALS and the full scan use: 'logreg' (default) or 'mlp' (costlier per item)."""
    if name == "logreg":
        return None
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(256,), max_iter=300, random_state=0)


def run_loop(X, index, y, lab0, X_test, y_test, strategy, full_scan, budgets, batch, k, desc="",
             background=0, explore=0.0, graph=None, random_state=0, explore_quota=None):
    """Label `batch` candidates per round until each budget; evaluate at every budget.  `graph`: a
    precomputed kNN table (Seals neighbors="graph") looked up instead of searching each round."""
    s = Seals.from_arrays(X, index, k=k, strategy=strategy, target=1, full_scan=full_scan, batch=batch,
                          estimator=ESTIMATOR, background_negatives=background, explore=explore,
                          graph=None if full_scan else graph, random_state=random_state,
                          **({} if explore_quota is None else {"explore_quota": explore_quota}))
    lab = lab0.copy()
    at = {}
    bar = tqdm(total=max(budgets), initial=int((lab != MISSING).sum()), desc=desc, leave=False)
    while True:
        n_lab = int((lab != MISSING).sum())
        s.fit(lab)
        if n_lab in budgets:
            p = s.estimator_.predict_proba(X_test)[:, list(s.estimator_.classes_).index(1)]
            at[n_lab] = dict(ap=float(average_precision_score(y_test, p)),
                             recall_heldout=float(((p >= 0.5) & (y_test == 1)).sum() / max(1, y_test.sum())),
                             found=int((lab == 1).sum()), recall_found=float((lab == 1).sum() / y.sum()),
                             fraction_scored=float(s.pool_fraction))
        nxt = [b for b in budgets if b > n_lab]
        if not nxt:
            break
        ids = s.candidates(min(batch, nxt[0] - n_lab))
        lab[ids] = y[ids]
        bar.update(len(ids))
    bar.close()
    rep = s.report()
    picks = hashlib.sha1(np.flatnonzero(lab != MISSING).tobytes()).hexdigest()[:12]   # the labeled set, hashed
    return dict(at=at, picks=picks, setup_s=float(getattr(s, "setup_s_", 0.0)), select_s=rep["select_s"].tolist(), search_s=rep["search_s"].tolist(),
                score_s=rep["score_s"].tolist(), train_s=rep["train_s"].tolist(),
                pool_size=rep["pool_size"].tolist(), n_scored=rep["n_scored"].tolist()), s, lab


def compare(name, X, y, X_test, y_test, index, strategies, budgets, batch, k, repeats, n_pos, n_neg, background=0,
            explore=0.0, full_cache=None, graph=None, explore_quota=None):
    """SEALS vs full scan for each strategy and seed set; prints a table, returns the figures.
    `background`: weak background negatives (Seals(background_negatives=...)), the same for both;
    `explore`: SEALS' exploration sample (a full scan scores everything anyway).  `full_cache` (a dict)
    reuses full-scan runs across explore settings: they do not depend on it.  `graph`: SEALS looks
    neighbours up in this kNN table instead of searching (the same neighbours, so the same picks).
    Seed set r uses random_state 100 + r for both (its own background and exploration samples)."""
    out = {}
    full_cache = {} if full_cache is None else full_cache
    for strat in strategies:
        runs = {"seals": [], "full": []}
        for r in range(repeats):
            lab0 = seed_labels(y, n_pos, n_neg, seed=100 + r)
            for mode in ("seals", "full"):
                key = (name, strat, r, background)
                if mode == "full" and key in full_cache:
                    runs[mode].append(full_cache[key])
                    continue
                res, _, _ = run_loop(X, index, y, lab0, X_test, y_test, strat, mode == "full", budgets, batch, k,
                                     desc=f"{name} {strat} {mode} #{r}", background=background, explore=explore,
                                     graph=graph, random_state=100 + r, explore_quota=explore_quota)
                runs[mode].append(res)
                if mode == "full":
                    full_cache[key] = res
        fig = {}
        for b in budgets:
            row = {}
            for mode in ("seals", "full"):
                ats = [run["at"][b] for run in runs[mode]]
                for key in ("ap", "recall_found", "recall_heldout", "fraction_scored"):
                    row[f"{key}_{mode}"] = float(np.mean([a[key] for a in ats]))
            sel = {m: float(np.mean([np.mean(run["select_s"]) for run in runs[m]])) for m in runs}
            row["select_s_seals"], row["select_s_full"] = sel["seals"], sel["full"]
            fig[b] = row
        last = {m: [run["select_s"][-1] for run in runs[m]] for m in runs}
        sel_mean = {m: float(np.mean([np.mean(run["select_s"]) for run in runs[m]])) for m in runs}
        fig["speedup"] = sel_mean["full"] / sel_mean["seals"]
        fig["speedup_last_round"] = float(np.mean(last["full"]) / np.mean(last["seals"]))
        med = {m: float(np.median(np.concatenate([run["select_s"] for run in runs[m]]))) for m in runs}
        fig["speedup_median"] = med["full"] / med["seals"]
        fig["select_s_per_round"] = sel_mean
        fig["search_s_per_round_seals"] = float(np.mean([np.mean(run["search_s"]) for run in runs["seals"]]))
        fig["setup_s_seals"] = float(np.mean([run["setup_s"] for run in runs["seals"]]))   # once, before round 0
        fig["score_s_per_round"] = {m: float(np.mean([np.mean(run["score_s"]) for run in runs[m]])) for m in runs}
        fig["background_negatives"] = background
        fig["explore"] = explore
        fig["neighbors"] = "search" if graph is None else "graph"
        fig["picks_seals"] = [run["picks"] for run in runs["seals"]]
        fig["n_scored_last_seals"] = float(np.mean([run["n_scored"][-1] for run in runs["seals"]]))
        fig["pool_last_seals"] = float(np.mean([run["pool_size"][-1] for run in runs["seals"]]))
        fig["train_s_per_round"] = float(np.mean([np.mean(run["train_s"]) for run in runs["seals"]]))
        fig["ap_runs"] = {m: [run["at"][max(budgets)]["ap"] for run in runs[m]] for m in runs}
        out[strat] = fig
        print(f"\n[{name}] strategy={strat} background_negatives={background} explore={explore} "
              f"neighbors={fig['neighbors']}  (mean of "
              f"{repeats} seed sets; selection = search + scoring; SEALS scored {fig['n_scored_last_seals']:,.0f} "
              f"in the last round, kNN pool {fig['pool_last_seals']:,.0f})")
        print(f"{'labels':>7} {'AP seals':>9} {'AP full':>8} {'found% S':>9} {'found% F':>9} {'scored% S':>10}")
        for b in budgets:
            row = fig[b]
            print(f"{b:>7} {row['ap_seals']:9.3f} {row['ap_full']:8.3f} {100 * row['recall_found_seals']:9.1f} "
                  f"{100 * row['recall_found_full']:9.1f} {100 * row['fraction_scored_seals']:10.2f}")
        print(f"selection s/round: SEALS {sel_mean['seals']:.4f}  full {sel_mean['full']:.4f}  "
              f"ratio full/SEALS {fig['speedup']:.1f}x (median round {fig['speedup_median']:.1f}x, "
              f"last round {fig['speedup_last_round']:.1f}x); SEALS search {fig['search_s_per_round_seals']:.4f}, "
              f"one-time setup {fig['setup_s_seals']:.3f}; "
              f"training s/round {fig['train_s_per_round']:.3f} (same for both)")
    return out


def density_tractability(X, y, index, k, n_labels, seed=0):
    """Information density over the SEALS pool (exact) vs over everything (quadratic: measured on growing
    subsamples, extrapolated with a fitted a*m^2)."""
    rng = np.random.default_rng(seed)
    lab = seed_labels(y, 5, 95, seed=100)
    s = Seals.from_arrays(X, index, k=k, strategy="most_likely_positive", target=1, batch=100)
    while (lab != MISSING).sum() < n_labels:
        ids = s.fit(lab).candidates(min(100, n_labels - int((lab != MISSING).sum())))
        lab[ids] = y[ids]
    s.fit(lab)
    clf, cand = s.estimator_, s.candidates_pool_
    labeled = np.flatnonzero(lab != MISSING)
    strat = InformationDensity()
    rows = np.concatenate([labeled, cand])
    yr = np.concatenate([(lab[labeled] == 1).astype(np.int64), np.full(len(cand), MISSING)])
    t0 = time.perf_counter()
    strat.score(X[rows], yr, clf)
    t_pool = time.perf_counter() - t0
    unl = np.flatnonzero(lab == MISSING)
    sizes, times = [], []
    for m in (5_000, 10_000, 20_000):
        if m > len(unl):
            break
        sub = rng.choice(unl, m, replace=False)
        t0 = time.perf_counter()
        strat.score(X[sub], np.full(m, MISSING), clf)
        sizes.append(m)
        times.append(time.perf_counter() - t0)
    a = float(np.dot(np.square(sizes), times) / np.dot(np.square(sizes), np.square(sizes)))
    full_est = a * len(unl) ** 2
    print(f"\n[information density] SEALS pool of {len(cand):,} scored exactly in {t_pool:.2f} s; full scan over "
          f"{len(unl):,} measured on subsamples {dict(zip(sizes, np.round(times, 3)))} s -> a*m^2 extrapolation "
          f"{full_est:,.0f} s ({full_est / 3600:.1f} h) per round; ratio {full_est / t_pool:,.0f}x")
    return dict(pool=len(cand), seals_s=t_pool, full_measured={str(m): t for m, t in zip(sizes, times)},
                full_extrapolated_s=full_est, ratio=full_est / t_pool)


def render_times(X, y, index, n_grid=24, map_xy=None):
    """Explore panel at N points: map build (bokeh, downsampled drawing), its serialized size, a lasso over
    all N points, a neighbour-grid search from a click, and a rare-concept refit. The map coordinates are
    `map_xy` (e.g. the Session's UMAP map of these points, saved by an earlier run: --map) or else a PCA-2
    stand-in; the index is the benchmark's."""
    import warnings

    import dcai_widgets as dw
    from dcai_widgets.widgets.explore import ExplorePanel

    out = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        s = dw.Session.from_embeddings(X, ["other", "rare"], store=Path(tmp) / "labels.db",
                                       cache_dir=Path(tmp) / "cache")
        out["session_s"] = time.perf_counter() - t0
        if map_xy is not None:
            if map_xy.shape != (len(X), 2):
                raise ValueError(f"--map holds {map_xy.shape} coordinates, not ({len(X)}, 2)")
            s._map = np.asarray(map_xy, dtype=np.float32)
            out["map"] = "umap (given)"
        else:
            sample = np.random.default_rng(0).choice(len(X), min(50_000, len(X)), replace=False)
            pca = PCA(2, random_state=0).fit(X[sample])
            s._map = pca.transform(X).astype(np.float32)      # stand-in layout, injected (see docstring)
            out["map"] = "pca stand-in"
        s._index = index                                   # the benchmark's tuned IVF index
        pos = np.flatnonzero(y == 1)
        neg = np.flatnonzero(y == 0)
        s.label(np.concatenate([pos[:5], neg[:95]]), [1] * 5 + [0] * 95)
        t0 = time.perf_counter()
        panel = ExplorePanel(s, k=n_grid, background=False)
        out["panel_build_s"] = time.perf_counter() - t0
        try:
            import logging

            from bokeh.embed import json_item

            # json_item warns that Python callbacks do not work standalone; only the payload size is wanted
            logging.getLogger("bokeh.embed.util").setLevel(logging.ERROR)
            t0 = time.perf_counter()
            doc = json.dumps(json_item(panel.map_view.figure))
            out["map_serialize_s"] = time.perf_counter() - t0
            out["map_json_mb"] = len(doc) / 1e6
        except Exception as e:  # serialization of a model already in a document may be refused
            out["map_serialize_note"] = f"{type(e).__name__}: {e}"[:200]
        out["map_points_drawn"] = len(panel.map_view.shown)
        xy = s._map
        x0, x1 = np.percentile(xy[:, 0], [40, 60])
        y0, y1 = np.percentile(xy[:, 1], [40, 60])
        t0 = time.perf_counter()
        sel = panel.map_view.select_region({"type": "poly", "x": [x0, x1, x1, x0], "y": [y0, y0, y1, y1]})
        out["lasso_all_points_s"] = time.perf_counter() - t0
        out["lasso_selected"] = len(sel)
        times = []
        for q in np.random.default_rng(1).choice(len(X), 5, replace=False):
            t0 = time.perf_counter()
            got = panel.search([int(q)])
            times.append(time.perf_counter() - t0)
            assert len(got) == n_grid
        out["neighbor_grid_s"] = float(np.median(times))
        t0 = time.perf_counter()
        got = panel.hunt("rare")
        out["rare_hunt_fit_s"] = time.perf_counter() - t0
        out["rare_hunt_pool"] = int(panel.seals.pool_size)
        out["rare_hunt_precision_first_page"] = float(np.mean(y[got] == 1)) if got else 0.0
        # what the user waits for per page labeled in rare-concept mode: the store commit plus the refit
        # (the panel refits on the label event; background=False runs it in this thread). The first hunt
        # above also pays SEALS' one-time setup (exploration draw, pool arrays, row buffer).
        times = []
        for _ in range(3):
            if not got:
                break
            t0 = time.perf_counter()
            s.label(got, [int(v) for v in y[got]])
            times.append(time.perf_counter() - t0)
            got = panel.seals.candidates()      # the page the refit put on screen
        if times:
            out["rare_label_page_refit_s"] = float(np.median(times))
        # after a model propagated labels to every item (a LANCET fit does): the map recolours from the
        # event, and a grid page reads only its own items' labels
        t0 = time.perf_counter()
        s.set_propagated(np.arange(len(X)), ["rare" if v else "other" for v in y], np.full(len(X), 0.9))
        out["propagate_all_s"] = time.perf_counter() - t0        # N store rows written + the map's recolour
        times = []
        for q in np.random.default_rng(2).choice(len(X), 5, replace=False):
            t0 = time.perf_counter()
            panel.search([int(q)])
            times.append(time.perf_counter() - t0)
        out["neighbor_grid_propagated_s"] = float(np.median(times))
        t0 = time.perf_counter()        # baseline: what each grid page and map recolour read before
        s.propagated()
        s.label_vector()
        out["baseline_full_label_read_s"] = time.perf_counter() - t0
    print(f"\n[render at {len(X):,} points] " + ", ".join(
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in out.items()))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic points (default 1,000,000)")
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--concept", default="attribute", choices=["attribute", "offset"],
                    help="how the rare concept sits in the mixture (see make_rare_mixture)")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--budgets", default="200,500,1000")
    ap.add_argument("--repeats", type=int, default=10, help="seed sets per strategy (AP moves 10-25 points "
                    "between seed sets at 1M)")
    ap.add_argument("--nlist", type=int, default=2048,
                    help="IVF lists for large N (2048: lists of <= ~4k vectors at 1M, 2x faster SEALS search than 1024)")
    ap.add_argument("--nprobe", type=int, default=16, help="start value; tuned to --recall unless --no-tune")
    ap.add_argument("--recall", type=float, default=0.95, help="neighbour recall@k the IVF search is tuned to")
    ap.add_argument("--rare-clusters", type=int, default=5, help="sub-clusters making up the rare concept")
    ap.add_argument("--estimator", default="logreg", choices=["logreg", "mlp"],
                    help="classifier scored each round (mlp: 128-256-2, about 256x the per-item cost)")
    ap.add_argument("--strategies", default="entropy,most_likely_positive")
    ap.add_argument("--background", default="2000",
                    help="background_negatives values to compare (weak negatives; 0 = off); headline = the last")
    ap.add_argument("--explore", default="0,0.01",
                    help="SEALS exploration sample sizes to compare (count, or fraction of N; 0 = the paper's "
                         "SEALS); headline = the last")
    ap.add_argument("--explore-quota", type=float, default=None,
                    help="Seals(explore_quota=...) for SEALS (default: the engine's default)")
    ap.add_argument("--neighbors", default="search,graph",
                    help="how SEALS finds a new label's neighbours: search (each round, the paper) and/or graph "
                         "(looked up in a kNN table built once); headline = the last")
    ap.add_argument("--index", default="ivf", choices=["ivf", "hnsw"], help="index kind for large N")
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--real-k", type=int, default=None, help="k for the real data sets (default: --k)")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-density", action="store_true")
    ap.add_argument("--skip-render", action="store_true")
    ap.add_argument("--only-render", action="store_true", help="index + Explore panel timings only")
    ap.add_argument("--map", default=None, help=".npy of (n_select, 2) map coordinates for the render timings "
                    "(e.g. Session.map of the same points); default: a PCA-2 stand-in")
    args = ap.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",")]
    strategies = [x.strip() for x in args.strategies.split(",") if x.strip()]
    global ESTIMATOR
    ESTIMATOR = make_estimator(args.estimator)
    t_start = time.perf_counter()
    result = {"benchmark": "seals", "n": args.n, "d": args.d, "k": args.k, "batch": args.batch,
              "budget": max(budgets), "concept": args.concept, "estimator": args.estimator, "rare_clusters": args.rare_clusters, "machine": f"{os.cpu_count()} cores, {platform.python_version()}"}

    # synthetic ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    X_all, y_all = make_rare_mixture(args.n, args.d, args.clusters, n_rare_clusters=args.rare_clusters,
                                     concept=args.concept, seed=0)
    tr, te = split(args.n, 0.1, seed=1)
    X, y, X_test, y_test = X_all[tr], y_all[tr], X_all[te], y_all[te]
    del X_all
    print(f"synthetic {args.n:,} x {args.d}: {y.sum() + y_test.sum()} rare ({100 * y_all.mean():.2f}%), "
          f"{len(X):,} to select from, {len(X_test):,} held out; generated in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    kind = "flat" if len(X) <= 50_000 else args.index
    index = NeighborIndex(kind=kind, nlist=args.nlist, nprobe=args.nprobe, hnsw_m=args.hnsw_m,
                          ef_construction=args.ef_construction).fit(X)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    tuned = index.tune(k=args.k + 1, target_recall=args.recall) if kind != "flat" else {}
    t_tune = time.perf_counter() - t0
    if tuned:
        print(f"{'nprobe' if kind == 'ivf' else 'efSearch'} tuned for recall@{args.k + 1} >= {args.recall} "
              f"in {t_tune:.1f} s: {tuned}")
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp) / "index.faiss")
        t0 = time.perf_counter()
        index = NeighborIndex.load(Path(tmp) / "index.faiss", X)
        t_load = time.perf_counter() - t0
    # neighbour recall of the index against exact search, on 200 queries
    q = np.random.default_rng(2).choice(len(X), 200, replace=False)
    got, _ = index.search(X[q], args.k)
    import faiss
    flat = faiss.IndexFlatL2(X.shape[1])
    flat.add(X)
    _, exact = flat.search(X[q], args.k)
    del flat
    knn_recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(got, exact)]))
    print(f"index {kind} built in {t_build:.1f} s, reopened in {t_load:.2f} s, recall@{args.k} vs exact {knn_recall:.3f}")
    result.update(index_kind=kind, index_build_s=t_build, index_load_s=t_load, knn_recall=knn_recall,
                  nprobe=int(getattr(index.index_, "nprobe", 0)), tune_s=t_tune,
                  ef_search=int(index.index_.hnsw.efSearch) if kind == "hnsw" else None)

    if args.only_render:
        result["render"] = render_times(X, y, index, map_xy=np.load(args.map) if args.map else None)
        result["total_s"] = time.perf_counter() - t_start
        print(json.dumps(result, default=float))
        return
    backgrounds = [int(b) for b in args.background.split(",")]
    explores = [float(e) for e in args.explore.split(",")]
    neighbor_modes = [m.strip() for m in args.neighbors.split(",") if m.strip()]
    table = None
    if "graph" in neighbor_modes:
        t0 = time.perf_counter()
        table = index.knn_table(args.k)
        result.update(knn_table_build_s=time.perf_counter() - t0, knn_table_mb=table.nbytes / 1e6)
        print(f"kNN table ({len(X):,} x {args.k} int32, {table.nbytes / 1e6:.0f} MB) built in "
              f"{result['knn_table_build_s']:.1f} s with the index's search settings")
    B = max(budgets)
    syn_by = {}
    full_cache = {}
    for bg in backgrounds:
        for ex in explores:
            for nb in neighbor_modes:
                tag = f"bg{bg}_ex{ex:g}" + ("_graph" if nb == "graph" else "")
                syn_by[tag] = compare("synthetic", X, y, X_test, y_test, index, strategies, budgets, args.batch,
                                      args.k, args.repeats, 5, 95, background=bg, explore=ex, full_cache=full_cache,
                                      graph=table if nb == "graph" else None, explore_quota=args.explore_quota)
                result[f"synthetic_{tag}"] = {s: {str(k): v for k, v in f.items()} for s, f in syn_by[tag].items()}
                result[f"ap_{tag}"] = {s: [syn_by[tag][s][B]["ap_seals"], syn_by[tag][s][B]["ap_full"]]
                                       for s in strategies}
                result[f"speedup_{tag}"] = {s: syn_by[tag][s]["speedup"] for s in strategies}
            if len(neighbor_modes) == 2:     # a table holds the same neighbours as the search: same picks
                same = all(syn_by[f"bg{bg}_ex{ex:g}"][s]["picks_seals"] == syn_by[f"bg{bg}_ex{ex:g}_graph"][s]["picks_seals"]
                           for s in strategies)
                result[f"same_picks_search_graph_bg{bg}_ex{ex:g}"] = same
                print(f"search vs graph (background {bg}, explore {ex:g}): same labeled sets: {same}")
    syn = syn_by[tag]
    result["background_negatives"] = backgrounds[-1]
    result["explore"] = explores[-1]
    result["neighbors"] = neighbor_modes[-1]
    result["explore_quota"] = EXPLORE_QUOTA if args.explore_quota is None else args.explore_quota
    main_s = strategies[0]     # entropy by default: AP is the active-learning figure
    result.update(fraction_scored=max(syn[s][B]["fraction_scored_seals"] for s in strategies),
                  speedup=min(syn[s]["speedup"] for s in strategies),
                  ap_seals=syn[main_s][B]["ap_seals"], ap_full=syn[main_s][B]["ap_full"], ap_strategy=main_s)
    if "most_likely_positive" in syn:
        mlp = syn["most_likely_positive"][B]
        result.update(ap_seals_mlp=mlp["ap_seals"], ap_full_mlp=mlp["ap_full"],
                      recall_found_seals_mlp=mlp["recall_found_seals"], recall_found_full_mlp=mlp["recall_found_full"])

    if not args.skip_density:
        result["information_density"] = density_tractability(X, y, index, args.k, B)
    if not args.skip_render:
        result["render"] = render_times(X, y, index, map_xy=np.load(args.map) if args.map else None)

    # real data ----------------------------------------------------------------------------------
    data = shared_data()
    if args.skip_real:
        pass
    elif data is None:
        print("\n../shared/data is absent: real-data part skipped")
    else:
        real = {}
        backgrounds = [int(b) for b in args.background.split(",")]
        for name, (Xr, yr) in {"cifar10_0": load_cifar(data), "mnist_7_rare": load_mnist_rare(data)}.items():
            trr, ter = split(len(Xr), 0.2, seed=1)
            idx = NeighborIndex(kind="flat").fit(Xr[trr])
            rb = [b for b in budgets if b <= len(trr) // 4] or [min(budgets)]
            real[name] = {s: {str(k): v for k, v in f.items()} for s, f in
                          compare(name, Xr[trr], yr[trr], Xr[ter], yr[ter], idx,
                                  strategies + ["information_density"], rb, args.batch,
                                  args.real_k or args.k, args.repeats,
                                  5, 95, background=backgrounds[-1], explore=explores[-1],
                                  explore_quota=args.explore_quota).items()}
            real[name]["n"], real[name]["rare"], real[name]["k"] = len(Xr), int(yr.sum()), args.real_k or args.k
        result["real"] = real
    result["total_s"] = time.perf_counter() - t_start
    print(f"\ntotal {result['total_s']:.0f} s")
    print(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
