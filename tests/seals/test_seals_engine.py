"""Seals engine on plain arrays: pool growth, search quality, full-scan equivalence, bad input."""
import numpy as np
import pandas as pd
import pytest
from sklearn.naive_bayes import GaussianNB

from dcai_widgets.neighbors import NeighborIndex
from dcai_widgets.seals import Seals
from dcai_widgets.seals.engine import REPORT_COLUMNS


@pytest.fixture(scope="module")
def rare():
    """3,000 points in 40 blobs; blob 0 (about 2.5%) is the rare concept."""
    rng = np.random.default_rng(7)
    centers = rng.normal(scale=4.0, size=(40, 16))
    blob = rng.integers(0, 40, 3000)
    X = (centers[blob] + rng.normal(size=(3000, 16))).astype(np.float32)
    y = (blob == 0).astype(np.int64)
    return X, y, NeighborIndex(kind="flat").fit(X)


def seed_labels(y, n_pos=2, n_neg=20, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.full(len(y), -1)
    pos = rng.choice(np.flatnonzero(y == 1), n_pos, replace=False)
    neg = rng.choice(np.flatnonzero(y == 0), n_neg, replace=False)
    lab[pos], lab[neg] = 1, 0
    return lab


def run_rounds(seals, y_true, lab, rounds, positives=None):
    lab = lab.copy()
    for _ in range(rounds):
        if positives is not None:
            positives.append(int((lab == 1).sum()))
        ids = seals.fit(lab).candidates()
        assert len(ids) == len(set(ids)) and all(lab[i] == -1 for i in ids)
        lab[ids] = y_true[ids]
    return lab


def test_rare_concept_search_beats_random_and_scores_a_small_pool(rare):
    X, y, index = rare
    lab0 = seed_labels(y)
    mlp = Seals.from_arrays(X, index, classes=["other", "rare"], k=20, strategy="most_likely_positive",
                            target="rare", batch=10)
    seen: list[int] = []
    lab = run_rounds(mlp, y, lab0, 8, seen)
    rnd = Seals.from_arrays(X, index, k=20, strategy="random", target=1, batch=10)
    lab_r = run_rounds(rnd, y, lab0, 8)
    found, found_r = (lab == 1).sum(), (lab_r == 1).sum()
    assert found >= 30 and found > 3 * found_r, (found, found_r)
    rep = mlp.report()
    assert list(rep.columns) == REPORT_COLUMNS and len(rep) == 8
    assert rep["positives_found"].tolist() == seen
    assert rep["positives_found"].is_monotonic_increasing
    assert (rep["n_searched"].iloc[1:] == 10).all()          # only the newly labeled are searched
    assert 0 < mlp.pool_fraction < 0.5
    assert rep["fraction_scored"].is_monotonic_increasing
    assert mlp.pool_size == rep["n_scored"].iloc[-1]                       # kNN pool + exploration sample
    assert (rep["pool_size"] + rep["n_explore"] == rep["n_scored"]).all()
    # the exploration items outside the pool: there from the start, then asked (the batch quota) or absorbed
    assert rep["n_explore"].iloc[0] > 0 and rep["n_explore"].is_monotonic_decreasing
    p = mlp.proba(mlp.candidates(5))
    assert p.shape == (5,) and ((0 <= p) & (p <= 1)).all()
    assert mlp.proba([]).shape == (0,)                 # nothing asked, nothing to score
    with pytest.raises(ValueError, match="ids must lie in 0.."):
        mlp.proba([len(X)])


def test_whole_graph_pool_matches_full_scan(rare):
    X, y, index = rare
    lab = seed_labels(y, n_pos=3, n_neg=30)
    seals = Seals.from_arrays(X, index, k=len(X) - 1, strategy="entropy", batch=15).fit(lab)
    full = Seals.from_arrays(X, index, k=100, strategy="entropy", batch=15, full_scan=True).fit(lab)
    assert seals.candidates() == full.candidates()
    assert seals.candidates(40) == full.candidates(40)
    assert full.pool_fraction == pytest.approx((lab == -1).mean())


@pytest.mark.parametrize("strategy", ["entropy", "margin", "least_confidence", "random",
                                      "information_density", "kcenter"])
def test_every_strategy_runs_multiclass_with_any_estimator(rare, strategy):
    X, _, index = rare
    rng = np.random.default_rng(1)
    lab = np.full(len(X), -1)
    ids = rng.choice(len(X), 30, replace=False)
    lab[ids] = np.arange(30) % 3
    s = Seals.from_arrays(X, index, k=10, strategy=strategy, estimator=GaussianNB(), batch=7).fit(lab)
    c = s.candidates()
    assert len(c) == 7 and not set(c) & set(ids.tolist())
    assert set(c) <= set(s.candidates_pool_.tolist())
    assert len(s.candidates(25)) == 25
    sc = s.scores()
    assert isinstance(sc, pd.DataFrame) and len(sc) == s.pool_size
    assert sc["id"].tolist()[:7] == c


def test_similar_merges_neighbours_of_a_selection(rare):
    X, _, index = rare
    s = Seals.from_arrays(X, index, k=10)
    df = s.similar(ids=[3, 4], k=12)
    assert len(df) == 12 and not {3, 4} & set(df["id"])
    assert df["distance"].is_monotonic_increasing
    assert set(df["query"]) <= {3, 4}
    assert (df["similarity"] <= 1.0001).all()
    one = s.similar(vectors=X[3], k=5)
    assert one["id"].iloc[0] == 3 and one["similarity"].iloc[0] == pytest.approx(1.0)


def test_construction_fails_fast(rare):
    X, _, index = rare
    with pytest.raises(ValueError, match="unknown strategy 'maximum_fun'"):
        Seals.from_arrays(X, index, strategy="maximum_fun")
    with pytest.raises(ValueError, match="target"):
        Seals.from_arrays(X, index, strategy="most_likely_positive")
    with pytest.raises(ValueError, match="unknown target class 'dog'"):
        Seals.from_arrays(X, index, classes=["cat", "bird"], target="dog")
    with pytest.raises(ValueError, match="out of range"):
        Seals.from_arrays(X, index, classes=["cat", "bird"], target=2)
    with pytest.raises(ValueError, match="k=3000"):
        Seals.from_arrays(X, index, k=3000)
    with pytest.raises(TypeError, match="predict_proba"):
        Seals.from_arrays(X, index, estimator=object())
    with pytest.raises(TypeError, match="unknown parameter"):
        Seals.from_arrays(X, index, kk=3)
    with pytest.raises(TypeError, match="Session"):
        Seals()
    with pytest.raises(TypeError, match="from_arrays"):
        Seals(X)
    # a non-number or a NaN names its parameter (was: "could not convert string to float")
    for name, bad, err in [("explore_quota", "x", TypeError), ("explore", None, TypeError), ("k", "10", TypeError),
                           ("background_weight", float("nan"), ValueError), ("batch", True, TypeError)]:
        with pytest.raises(err, match=name):
            Seals.from_arrays(X, index, **{name: bad})


def test_fit_bad_input_gives_clear_messages(rare):
    X, y, index = rare
    s = Seals.from_arrays(X, index, classes=["other", "rare"], target="rare", strategy="most_likely_positive")
    lab = np.full(len(X), -1)
    with pytest.raises(ValueError, match="no labeled items yet"):
        s.fit(lab)
    lab[np.flatnonzero(y == 0)[:5]] = 0
    with pytest.raises(ValueError, match="no positive of target 'rare' labeled yet.*seed"):
        s.fit(lab)
    with pytest.raises(ValueError, match="shape"):
        s.fit(lab[:-1])
    with pytest.raises(RuntimeError, match="fit"):
        s.candidates()
    with pytest.raises(ValueError, match="dimension 3"):
        s.similar(vectors=np.zeros(3), k=5)
    with pytest.raises(ValueError, match="only one class"):
        Seals.from_arrays(X, index).fit(lab)


def test_empty_pool_is_explained():
    # two far-apart pairs; both items of pair A are labeled and are each other's only neighbour (k=1)
    X = np.array([[0, 0], [0, 0.1], [50, 50], [50, 50.1]], dtype=np.float32)
    s = Seals.from_arrays(X, NeighborIndex(kind="flat").fit(X), k=1)
    with pytest.raises(ValueError, match="candidate pool is empty.*increase k"):
        s.fit(np.array([0, 1, -1, -1]))
    # with everything labeled there is simply nothing to ask
    assert Seals.from_arrays(X, NeighborIndex(kind="flat").fit(X), k=1).fit(np.array([0, 1, 0, 1])).candidates() == []


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_scoring_threads_follow_the_work_per_call(monkeypatch):
    """One BLAS thread for a linear model over a small pool or on a busy machine (spin-waiting threads
    cost more than they give), every thread for a large pool on an idle one, a full scan, a costlier
    model or an unknown one."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    import dcai_widgets.seals.engine as engine
    from dcai_widgets.seals.engine import _scoring_threads

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 128)), np.r_[np.zeros(30), np.ones(30)]
    lin = LogisticRegression().fit(X, y)
    mlp = MLPClassifier(hidden_layer_sizes=(256,), max_iter=5).fit(X, y)
    for busy in (False, True):
        monkeypatch.setattr(engine, "_busy", lambda busy=busy: busy)
        assert _scoring_threads(lin, 10_000) == 1
        assert _scoring_threads(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), 10_000) == 1
        assert _scoring_threads(lin, 40_000) == (1 if busy else None)
        assert _scoring_threads(lin, 900_000) is None
        assert _scoring_threads(mlp, 40_000) is None
        assert _scoring_threads(DecisionTreeClassifier().fit(X, y), 1000) is None
