"""How polluted is the set? An estimate only from a representative sample of the expert's labels.

Why not from ELITE itself: the items an expert labels in the Clean tab are chosen by score (the top
suspects), so the share of anomalies among them says how good the ranking is, not how many anomalies the
set holds; the share of the pool above the threshold that best separates those labels inherits the same
bias (balanced accuracy on a half-anomalous label set puts the cut where a pool with a small anomaly
rate has many normals above it); and ALICE's pseudo labels are working labels that lower a validation
loss, never calibrated to a rate. Measured on ADBench sets (benchmarks/elite_pollution.py,
RESULTS.md "Pollution estimate") all three are far off.

What is honest: a fixed random order of the items (``audit_order``, the Clean tab's "random" rule).
The longest prefix of that order in which every item carries the expert's normal/anomaly label is a
simple random sample of the set, however the labels got there (an item labeled earlier as a top
suspect still counts where it falls in the order; skipping an item ends the prefix, so the expert
cannot cherry-pick). Its share of anomalies estimates the pollution, with a Wilson score interval
(Wilson, JASA 1927; Brown, Cai, DasGupta, Statistical Science 2001, for why not the Wald interval).
Below ``min_sample`` prefix items no number is given. Items excluded for another reason and not
labeled are outside the population (the estimate is of the remaining items, and says so).
"""
from __future__ import annotations

import dataclasses
from statistics import NormalDist

import numpy as np

from ..calibration import wilson

MIN_SAMPLE = 10


def audit_order(n_items: int, seed: int = 0) -> np.ndarray:
    """The fixed random order of all ``n_items`` items (the same for every fit of the same set and seed)."""
    return np.random.default_rng([int(seed), int(n_items)]).permutation(int(n_items)).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class PollutionEstimate:
    """``estimate``/``low``/``high``: share of anomalies and its 95% Wilson interval (NaN when not
    estimable); ``n``: random-order items labeled in a row; ``anomalies``: how many of them are anomalous;
    ``population``: items the sample represents; ``confirmed``: anomalies the expert labeled anywhere
    (a true lower bound ``confirmed / population``); ``reason``: why there is no estimate, else ""."""
    estimate: float
    low: float
    high: float
    n: int
    anomalies: int
    population: int
    confirmed: int
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


def estimate_pollution(codes: np.ndarray, excluded: np.ndarray, order: np.ndarray,
                       min_sample: int = MIN_SAMPLE, alpha: float = 0.05) -> PollutionEstimate:
    """The pollution of a set from the fully labeled prefix of its random ``order``.

    ``codes`` (N,): 1 anomalous, 0 normal, -1 unlabeled (the expert's labels); ``excluded``: item ids
    excluded from training (an excluded item without a label is outside the population; one labeled
    anomalous, e.g. a confirmed anomaly the Clean tab excluded, stays in)."""
    codes = np.asarray(codes, dtype=np.int64)
    out = np.zeros(len(codes), dtype=bool)
    out[np.asarray(excluded, dtype=np.int64)] = True
    out &= codes < 0
    order = np.asarray(order, dtype=np.int64)
    seq = codes[order[~out[order]]]
    unlabeled = np.flatnonzero(seq < 0)
    n = int(unlabeled[0]) if len(unlabeled) else len(seq)
    k = int((seq[:n] == 1).sum())
    population, confirmed = int((~out).sum()), int((codes == 1).sum())
    if n < min_sample:
        why = (f"only {n} item(s) of the random order are labeled in a row; the labels chosen by score "
               f"over-represent anomalies, so the pollution needs at least {min_sample} labeled in random order")
        return PollutionEstimate(float("nan"), float("nan"), float("nan"), n, k, population, confirmed, why)
    lo, hi = wilson(k, n, NormalDist().inv_cdf(1 - alpha / 2))   # the package's one Wilson interval
    return PollutionEstimate(k / n, lo, hi, n, k, population, confirmed)
