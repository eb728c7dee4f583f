"""Each query strategy ranks a hand-made case as the method says it should."""
import numpy as np
import pytest

from dcai_widgets.seals import (
    MISSING,
    Entropy,
    InformationDensity,
    KCenterGreedy,
    LeastConfidence,
    Margin,
    MostLikelyPositive,
    RandomSampling,
    as_strategy,
    strategy_names,
)


class FixedProba:
    """A 'fitted classifier' whose probabilities are the first columns of X (hand-made cases)."""

    def __init__(self, n_classes):
        self.classes_ = np.arange(n_classes)

    def predict_proba(self, X):
        return np.asarray(X)[:, : len(self.classes_)]


# rows: a=[.5,.5,0] (margin 0, LC .5, H .69)  b=[.4,.3,.3] (margin .1, LC .6, H 1.09)
#       c=[.98,.01,.01] (confident)           d=[.34,.33,.33] labeled (must never be returned)
P3 = np.array([[0.5, 0.5, 0.0], [0.4, 0.3, 0.3], [0.98, 0.01, 0.01], [0.34, 0.33, 0.33]])
Y3 = np.array([MISSING, MISSING, MISSING, 0])


def test_entropy_margin_least_confidence_rankings():
    clf = FixedProba(3)
    assert Entropy().query(P3, Y3, clf, 3).tolist() == [1, 0, 2]
    assert Margin().query(P3, Y3, clf, 3).tolist() == [0, 1, 2]
    assert LeastConfidence().query(P3, Y3, clf, 3).tolist() == [1, 0, 2]
    assert Entropy().query(P3, Y3, clf, 1).tolist() == [1]
    assert Entropy().query(P3, Y3, clf, 10).tolist() == [1, 0, 2]  # only unlabeled, n capped


def test_most_likely_positive_ranks_by_target_probability():
    P = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.05, 0.95]])
    y = np.array([MISSING, MISSING, MISSING, 1])
    assert MostLikelyPositive(positive=1).query(P, y, FixedProba(2), 3).tolist() == [1, 2, 0]
    assert MostLikelyPositive(positive=0).query(P, y, FixedProba(2), 3).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="seed"):
        MostLikelyPositive(positive=5).query(P, y, FixedProba(2), 1)


def test_random_is_seeded_and_skips_labeled():
    y = np.full(50, MISSING)
    y[:10] = 0
    X = np.zeros((50, 2))
    a = RandomSampling(random_state=1).query(X, y, None, 40)
    b = RandomSampling(random_state=1).query(X, y, None, 40)
    assert a.tolist() == b.tolist()
    assert sorted(a.tolist()) == list(range(10, 50))
    assert a.tolist() != sorted(a.tolist())


def test_information_density_prefers_dense_region_at_equal_uncertainty():
    # columns 0-1: probabilities (all equally uncertain), columns 2-3: position
    X = np.array([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.1, 0.0], [0.5, 0.5, 0.0, 0.1], [0.5, 0.5, 10.0, 10.0],
                  [0.99, 0.01, 0.05, 0.05]])
    y = np.array([MISSING, MISSING, MISSING, MISSING, MISSING])
    order = InformationDensity().query(X, y, FixedProba(2), 5).tolist()
    assert order[-1] == 4          # confident: lowest entropy
    assert order[-2] == 3          # isolated outlier: lowest density among the uncertain
    # beta=0 is plain entropy: the outlier ties with the cluster
    s0 = InformationDensity(beta=0).score(X, y, FixedProba(2))
    assert s0[3] == pytest.approx(s0[0])
    # a reference sample gives an estimate of the same mean (exact when the sample is everything)
    full = InformationDensity().score(X, y, FixedProba(2))
    np.testing.assert_allclose(InformationDensity(max_reference=5).score(X, y, FixedProba(2)), full)


def test_kcenter_greedy_takes_farthest_from_labeled_then_spreads():
    X = np.array([[0.0], [1.0], [5.0], [3.0], [4.9]])
    y = np.array([0, MISSING, MISSING, MISSING, MISSING])
    order = KCenterGreedy().query(X, y, None, 3).tolist()
    assert order[0] == 2                 # 5.0 is farthest from the labeled 0.0
    assert order[1] == 3                 # then 3.0 (2 from its nearest centre) over 1.0 (1) and 4.9 (0.1)
    assert 4 not in order[:2]            # 4.9 is next to a chosen centre


def test_as_strategy_names_objects_and_functions():
    assert set(["entropy", "margin", "least_confidence", "random", "most_likely_positive",
                "information_density", "kcenter"]) <= set(strategy_names())
    with pytest.raises(ValueError, match="unknown strategy 'bogus'"):
        as_strategy("bogus")
    with pytest.raises(TypeError):
        as_strategy(42)

    def modal_style(classifier, X, n_instances=1):  # modAL returns (idx, X[idx])
        idx = np.argsort(-classifier.predict_proba(X)[:, 1])[:n_instances]
        return idx, X[idx]

    s = as_strategy(modal_style)
    P = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.0, 1.0]])
    y = np.array([MISSING, MISSING, MISSING, 1])
    assert s.query(P, y, FixedProba(2), 2).tolist() == [1, 2]   # row 3 is labeled: never offered


def test_scikit_activeml_strategy_plugs_in_and_agrees_with_ours():
    pytest.importorskip("skactiveml", reason="scikit-activeml (dev extra) is not installed")
    from skactiveml.pool import UncertaintySampling
    from sklearn.linear_model import LogisticRegression

    from dcai_widgets.seals import Seals
    from dcai_widgets.seals.strategies import SkactivemlStrategy

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    y_true = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    y = np.full(300, MISSING)
    y[:30] = y_true[:30]
    assert isinstance(as_strategy(UncertaintySampling(method="entropy")), SkactivemlStrategy)
    clf = LogisticRegression().fit(X[:30], y_true[:30])
    theirs = as_strategy(UncertaintySampling(method="entropy", random_state=0)).query(X, y, clf, 8)
    ours = Entropy().query(X, y, clf, 8)
    assert set(theirs.tolist()) == set(ours.tolist()) and not set(theirs.tolist()) & set(range(30))
    seals = Seals.from_arrays(X, k=20, strategy=UncertaintySampling(method="margin_sampling", random_state=0),
                              batch=6).fit(y)
    assert len(seals.candidates()) == 6 and set(seals.candidates()) <= set(seals.candidates_pool_.tolist())


def test_float32_logistic_regression_scores_match_scikit_learn_and_nan_still_raises():
    """The float32 product used for a binary LogisticRegression gives scikit-learn's probabilities, and
    a NaN row still reaches scikit-learn's own finiteness error."""
    from sklearn.linear_model import LogisticRegression

    from dcai_widgets.seals.strategies import _predict_proba

    rng = np.random.default_rng(0)
    X = (3 * rng.standard_normal((3000, 40))).astype(np.float32)
    yb = (X[:, 0] + X[:, 1] > 2).astype(int)
    clf = LogisticRegression(class_weight="balanced", max_iter=1000).fit(X, yb)
    rows = np.arange(len(X))
    np.testing.assert_allclose(_predict_proba(clf, X, rows), clf.predict_proba(X), atol=1e-6)
    y = np.full(len(X), MISSING)
    assert Entropy().query(X, y, clf, 20).tolist() == Entropy().query(X.astype(np.float64), y, clf, 20).tolist()
    bad = X.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _predict_proba(clf, bad, rows)
    # three classes and float64 rows take scikit-learn's own path
    y3 = np.digitize(X[:, 0], [-1, 1])
    clf3 = LogisticRegression(max_iter=1000).fit(X, y3)
    np.testing.assert_allclose(_predict_proba(clf3, X, rows), clf3.predict_proba(X))
