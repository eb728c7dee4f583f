"""SEALS engine: candidate pool from the kNN of the labeled set, query strategies, the Seals estimator."""
from .engine import Seals, default_estimator
from .pool import CandidatePool, search_neighbors
from .strategies import (MISSING, CallableStrategy, Entropy, InformationDensity, KCenterGreedy, LeastConfidence,
                         Margin, MostLikelyPositive, QueryStrategy, RandomSampling, ScoreStrategy, as_strategy,
                         strategy_names)

__all__ = ["Seals", "default_estimator", "CandidatePool", "search_neighbors", "MISSING", "QueryStrategy",
           "ScoreStrategy", "Entropy", "Margin", "LeastConfidence", "RandomSampling", "MostLikelyPositive",
           "InformationDensity", "KCenterGreedy", "CallableStrategy", "as_strategy", "strategy_names"]
