"""SEALS engine: candidate pool from the kNN of the labeled set, query strategies, the Seals estimator."""
from .engine import Seals, default_estimator
from .pool import CandidatePool, search_neighbors
from .strategies import (
    MISSING,
    CallableStrategy,
    Entropy,
    InformationDensity,
    KCenterGreedy,
    LeastConfidence,
    Margin,
    MostLikelyPositive,
    QueryStrategy,
    RandomSampling,
    ScoreStrategy,
    SkactivemlStrategy,
    as_strategy,
    strategy_names,
)

__all__ = [
    "MISSING",
    "CallableStrategy",
    "CandidatePool",
    "Entropy",
    "InformationDensity",
    "KCenterGreedy",
    "LeastConfidence",
    "Margin",
    "MostLikelyPositive",
    "QueryStrategy",
    "RandomSampling",
    "ScoreStrategy",
    "Seals",
    "SkactivemlStrategy",
    "as_strategy",
    "default_estimator",
    "search_neighbors",
    "strategy_names",
]
