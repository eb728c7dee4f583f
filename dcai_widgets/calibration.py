"""Calibrated confidences: the probability that a model's label is right, learned from the human labels.

A network trained to zero loss on a few labels says "100%" for items it gets wrong (issue 14: LANCET's
head read 1.00 on eights it called 6; 4 of 10 suggestions right, all at 100%). The confidence shown to
people is therefore the *top-label* confidence mapped through a calibrator fit on **cross-fitted**
predictions: the human-labeled items are split into folds, a copy of the model is trained without each
fold and predicts it, and the calibrator learns P(label right | score) from those out-of-fold predictions,
so it never sees a prediction on an item the predicting model was trained on (Zadrozny & Elkan 2002;
Platt 1999; Guo et al., "On Calibration of Modern Neural Networks", ICML 2017 for temperature scaling;
top-label calibration as in Gupta & Ramdas, ICLR 2022). Targets are smoothed as in Platt (1999):
N+ correct items count as (N+ + 1) / (N+ + 2), wrong ones as 1 / (N- + 2), so a handful of all-correct
folds never yields a confidence of exactly 1.

Methods (chosen on digits, MNIST-10k and a text set in benchmarks/calibration.py):
``"temperature"`` (one parameter: softmax(log p / T)), ``"platt"`` (two: sigmoid(a * logit(p_max) + b)),
``"isotonic"`` (a monotone step function of logit(p_max)), ``"coverage"`` (three: Platt with a second
input, the log distance from the item to the nearest human-labeled item in the model's label-free input
space). Cross-fitting makes every held-out item farther from the labels its model saw than an unlabeled
item is from all the labels, and a model trained on fewer labels is weaker: a calibrator of the score
alone learns the weaker models' accuracy (LANCET on digits at 20 labels: out-of-fold accuracy 0.45 vs
0.81, temperature scaling then said 26% for labels right 81% of the time). The distance carries what
changes between the two, so the same fit transfers to the full model. Before ``SHOW_PERCENT_FROM`` human labels the
panels show "uncertain" instead of a percentage: the calibrator has too few out-of-fold pairs to be
trusted to 5 points.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

METHODS = ("temperature", "platt", "isotonic", "coverage")
SHOW_PERCENT_FROM = 50   # human labels before a panel shows a percentage (issue 14: ECE <= 0.05 from 50)
#: a propagated label's percentage is shown only when the calibration pairs pin the model's accuracy to a
#: standard error of at most this (95% interval about +-10 points): 50 labels do that where the model is
#: right 90% of the time, not where it is right 75% (benchmarks/calibration.py --fold-states-from: even 50
#: labels drawn at random from the pool calibrate the text set only to ECE 0.066 on average)
MAX_ACCURACY_SE = 0.05
N_BINS = 15

__all__ = [
    "METHODS",
    "SHOW_PERCENT_FROM",
    "MAX_ACCURACY_SE",
    "AuditVerdict",
    "SuggestionAudit",
    "TopLabelCalibrator",
    "accuracy_se",
    "audit_test",
    "cross_fit",
    "ece",
    "ece_floor",
    "fold_ids",
    "nn_distance",
    "padded_log_proba",
    "show_confidence",
    "top_label",
    "wilson",
]


def confidence_bins(conf: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin index (0..n_bins-1) of each confidence in [0, 1]: equal-width bins, 1.0 in the last."""
    return np.clip((conf * n_bins).astype(int), 0, n_bins - 1)


def ece(confidence, correct, n_bins: int = N_BINS) -> float:
    """Expected calibration error: sum over ``n_bins`` equal-width confidence bins of
    (share of items in the bin) * |accuracy in the bin - mean confidence in the bin| (Guo et al. 2017)."""
    conf = np.asarray(confidence, float).reshape(-1)
    ok = np.asarray(correct, float).reshape(-1)
    if conf.shape != ok.shape:
        raise ValueError(f"confidence ({conf.size}) and correct ({ok.size}) must have one value per item")
    if conf.size == 0:
        return float("nan")
    b = confidence_bins(conf, n_bins)
    n = np.bincount(b, minlength=n_bins)
    gap = np.abs(np.bincount(b, ok, n_bins) - np.bincount(b, conf, n_bins))  # per bin: n * |acc - conf|
    return float(gap.sum() / n.sum())


def ece_floor(confidence, draws: int = 20, rng: np.random.Generator | None = None) -> float:
    """The sampling floor of :func:`ece`: the mean ECE, over ``draws`` draws, of a perfectly calibrated
    predictor with these confidences on this many items (each outcome drawn from its own confidence).
    An ECE near it is as small as that many items can show. ``rng``: default a fresh generator seeded 0."""
    conf = np.asarray(confidence, float).reshape(-1)
    rng = np.random.default_rng(0) if rng is None else rng
    return float(np.mean([ece(conf, rng.random(len(conf)) < conf) for _ in range(int(draws))]))


def check_params(method: str | None, folds: int) -> tuple[str | None, int]:
    """(method, folds) checked for an engine's ``calibration`` / ``calibration_folds`` parameters."""
    if method is not None and method not in METHODS:
        raise ValueError(f"calibration must be one of {METHODS} or None, got {method!r}")
    if not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"calibration_folds must be an int >= 2, got {folds!r}")
    return method, int(folds)


def show_confidence(confidence: float | None, n_labels: int) -> str:
    """What a panel prints for a calibrated confidence: a percentage once ``SHOW_PERCENT_FROM`` human
    labels exist (the calibrator then holds to about 5 points), "uncertain" before that."""
    if confidence is None or not np.isfinite(confidence) or n_labels < SHOW_PERCENT_FROM:
        return "uncertain"
    if confidence >= 0.995:   # would print "100%": a calibrated probability is not certainty
        return ">99%"
    return f"{confidence:.0%}"


def accuracy_se(correct, sample_weight=None) -> float:
    """Standard error of the (weighted) share of right top labels among the calibration pairs: sqrt(p (1 - p)
    / n_eff), with n_eff = (sum w)^2 / sum w^2 (Kish 1965) and p smoothed as (k + 1) / (n_eff + 2), so that
    all-right pairs still leave an error; inf without pairs."""
    ok = np.asarray(correct, float).reshape(-1)
    w = np.ones(len(ok)) if sample_weight is None else np.asarray(sample_weight, float).reshape(-1)
    if not len(ok) or w.sum() <= 0:
        return float("inf")
    n_eff = float(w.sum() ** 2 / (w ** 2).sum())
    p = (n_eff * float((w * ok).sum() / w.sum()) + 1.0) / (n_eff + 2.0)
    return float(np.sqrt(p * (1.0 - p) / n_eff))


def padded_log_proba(logp: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n_classes) float64 log-probabilities from a model's (n, K') columns over ``classes``; a class
    the model never saw gets -inf (it cannot be predicted)."""
    out = np.full((len(logp), int(n_classes)), -np.inf)
    out[:, np.asarray(classes, np.int64)] = np.asarray(logp, np.float64)
    return out


def top_label(logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class (n,), logit of the top-label probability (n,)) from (n, K) log-probabilities,
    computed stably: log p_max - log(1 - p_max) = log p_max - logsumexp(the others)."""
    logp = np.asarray(logp, np.float64)
    k = logp.argmax(1)
    top = logp[np.arange(len(logp)), k]
    rest = logp.copy()
    rest[np.arange(len(logp)), k] = -np.inf
    m = rest.max(1)
    finite = np.isfinite(m)
    lse = np.full(len(logp), -np.inf)
    lse[finite] = m[finite] + np.log(np.exp(rest[finite] - m[finite, None]).sum(1))
    s = np.where(np.isfinite(lse), top - lse, 50.0)  # one possible class: as sure as the model can be
    return k, np.clip(s, -50.0, 50.0)


def _smoothed_targets(correct: np.ndarray) -> np.ndarray:
    ok = np.asarray(correct, bool)
    n_pos, n_neg = int(ok.sum()), int((~ok).sum())
    return np.where(ok, (n_pos + 1) / (n_pos + 2), 1.0 / (n_neg + 2))


def _bce(p: np.ndarray, t: np.ndarray, w: np.ndarray | None = None) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    loss = -(t * np.log(p) + (1 - t) * np.log1p(-p))
    return float(loss.mean() if w is None else (w * loss).sum() / w.sum())


def _temperature_conf(logp: np.ndarray, T: float) -> np.ndarray:
    z = logp / T
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e.max(1) / e.sum(1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class TopLabelCalibrator:
    """P(the model's top label is right) as a function of its log-probabilities.

    ``method``: "temperature", "platt" or "isotonic" (module docstring). ``fit(logp, correct)`` takes
    out-of-fold log-probabilities (n, K) (-inf for classes a fold's model could not predict) and whether
    each top label was right; ``predict(logp)`` gives calibrated confidences (n,). Learned: ``T_``
    (temperature), ``a_``, ``b_`` (Platt), ``iso_`` (isotonic), ``n_``, ``accuracy_`` (out-of-fold).
    With no pairs the confidence is ``1 / n_classes`` (chance); with pairs of one outcome only, the
    smoothed targets keep it away from 0 and 1.
    """

    def __init__(self, method: str = "temperature"):
        self.method = method

    def fit(self, logp, correct, distance=None, sample_weight=None) -> TopLabelCalibrator:
        """``sample_weight`` (n,) non-negative: each pair's weight in the loss (e.g. importance weights
        that make the labeled pairs look like the items whose confidence is shown); None = equal."""
        if self.method not in METHODS:
            raise ValueError(f"calibration method must be one of {METHODS}, got {self.method!r}")
        logp = np.asarray(logp, np.float64)
        ok = np.asarray(correct, bool).reshape(-1)
        if logp.ndim != 2 or len(logp) != len(ok):
            raise ValueError(f"logp must be (n, K) with one row per outcome; got {logp.shape} and {ok.shape}")
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, np.float64).reshape(-1)
            if len(w) != len(ok) or not np.all(np.isfinite(w)) or (w < 0).any() or (len(w) and w.sum() <= 0):
                raise ValueError(f"sample_weight must be {len(ok)} finite non-negative weights, not all 0")
        self.n_, self.n_classes_ = len(ok), logp.shape[1]
        self.accuracy_ = float(ok.mean()) if len(ok) else float("nan")
        if not len(ok):
            return self
        t = _smoothed_targets(ok)
        _, s = top_label(logp)
        if self.method == "coverage":
            from scipy.optimize import minimize

            F = self._features(s, distance, len(ok))
            self.d_scale_ = float(np.median(F[:, 1])) if len(F) else 0.0
            F[:, 1] -= self.d_scale_

            def loss_c(v):
                return _bce(_sigmoid(F @ v[:2] + v[2]), t, w) + 1e-4 * float(v[:2] @ v[:2])

            self.w_ = minimize(loss_c, x0=np.array([1.0, 0.0, 0.0]), method="L-BFGS-B").x
        elif self.method == "temperature":
            from scipy.optimize import minimize_scalar

            res = minimize_scalar(lambda lt: _bce(_temperature_conf(logp, np.exp(lt)), t, w),
                                  bounds=(np.log(0.05), np.log(1e4)), method="bounded")
            self.T_ = float(np.exp(res.x))
        elif self.method == "platt":
            from scipy.optimize import minimize

            def loss(ab):
                return _bce(_sigmoid(ab[0] * s + ab[1]), t, w) + 1e-4 * ab[0] ** 2

            res = minimize(loss, x0=np.array([1.0, 0.0]), method="L-BFGS-B")
            self.a_, self.b_ = float(res.x[0]), float(res.x[1])
        else:
            from sklearn.isotonic import IsotonicRegression

            self.iso_ = IsotonicRegression(y_min=float(t.min()), y_max=float(t.max()),
                                           out_of_bounds="clip").fit(s, t, sample_weight=w)
        return self

    @staticmethod
    def _features(s: np.ndarray, distance, n: int) -> np.ndarray:
        if distance is None:
            raise ValueError("calibration method 'coverage' needs distance= (to the nearest labeled item)")
        d = np.asarray(distance, np.float64).reshape(-1)
        if len(d) != n:
            raise ValueError(f"distance has {len(d)} values for {n} items")
        return np.column_stack([s, np.log(np.maximum(d, 1e-12))])

    def predict(self, logp, distance=None) -> np.ndarray:
        """Calibrated top-label confidence for each row of ``logp`` (n, K) (and ``distance`` for "coverage")."""
        if not hasattr(self, "n_"):
            raise RuntimeError("TopLabelCalibrator is not fitted; call fit() first")
        logp = np.asarray(logp, np.float64)
        if self.n_ == 0:
            return np.full(len(logp), 1.0 / max(1, logp.shape[1]))
        if self.method == "temperature":
            return _temperature_conf(logp, self.T_)
        _, s = top_label(logp)
        if self.method == "coverage":
            F = self._features(s, distance, len(logp))
            F[:, 1] -= self.d_scale_
            return _sigmoid(F @ self.w_[:2] + self.w_[2])
        if self.method == "platt":
            return _sigmoid(self.a_ * s + self.b_)
        return np.asarray(self.iso_.predict(s), np.float64)


def fold_ids(y: np.ndarray, folds: int, seed: int = 0, groups: np.ndarray | None = None) -> np.ndarray:
    """Fold number (0..folds-1) for each labeled item: each class dealt round-robin after a shuffle, so
    every fold gets a share of every class that has at least ``folds`` labels. With ``groups`` (e.g. the
    labeling round of each item) whole groups are dealt instead, so items picked together stay together."""
    y = np.asarray(y, np.int64)
    rng = np.random.default_rng(seed)
    if groups is not None:
        g = np.asarray(groups)
        if len(g) != len(y):
            raise ValueError(f"groups has {len(g)} values for {len(y)} labeled items")
        uniq = rng.permutation(np.unique(g))
        where = {v: k % folds for k, v in enumerate(uniq.tolist())}
        return np.array([where[v] for v in g.tolist()], np.int64)
    out = np.empty(len(y), np.int64)
    start = 0
    for c in np.unique(y):
        where = rng.permutation(np.flatnonzero(y == c))
        out[where] = (start + np.arange(len(where))) % folds
        start += len(where)  # the next class starts where this one ended: folds stay the same size
    return out


def sq_distance_chunks(X: np.ndarray, Y: np.ndarray, rows: np.ndarray, chunk: int = 4096):
    """Yield (slice into ``rows``, squared Euclidean distances (len(slice), len(Y))) from the rows
    ``X[rows]`` to every row of ``Y``, ``chunk`` rows at a time (a whole pool never sits in memory)."""
    yy = np.einsum("ij,ij->i", Y, Y)
    for a in range(0, len(rows), chunk):
        A = X[rows[a:a + chunk]]
        yield slice(a, a + len(A)), np.einsum("ij,ij->i", A, A)[:, None] - 2.0 * A @ Y.T + yy[None, :]


def nn_distance(X: np.ndarray, to: np.ndarray, rows: np.ndarray | None = None, chunk: int = 4096) -> np.ndarray:
    """Euclidean distance from each row of ``X`` (or of ``X[rows]``) to the nearest of the items ``to``."""
    X = np.asarray(X, np.float32)
    Y = X[np.asarray(to, np.int64)]
    rows = np.arange(len(X)) if rows is None else np.asarray(rows, np.int64)
    if not len(Y):
        return np.full(len(rows), np.inf)
    out = np.empty(len(rows))
    for sl, d2 in sq_distance_chunks(X, Y, rows, chunk):
        out[sl] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def cross_fit(labeled: np.ndarray, y: np.ndarray, fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
              folds: int = 3, seed: int = 0, check: Callable[[], None] | None = None,
              X: np.ndarray | None = None, groups: np.ndarray | None = None) -> tuple:
    """Out-of-fold predictions on the human-labeled items.

    ``labeled`` (m,) item ids with labels ``y`` (m,) (class indices); ``fit_predict(train_ids, test_ids)``
    trains a copy of the model on ``train_ids`` only and returns (len(test_ids), K) log-probabilities
    over all K classes (-inf for a class it never saw). Returns (logp (m, K), correct (m,)), in the
    order of ``labeled``. ``check`` is called between folds (to stop a cancelled refit). With ``X`` (the
    model's label-free input, one row per item) a third array: each held-out item's distance to the
    nearest item its fold's model was trained on (for the "coverage" calibrator). ``groups`` (m,): items
    of one group are held out together (:func:`fold_ids`)."""
    labeled, y = np.asarray(labeled, np.int64), np.asarray(y, np.int64)
    if len(labeled) != len(y):
        raise ValueError("labeled ids and their labels differ in length")
    folds = int(folds)
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    f = fold_ids(y, folds, seed, groups)
    rows: list[np.ndarray] = [np.zeros(0)] * len(labeled)
    dist = np.full(len(labeled), np.inf)
    for k in range(folds):
        test = np.flatnonzero(f == k)
        if not len(test):
            continue
        if check is not None:
            check()
        lp = np.asarray(fit_predict(labeled[f != k], labeled[test]), np.float64)
        for j, row in zip(test, lp):
            rows[j] = row
        if X is not None:
            dist[test] = nn_distance(X, labeled[f != k], rows=labeled[test])
    logp = np.vstack(rows)
    return (logp, logp.argmax(1) == y) if X is None else (logp, logp.argmax(1) == y, dist)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% for z=1.96) of a success rate from ``k`` successes in ``n`` trials
    (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over the normal interval for small n)."""
    if n <= 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    mid = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(max(0.0, mid - half)), float(min(1.0, mid + half))


class AuditVerdict(NamedTuple):
    """``SuggestionAudit.verdict()``: ``open`` (a percentage may be shown), ``k`` of the last ``n`` shown
    suggestions were right, their ``mean_conf``, the Wilson interval (``low``, ``high``) of the accuracy,
    ``gap`` (binned calibration error of the window), ``reason`` (why closed; "" when open)."""
    open: bool
    k: int
    n: int
    mean_conf: float
    low: float
    high: float
    gap: float
    reason: str


def audit_test(conf, correct, min_n: int = 20, z: float = 1.96, n_bins: int = 5, min_bin: int = 8) -> AuditVerdict:
    """The audit's test on one set of records (``SuggestionAudit.verdict`` picks which): open when there are
    at least ``min_n``, their mean shown confidence lies inside the Wilson interval (``z``) of their accuracy,
    and so does every one of ``n_bins`` equal-width confidence bins holding at least ``min_bin`` records."""
    conf, ok = np.asarray(conf, float).reshape(-1), np.asarray(correct, bool).reshape(-1)
    n, k = len(conf), int(ok.sum())
    low, high = wilson(k, n, z)
    mean = float(conf.mean()) if n else float("nan")
    gap = ece(conf, ok, n_bins) if n else float("nan")
    if n < min_n:
        return AuditVerdict(False, k, n, mean, low, high, gap, f"only {n} of {min_n} suggestions checked")
    if not low <= mean <= high:
        return AuditVerdict(False, k, n, mean, low, high, gap,
                            f"mean shown {mean:.0%}, right {k}/{n} (95% interval {low:.0%}-{high:.0%})")
    b = confidence_bins(conf, n_bins)
    for j in np.unique(b):
        m = b == j
        if m.sum() >= min_bin:
            lo, hi = wilson(int(ok[m].sum()), int(m.sum()), z)
            if not lo <= conf[m].mean() <= hi:
                return AuditVerdict(False, k, n, mean, low, high, gap,
                                    f"shown ~{conf[m].mean():.0%}, right {int(ok[m].sum())}/{int(m.sum())}")
    return AuditVerdict(True, k, n, mean, low, high, gap, "")


class SuggestionAudit:
    """A live audit of the confidences shown with suggestions: a percentage is shown only while the
    recent record agrees with it.

    Calibrators learn from the human-labeled items, but an active queue asks about other items (issue 14:
    suggestions shown at 86% were right 68% of the time; no calibrator fixed it in benchmarks/calibration.py).
    The person's label is the truth of every suggestion shown, so the panel ``record(conf, correct, fit)``s
    each one (``fit``: how many human labels the model that made it was trained on); ``verdict(fit)`` opens
    the gate only when the records it audits number at least ``min_n``, their mean shown confidence lies
    inside the Wilson interval (``z``) of their accuracy, and within every confidence bin (``n_bins``
    equal-width) holding at least ``min_bin`` records the mean confidence lies inside that bin's Wilson
    interval too (a small binned gap, judged against its sampling noise; :func:`audit_test`). The records
    audited are the last ``window`` made by *recent* fits: with ``recent`` set, only those whose fit used at
    least ``recent`` x the labels of the current fit (records without a fit always count). A model that
    improves quickly (LANCET) is then judged on what it does now, not on what its 20-label ancestors did.
    Defaults (``window=30, min_n=20, recent=0.5``: the records of fits with at least half the current labels,
    at most the last 30) were chosen by replaying 14 rules on the saved gate curves of both engines on digits,
    MNIST-10k and a text set (benchmarks/calibration.py ``--gate-from``; benchmarks/RESULTS.md, issue 14 third
    pass); the rule before was the last 50 records whatever made them, which lagged LANCET's gains.
    This is prequential checking (Dawid 1984, "Present position and potential developments: the prequential
    approach"): each confidence is judged on outcomes it did not see. Engine-free: plain numbers in and out.
    """

    def __init__(self, window: int = 30, min_n: int = 20, z: float = 1.96, n_bins: int = 5, min_bin: int = 8,
                 recent: float | None = 0.5):
        if not isinstance(window, (int, np.integer)) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        if not isinstance(min_n, (int, np.integer)) or not 1 <= min_n <= window:
            raise ValueError(f"min_n must be an int in 1..window ({window}), got {min_n!r}")
        if recent is not None and not (isinstance(recent, (int, float)) and 0.0 < recent <= 1.0):
            raise ValueError(f"recent must be None or a share of the current fit's labels in (0, 1], got {recent!r}")
        self.window, self.min_n, self.z, self.n_bins, self.min_bin = int(window), int(min_n), float(z), int(n_bins), int(min_bin)
        self.recent = None if recent is None else float(recent)
        # every record is kept until it falls out of the window of the records that still count
        self.conf_: deque[float] = deque()
        self.correct_: deque[bool] = deque()
        self.fit_: deque[int | None] = deque()
        self.total_ = 0
        self._latest_fit = -1

    def record(self, conf: float, correct: bool, fit: int | None = None) -> None:
        """One shown suggestion: its shown confidence (0..1), whether the person's label equalled it, and
        (optional) the number of human labels of the fit that made it."""
        c = float(conf)
        if not np.isfinite(c) or not 0.0 <= c <= 1.0:
            raise ValueError(f"a shown confidence must be a number in [0, 1], got {conf!r}")
        if fit is not None and (not isinstance(fit, (int, np.integer)) or fit < 0):
            raise ValueError(f"fit must be None or the number of labels of the suggesting fit, got {fit!r}")
        self.conf_.append(c)
        self.correct_.append(bool(correct))
        self.fit_.append(None if fit is None else int(fit))
        if fit is not None:
            self._latest_fit = max(self._latest_fit, int(fit))
        self.total_ += 1
        while len(self.conf_) > self.window:
            self.conf_.popleft(), self.correct_.popleft(), self.fit_.popleft()

    def state(self) -> dict:
        """The records that still count, as plain JSON-able data (for the store: a reloaded page resumes the
        audit instead of starting it empty); :meth:`restore` reads it back."""
        return {"records": [[round(c, 6), bool(o), f] for c, o, f in zip(self.conf_, self.correct_, self.fit_)],
                "total": int(self.total_)}

    def restore(self, state: dict) -> SuggestionAudit:
        """Record what :meth:`state` wrote, in order (a malformed record raises ValueError; nothing is kept
        from a state that fails)."""
        recs = state.get("records") if isinstance(state, dict) else None
        if not isinstance(recs, list) or not all(isinstance(r, (list, tuple)) and len(r) == 3 for r in recs):
            raise ValueError("an audit state is {'records': [[confidence, correct, fit], ...], 'total': n}")
        fresh = SuggestionAudit(self.window, self.min_n, self.z, self.n_bins, self.min_bin, self.recent)
        for c, o, f in recs:
            fresh.record(float(c), bool(o), fit=None if f is None else int(f))
        total = state.get("total", len(recs))
        fresh.total_ = max(fresh.total_, int(total) if isinstance(total, (int, np.integer)) else 0)
        self.conf_, self.correct_, self.fit_ = fresh.conf_, fresh.correct_, fresh.fit_
        self.total_, self._latest_fit = fresh.total_, fresh._latest_fit
        return self

    def audited(self, fit: int | None = None) -> np.ndarray:
        """Positions (into ``conf_``) of the records the verdict audits, given the current fit's labels."""
        n = len(self.conf_)
        if self.recent is None:
            return np.arange(n)
        latest = max(self._latest_fit, -1 if fit is None else int(fit))
        if latest < 0:
            return np.arange(n)
        floor = self.recent * latest
        return np.array([j for j, f in enumerate(self.fit_) if f is None or f >= floor], np.int64)

    def verdict(self, fit: int | None = None) -> AuditVerdict:
        """Whether the recent shown confidences are consistent with what happened (see the class docstring);
        ``fit``: the human labels of the fit whose confidences are about to be shown."""
        keep = self.audited(fit)
        conf = np.asarray(self.conf_, float)[keep] if len(keep) else np.zeros(0)
        ok = np.asarray(self.correct_, bool)[keep] if len(keep) else np.zeros(0, bool)
        return audit_test(conf, ok, self.min_n, self.z, self.n_bins, self.min_bin)
