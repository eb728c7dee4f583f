"""LANCET's stop rule: the paper's DMN test, and (since issue 14) predictions that have stopped changing.

1. The DMN (Zhang et al., "LANCET", VLDB 2021): its weighted loss at chance (ln 2 per item; the paper's
   1.38 = 2 ln 2 sums both halves) and every unlabeled weight above ``alpha_t`` (paper: 0.03-0.1) mean
   that, in the model's embedding, the labeled items look like the rest. ``tol`` = 0.02 below chance: with
   0.05 the rule fired on MNIST-10k at 110 labels while accuracy still rose 0.5 points per round.
   That is a two-sample test, not a measure of how many labels are enough: a random sample of labels
   passes it at any size, and in an embedding trained on those labels every item sits in some labeled
   class's cluster. Measured on digits (random labels, seeds 0/1) it passed at 80-100 labels with 5-7% of
   the predictions still changing per 20 labels; with LANCET's own picks (seed 2) it passed at 10 labels.
   The served app said "STOP: labels cover the data" there.
2. Stabilizing predictions (Bloodgood & Vijay-Shanker, "A method for stopping active learning based on
   stabilizing predictions and the need for user-adjustable stopping", CoNLL 2009): Cohen's kappa between
   the predictions of successive models (here: rounds at least ``gap`` human labels apart, LANCET's batch)
   averaged over the last ``window`` = 3 rounds is at least ``kappa_min`` = 0.99, the paper's values.
   :class:`PredictionStability` measures it; ``stop_report(..., stability=...)`` requires both.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

CHANCE = math.log(2.0)


@dataclass(frozen=True)
class StopReport:
    """Verdict and the two figures behind it."""

    stop: bool
    dmn_loss: float
    chance: float
    min_weight: float
    alpha_t: float
    reason: str = ""
    # prediction stability (NaN / 0 when not measured): mean kappa of the last rounds, and how many rounds
    agreement: float = float("nan")
    kappa_min: float = float("nan")
    rounds: int = 0
    dmn_ok: bool = False   # the paper's DMN part alone held

    def to_dict(self) -> dict:
        return asdict(self)

    def __getitem__(self, key: str):  # dict-style access, report["stop"]
        return getattr(self, key)


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two label vectors (scikit-learn's ``cohen_kappa_score``); 1.0 when both are one
    and the same constant labeling (where scikit-learn's 0/0 gives NaN)."""
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a, np.int64).ravel(), np.asarray(b, np.int64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"kappa needs two label vectors of one non-zero length, got {a.shape} and {b.shape}")
    if a.min() == a.max() == b.min() == b.max():
        return 1.0
    return float(cohen_kappa_score(a, b))


@dataclass
class PredictionStability:
    """Kappa between the predictions of successive rounds (Bloodgood & Vijay-Shanker 2009).

    ``update(n_labeled, predictions)`` after each fit: a fit made ``gap`` or more human labels after the
    last round starts a new round, whose kappa against the last round's predictions is recorded;
    ``agreement()`` is the mean kappa of the last ``window`` rounds, or NaN before there are that many.
    A fit between rounds (fewer than ``gap`` new labels) is compared with the last round too, and the
    lower figure counts, so a change made since the last round is never hidden. Keeps one prediction
    vector (int32), not one per fit.
    """

    gap: int = 10
    window: int = 3
    kappa_min: float = 0.99
    kappas_: list = field(default_factory=list, init=False)
    _last: tuple | None = field(default=None, init=False, repr=False)     # (human labels, predictions)
    _latest: float = field(default=float("nan"), init=False, repr=False)  # a fit between rounds vs the last

    def __post_init__(self) -> None:
        if not isinstance(self.gap, (int, np.integer)) or self.gap < 1:
            raise ValueError(f"gap must be a positive int (human labels between rounds), got {self.gap!r}")
        if not isinstance(self.window, (int, np.integer)) or self.window < 1:
            raise ValueError(f"window must be a positive int (rounds averaged), got {self.window!r}")
        if not 0 < self.kappa_min <= 1:
            raise ValueError(f"kappa_min must be in (0, 1] (paper: 0.99), got {self.kappa_min!r}")

    def update(self, n_labeled: int, predictions: np.ndarray) -> PredictionStability:
        pred = np.asarray(predictions).astype(np.int32, copy=True).ravel()
        n = int(n_labeled)
        if self._last is None or len(self._last[1]) != len(pred) or n < self._last[0]:
            self._last, self.kappas_, self._latest = (n, pred), [], float("nan")   # first round, or a new start
            return self
        k = cohen_kappa(self._last[1], pred)
        if n - self._last[0] >= self.gap:
            self.kappas_.append(k)
            self._last, self._latest = (n, pred), float("nan")
        else:
            self._latest = k
        return self

    def agreement(self) -> float:
        if len(self.kappas_) < self.window:
            return float("nan")
        mean = float(np.mean(self.kappas_[-self.window:]))
        return mean if not np.isfinite(self._latest) else min(mean, self._latest)

    @property
    def rounds(self) -> int:
        return len(self.kappas_)


def stop_report(dmn_loss: float, min_weight: float, alpha_t: float = 0.1, tol: float = 0.02,
                stability: PredictionStability | None = None) -> StopReport:
    """Stop when ``dmn_loss >= ln 2 - tol`` and ``min_weight > alpha_t`` (the paper's DMN rule) and, when
    ``stability`` is given, the predictions' mean kappa over its last rounds is at least its ``kappa_min``.
    Without ``stability`` this is the paper's rule alone (``dmn_ok``), as before."""
    at_chance = dmn_loss >= CHANCE - tol
    covered = min_weight > alpha_t
    dmn_ok = bool(at_chance and covered)
    parts = []
    if not at_chance:
        parts.append(f"DMN loss {dmn_loss:.3f} below chance {CHANCE:.3f}")
    if not covered:
        parts.append(f"smallest weight {min_weight:.3f} <= alpha_t {alpha_t}")
    agreement, kmin, rounds, stable = float("nan"), float("nan"), 0, True
    if stability is not None:
        agreement, kmin, rounds = stability.agreement(), float(stability.kappa_min), stability.rounds
        stable = bool(np.isfinite(agreement) and agreement >= kmin)
        if not np.isfinite(agreement):
            parts.append(f"predictions compared over {rounds} of {stability.window} rounds of "
                         f"{stability.gap}+ labels so far")
        elif not stable:
            parts.append(f"predictions still changing: kappa {agreement:.3f} < {kmin}")
    stop = dmn_ok and stable
    reason = ("labeled and unlabeled items look alike to the DMN, every weight exceeds alpha_t"
              + (", and the predictions stopped changing" if stability is not None else "")) if stop \
        else "; ".join(parts)
    return StopReport(stop, float(dmn_loss), CHANCE, float(min_weight), float(alpha_t), reason,
                      float(agreement), kmin, int(rounds), dmn_ok)
