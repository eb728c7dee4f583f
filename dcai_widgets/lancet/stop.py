"""LANCET's stop rule: stop when the DMN cannot tell labeled from unlabeled and no weight is tiny.

The DMN's weighted loss reaching chance (ln 2 per item; the paper's 1.38 = 2 ln 2 sums both halves)
means the labeled set covers the data distribution; every unlabeled weight above ``alpha_t`` (paper:
0.03-0.1) means no region is left without a labeled neighbour. ``tol`` = 0.02 below chance: the paper
stops at 1.38 of 2 ln 2 = 1.386 summed over both halves; with 0.05 the rule fired on MNIST-10k at 110
labels while accuracy still rose 0.5 points per round (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

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

    def to_dict(self) -> dict:
        return asdict(self)

    def __getitem__(self, key: str):  # dict-style access, report["stop"]
        return getattr(self, key)


def stop_report(dmn_loss: float, min_weight: float, alpha_t: float = 0.1, tol: float = 0.02) -> StopReport:
    """Stop when ``dmn_loss >= ln 2 - tol`` and ``min_weight > alpha_t``."""
    at_chance = dmn_loss >= CHANCE - tol
    covered = min_weight > alpha_t
    if at_chance and covered:
        reason = "labeled and unlabeled items are indistinguishable and every weight exceeds alpha_t"
    else:
        parts = []
        if not at_chance:
            parts.append(f"DMN loss {dmn_loss:.3f} below chance {CHANCE:.3f}")
        if not covered:
            parts.append(f"smallest weight {min_weight:.3f} <= alpha_t {alpha_t}")
        reason = "; ".join(parts)
    return StopReport(bool(at_chance and covered), float(dmn_loss), CHANCE, float(min_weight), float(alpha_t), reason)
