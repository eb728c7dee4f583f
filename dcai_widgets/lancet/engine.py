"""``Lancet``: the LANCET loop over a Session — learn an embedding, propagate, pick candidates, say when to stop.

Zhang, Cao, Madden, Rundensteiner, "LANCET: Labeling Complex Data at Scale", VLDB 2021. Each ``fit()``
trains a backbone (default ``"mlp"``: an MLP over the spectral + PCA view of ``session.embeddings``
with labeled CE, confident pseudo-labels and CFM; ``"sslgan"``: the paper's semi-supervised GAN on
the same input) and a linear head that labels every unlabeled item, then a distribution matching
network whose smallest per-item weights mark the regions no label covers yet. Defaults were chosen by
measurement (benchmarks/lancet.py, benchmarks/RESULTS.md "## LANCET"): the MLP backbone (digits-90:
0.971 at 6 s/round vs the SSL-GAN's 0.956 at 26 s/round); the encoder input = spectral view of the
kNN graph (shift- and rotation-invariant for images >= 16 px) + PCA (MNIST-10k, logistic regression at
100 k-means-chosen labels: 0.971 vs 0.938 for the plain graph and 0.89 for PCA alone); the candidate
pool = the 5% lowest DMN weights, split by k-means into ``batch`` clusters, the densest item of each
(a departure from the paper, which takes the smallest weights themselves: those are often atypical
items; MNIST-10k at 100 labels, seeds 0-2, 400 backbone steps: 0.970-0.971 vs 0.949-0.967 with the item
nearest each centroid); 600 backbone steps (digits-90 met on seeds 0-4; 400 met it on one of five).
"""
from __future__ import annotations

import atexit
import dataclasses
import itertools
import threading
import warnings
from typing import Any

import faiss
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._validate import excluded_mask
from ..calibration import MAX_ACCURACY_SE, TopLabelCalibrator, accuracy_se, check_params, cross_fit, padded_log_proba
from ..calibration_shift import heldout_trust, label_distances, trust_weights
from .features import encoder_input, shift_knn_graph
from .propagate import propagate
from .stop import PredictionStability, StopReport, stop_report

BACKBONES = ("mlp", "sslgan")
_VERSION = itertools.count(1)
_FEATURES_VERSION = 3  # bump when features.py changes what it computes (cached inputs are keyed on it)
#: suffix of the model version of a fit built with ``calibration=None``: its propagated labels' stored
#: confidence is the head's raw probability, not the chance the label is right, and a page that finds the
#: version in the store (no engine in its kernel) must not print it like a calibrated one
UNCALIBRATED = "-uncalibrated"
#: suffix of the model version of a fit whose calibration pairs leave the accuracy too loose to print
#: (``calibration.MAX_ACCURACY_SE``): its propagated labels' confidences are shown as "uncertain"
IMPRECISE = "-imprecise"


def version_calibrated(model_version: object) -> bool:
    """False for a LANCET model version made without calibration (``...-uncalibrated``), else True."""
    return not (isinstance(model_version, str) and model_version.endswith(UNCALIBRATED))


def version_precise(model_version: object) -> bool:
    """False for a LANCET model version whose calibration is too loose to print (``...-imprecise``)."""
    return not (isinstance(model_version, str) and model_version.endswith(IMPRECISE))


def _kmeans_representatives(X: np.ndarray, n: int, seed: int = 0, score: np.ndarray | None = None) -> np.ndarray:
    """One row per k-means cluster of ``X``: the lowest ``score`` in it (or the one nearest its centroid)."""
    n = int(min(n, len(X)))
    if n <= 0:
        return np.zeros(0, np.int64)
    if n == len(X):
        return np.arange(len(X))
    X = np.ascontiguousarray(X, dtype=np.float32)
    km = faiss.Kmeans(X.shape[1], n, niter=20, nredo=5, seed=seed, min_points_per_centroid=1, max_points_per_centroid=10**6)
    km.train(X)
    d, assign = km.index.search(X, 1)
    d, assign = d[:, 0], assign[:, 0]
    key = d if score is None else score
    out = []
    for c in range(n):
        members = np.flatnonzero(assign == c)
        if len(members):
            out.append(members[np.argmin(key[members])])
    out = np.asarray(out, np.int64)
    if len(out) < n:  # empty clusters: fill with the best remaining rows
        taken = set(out.tolist())
        rest = [int(i) for i in np.argsort(key, kind="stable") if int(i) not in taken][: n - len(out)]
        out = np.concatenate([out, rest]).astype(np.int64)
    return out


_SHUTDOWN = threading.Event()
_FITTING: set[threading.Thread] = set()


@atexit.register
def _stop_fits_at_exit() -> None:
    """Stop fits running in background threads (a panel's refit) before the interpreter tears torch down;
    a daemon thread still inside torch at exit aborts the process."""
    _SHUTDOWN.set()
    for t in list(_FITTING):
        if t is not threading.current_thread():
            t.join(timeout=30)


class _Interrupted(Exception):
    """Raised inside a fit when the interpreter is shutting down."""


class _Progress:
    """A tqdm bar that also reports (done, total) to listeners (the panel's own progress bar)."""

    def __init__(self, bar, total: int, listeners: list):
        self.bar, self.total, self.listeners, self.done = bar, total, listeners, 0

    def update(self, n: int = 1) -> None:
        if _SHUTDOWN.is_set():
            raise _Interrupted
        self.bar.update(n)
        self.done += n
        if self.listeners and (self.done % 20 == 0 or self.done >= self.total):
            for fn in list(self.listeners):
                fn(self.done, self.total)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        if _SHUTDOWN.is_set():
            raise _Interrupted


class Lancet:
    """LANCET labeling queue: candidates to ask, propagated labels, and a stop rule.

    Parameters: ``session``; ``batch`` (candidates per round); ``alpha_t`` (stop when every DMN
    weight exceeds it; paper: 0.03-0.1); ``backbone`` ("mlp" or "sslgan"); ``selection``
    ("dmn" = the paper's, "random" for ablations); ``steps`` (backbone training steps; 600 measured
    against 400 with the density pick: digits-90 seeds 0-4 0.973-0.977 vs 0.957-0.976, MNIST-10k-100
    seeds 0-4 0.952-0.973 vs 0.970-0.973, about 1.4x the seconds per round);
    ``dmn_steps``; ``pool_factor``, ``pool_frac`` (candidates come from a pool of the
    ``max(pool_factor * batch, pool_frac * unlabeled)`` lowest DMN weights, split by k-means into
    ``batch`` clusters, one item per cluster, so a batch holds no near-duplicates; with ``pool_frac``
    > 0 the item nearest each centroid is taken — representative of an uncovered region rather than
    its most extreme outlier; MNIST-10k at 100 labels: pool_frac 0 -> 0.856, 0.2 -> 0.914,
    0.05 -> 0.944 / 0.945 / 0.951 over three seeds); ``pool_pick`` (with ``pool_frac`` > 0, which item
    of each pool cluster: "density" = the densest in the encoder input's kNN graph, a typical item of
    the uncovered region rather than an atypical one; "centroid" = the item nearest the k-means centroid;
    MNIST-10k at 100 labels, seeds 0 / 1 / 2, 400 backbone steps: density 0.971 / 0.971 / 0.970,
    centroid 0.949 / 0.967 / 0.955); ``write`` (store propagated labels
    in the session); ``progress`` (tqdm bars); ``shift_radius`` (for image sessions with images of
    at least 16 px a side and at most 16,384 values, the spectral view uses the kNN graph under translations of up to this many
    pixels and rotations of +-10 degrees, :func:`.features.shift_knn_graph`; 0 = the embedding's own kNN graph); ``n_threads`` (torch threads during fit; 1 measured
    fastest for these small networks on a shared 2-core box); ``seed``; ``warn`` (False: notes such as
    unlabeled classes go only to ``warnings_``, not to Python's warnings, for a panel that shows them
    itself: in a Voila app a warning from a background refit is printed on the page as stderr);
    ``calibration`` ("coverage", the default, "temperature", "platt", "isotonic" or None: how the
    confidences of propagated labels and suggestions are calibrated, :mod:`dcai_widgets.calibration`;
    benchmarks/calibration.py: only "coverage" held ECE <= 0.05 at 50 and 100 labels on digits, where the
    score-only calibrators learned the weaker fold models' accuracy; None keeps the head's own
    overconfident top probability) and ``calibration_folds`` (copies of the backbone trained without one fold of the human
    labels each, whose out-of-fold predictions the calibrator learns from; each costs one more backbone
    training per fit; 5, as the entropy queue: a fold model then trains on 4/5 of the labels instead of
    2/3, closer to the full model whose confidence is shown: at 50 labels the worst "coverage" ECE of the
    propagated labels over digits, MNIST-10k and docstrings (2-3 seeds) went from 0.188 to 0.051; at 100
    it rose from 0.083 to 0.111 on one text seed; benchmarks/RESULTS.md, issue 14 second pass; the cause,
    third pass: the items LANCET asks are harder than the unlabeled pool at the same score and distance on
    text, so the calibrator learns their accuracy and under-states the pool's, 72% said for 83% right);
    ``calibration_weights`` ("trust", the default, or None): the propagated labels' confidences come from a
    second calibrator whose pairs are importance-weighted toward the unlabeled pool by their trust scores
    (:mod:`dcai_widgets.calibration_shift`); suggestions keep the unweighted one, since the items asked
    are like the labeled pairs (both chosen by the DMN rule). None: one calibrator for both. A fit whose
    pairs leave the accuracy's standard error above ``calibration.MAX_ACCURACY_SE`` (``calibration_se_``)
    gets a model version ending in ``-imprecise``, and the panels print "uncertain" for its propagated labels
    (not for its suggestions, which the Label tab's live audit judges on what people answer: hiding those
    of imprecise fits too hid half the text suggestions and left the rest no better calibrated).

    Learned state after ``fit()``: ``proba_`` (N, K') head probabilities over ``classes_seen_``,
    ``embedding_`` (N, z), ``weights_`` (unlabeled ids -> DMN weight), ``candidates_``, ``report_``,
    ``model_version_``, ``n_labeled_``, ``warnings_``; ``log_proba_`` (N, K) over all classes (-inf for
    unseen ones), ``confidence_`` (N,) calibrated top-label confidence of the propagated labels,
    ``raw_confidence_`` (N,), ``calibrator_`` (the suggestions'), ``pool_calibrator_`` (the propagated
    labels'), ``distance_`` and ``trust_`` (N,) (to the human labels, in the encoder input), ``oof_``
    (out-of-fold log-probabilities and correctness of the human labels, or None).
    """

    def __init__(self, session: Any, batch: int = 10, alpha_t: float = 0.1, backbone: str = "mlp",
                 selection: str = "dmn", steps: int = 600, dmn_steps: int = 300, pool_factor: int = 5,
                 pool_frac: float = 0.05, pool_pick: str = "density",
                 lam_cfm: float = 0.1, threshold: float = 0.9, write: bool = True, progress: bool = True,
                 shift_radius: int = 1, n_threads: int | None = 1, seed: int = 0, warn: bool = True,
                 calibration: str | None = "coverage", calibration_folds: int = 5,
                 calibration_weights: str | None = "trust"):
        if not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive int (items per round), got {batch!r}")
        if not (isinstance(alpha_t, (int, float)) and 0 <= alpha_t < 1):
            raise ValueError(f"alpha_t must be a number in [0, 1) (paper: 0.03-0.1), got {alpha_t!r}")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        if selection not in ("dmn", "random"):
            raise ValueError(f"selection must be 'dmn' or 'random', got {selection!r}")
        if not hasattr(session, "label_vector") or not hasattr(session, "embeddings"):
            raise TypeError(f"session must be a dcai_widgets Session, got {type(session).__name__}")
        self.session = session
        self.batch, self.alpha_t = int(batch), float(alpha_t)
        self.backbone, self.selection = backbone, selection
        self.steps, self.dmn_steps, self.pool_factor = int(steps), int(dmn_steps), int(pool_factor)
        self.pool_frac = float(pool_frac)
        if pool_pick not in ("centroid", "density"):
            raise ValueError(f"pool_pick must be 'centroid' or 'density', got {pool_pick!r}")
        self.pool_pick = pool_pick
        self._density: np.ndarray | None = None
        self.lam_cfm, self.threshold = float(lam_cfm), float(threshold)
        self.write, self.progress, self.seed = write, progress, seed
        self.n_threads = n_threads
        self.warn = bool(warn)
        if not isinstance(shift_radius, (int, np.integer)) or shift_radius < 0:
            raise ValueError(f"shift_radius must be a non-negative int (pixels; 0 = off), got {shift_radius!r}")
        self.shift_radius = int(shift_radius)
        self.calibration, self.calibration_folds = check_params(calibration, calibration_folds)
        if calibration_weights not in (None, "trust"):
            raise ValueError(f"calibration_weights must be 'trust' or None, got {calibration_weights!r}")
        self.calibration_weights = calibration_weights
        self.confidence_: np.ndarray | None = None
        self.oof_: tuple | None = None
        self.report_: StopReport | None = None
        self.candidates_: np.ndarray | None = None
        self.proba_: np.ndarray | None = None
        self.history_: list[dict] = []
        # the stop rule also asks that predictions stopped changing over rounds of `batch` labels (stop.py)
        self.stability_ = PredictionStability(gap=self.batch)
        self._input: np.ndarray | None = None
        self._progress_listeners: list = []

    def on_progress(self, callback) -> None:
        """Call ``callback(done, total)`` as a fit trains (for a panel's progress bar; any thread)."""
        if not callable(callback):
            raise TypeError("on_progress needs a callable taking (done, total)")
        self._progress_listeners.append(callback)

    # -- inputs ----------------------------------------------------------------------------
    def _embeddings(self) -> np.ndarray:
        s = self.session
        if not getattr(s, "has_embeddings", True):
            raise ValueError("the session has no embeddings; create it with Session.from_embeddings(X, ...) "
                             "or give an encoder (from_images/from_texts) so LANCET has vectors to learn from")
        X = np.asarray(s.embeddings, dtype=np.float32)
        if X.ndim != 2 or len(X) != len(s):
            raise ValueError(f"session.embeddings must be (N={len(s)}, d); got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("session.embeddings contain NaN or inf; fix the encoder output before labeling")
        return X

    def _shift_images(self) -> np.ndarray | None:
        """The session's images when the translation-invariant graph applies, else None."""
        items = getattr(self.session, "items", None)
        if self.shift_radius == 0 or getattr(items, "kind", None) != "image":
            return None
        images = np.asarray(items.images)
        # a one-pixel shift is a small deformation only on images of some size (8x8 digits: 12%;
        # measured worse there), and the pixel search must stay cheap
        if min(images.shape[1:3]) < 16 or images[0].size > 16384:
            return None
        return images

    def encoder_input(self) -> np.ndarray:
        """The backbone's input (spectral + PCA view of the embeddings), computed once and cached."""
        if self._input is None:
            X = self._embeddings()
            images = self._shift_images()

            def compute() -> np.ndarray:
                graph = None if images is None else shift_knn_graph(images, radius=self.shift_radius)
                return encoder_input(X, graph=graph)

            cache = getattr(self.session, "cache", None)
            if cache is not None and hasattr(self.session, "_embedding_key"):
                shift = 0 if images is None else self.shift_radius
                key = f"lancet-input-v{_FEATURES_VERSION}-{self.session._embedding_key()}-shift{shift}"
                self._input = cache.get_or_compute(key, compute).astype(np.float32)
            else:
                self._input = compute()
        return self._input

    # -- fit ---------------------------------------------------------------------------------
    def fit(self) -> "Lancet":
        """Train backbone + head on the current human labels, propagate, run the DMN, pick candidates."""
        # torch is imported by the first fit, not with the module: a served page shows its first item sooner
        from ._threads import torch_threads

        me = threading.current_thread()
        _FITTING.add(me)
        try:
            with torch_threads(self.n_threads):
                return self._fit()
        except _Interrupted:  # interpreter exit: leave the last fitted state as it was
            return self
        finally:
            _FITTING.discard(me)

    def _fit(self) -> "Lancet":
        s = self.session
        y = np.asarray(s.label_vector(), dtype=np.int64)
        F_in = self.encoder_input()
        n = len(y)
        # excluded items (Session.exclude): their labels are not trained on, they are never asked and
        # get no propagated label
        out = excluded_mask(s, n)
        y = np.where(out, -1, y)
        labeled = y >= 0
        unl = np.flatnonzero(~labeled & ~out)
        self.n_labeled_ = int(labeled.sum())
        self.warnings_: list[str] = []
        rng = np.random.default_rng(self.seed + self.n_labeled_)
        seen = np.unique(y[labeled])
        self.classes_seen_ = seen
        missing = [s.classes[c] for c in range(len(s.classes)) if c not in set(seen.tolist())]
        if len(unl) == 0:
            self._warn("every item is already labeled; there is nothing to ask or propagate")
        elif self.batch > len(unl):
            self._warn(f"batch={self.batch} is larger than the {len(unl)} unlabeled items; "
                       "candidates() will ask for all of them")
        if self.n_labeled_ and missing:
            self._warn(f"{len(missing)} of {len(s.classes)} classes have no labels yet ({', '.join(missing[:5])}"
                       f"{'...' if len(missing) > 5 else ''}); propagated labels can only be classes seen so far — "
                       "label an example of each class to cover them")

        if self.n_labeled_ == 0 or len(unl) == 0:
            # cold start: candidates cover the clusters of the data
            self.proba_ = self.confidence_ = self.oof_ = None
            self.embedding_ = F_in
            self.weights_ = pd.Series(np.zeros(len(unl)), index=unl, dtype=float)
            self.rank_ = pd.Series(np.arange(len(unl)), index=unl, dtype=float)
            if len(unl):
                self.candidates_ = unl[_kmeans_representatives(F_in[unl], min(self.batch, len(unl)), self.seed)]
            else:
                self.candidates_ = np.zeros(0, np.int64)
            reason = "no human labels yet" if len(unl) else "everything is labeled"
            self.report_ = StopReport(len(unl) == 0, float("nan"), np.log(2), float("nan"), self.alpha_t, reason)
            self.model_version_ = None
            self._record()
            s.set_model("lancet", self)
            return self

        # 1. backbone + linear head on the labeled classes seen so far
        y_local = np.full(n, -1, np.int64)
        y_local[labeled] = np.searchsorted(seen, y[labeled])
        from .backbone import MLPBackbone, SSLGANBackbone
        from .dmn import DMN

        Model = MLPBackbone if self.backbone == "mlp" else SSLGANBackbone
        kw = dict(lam_cfm=self.lam_cfm, seed=self.seed)
        if self.backbone == "mlp":
            kw.update(steps=self.steps, threshold=self.threshold)
        net = Model(F_in.shape[1], len(seen), **kw)
        self._snapshot = (F_in, y, Model, kw, net.steps)
        crossfit = self.calibration is not None and self._can_cross_fit(y)
        total = net.steps * (1 + (self.calibration_folds if crossfit else 0)) + \
            (self.dmn_steps if self.selection == "dmn" else 0)
        with tqdm(total=total, desc="LANCET fit", leave=False, disable=not self.progress) as tq:
            bar = _Progress(tq, total, self._progress_listeners)
            if len(seen) == 1:
                z = F_in
                proba = np.ones((n, 1))
                bar.update(net.steps)
            else:
                net.fit(F_in, y_local, progress=bar)
                z, proba = net.embed(F_in)
            self.net_ = net
            self.embedding_, self.proba_ = z, proba
            logp = np.zeros((n, 1)) if len(seen) == 1 else net.log_proba(F_in)
            self.log_proba_ = padded_log_proba(logp, seen, len(s.classes))
            self.oof_ = self.out_of_fold(progress=bar) if crossfit else None
            self._calibrate(unl)
            self.stability_.update(self.n_labeled_, seen[proba.argmax(1)])
            # 2. DMN: which unlabeled regions have no labeled item nearby
            if self.selection == "dmn" and len(unl):
                dmn = DMN(steps=self.dmn_steps, seed=self.seed).fit(z[labeled], z[unl], progress=bar)
                self.dmn_ = dmn
                w = dmn.weights_
                rank = np.empty(len(unl))
                rank[dmn.order_] = np.arange(len(unl))
                self.report_ = stop_report(dmn.loss_, float(w.min()), self.alpha_t, stability=self.stability_)
                if missing:  # propagated labels cannot cover a class no one has labeled: not done
                    r, why = self.report_, f"{len(missing)} of {len(s.classes)} classes have no human label yet"
                    self.report_ = dataclasses.replace(r, stop=False, reason=why if r.stop else f"{r.reason}; {why}")
            else:
                w = rng.random(len(unl))
                rank = np.argsort(np.argsort(w))
                self.report_ = StopReport(False, float("nan"), np.log(2), float("nan"), self.alpha_t,
                                          "random selection has no DMN; the stop rule needs selection='dmn'")
        self.weights_ = pd.Series(w, index=unl, dtype=float)
        # 3. candidates: lowest weights, one per k-means cluster of the low-weight pool
        self.rank_ = pd.Series(rank, index=unl, dtype=float)
        self.candidates_ = self._select(z, unl, rank)
        # 4. propagated labels
        self.model_version_ = (f"lancet-{self.n_labeled_}-{next(_VERSION)}"
                               + (UNCALIBRATED if self.calibration is None else
                                  IMPRECISE if self.calibration_se_ > MAX_ACCURACY_SE else ""))
        self._propagated = propagate(proba, seen, labeled | out, confidence=self.confidence_)
        if self.write and len(self._propagated):
            p = self._propagated
            names = np.asarray(s.classes, dtype=object)[p["label"].to_numpy()]   # names: never a guess
            s.set_propagated(p["id"].to_numpy(), names, p["confidence"].clip(0, 1).to_numpy(),
                             model_version=self.model_version_)
        self._record()
        s.set_model("lancet", self)
        return self

    # -- calibration (dcai_widgets.calibration) ----------------------------------------------------
    def _can_cross_fit(self, y: np.ndarray) -> bool:
        lab = y[y >= 0]
        return len(lab) >= 2 * self.calibration_folds and len(np.unique(lab)) >= 2

    def out_of_fold(self, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """Cross-fitted predictions on the human labels of the last fit: (log-probabilities (m, K) over
        all classes, whether each top label was right (m,), distance to the nearest label its model saw
        (m,)), one backbone copy trained per fold without it."""
        if progress is None:  # called on its own (a benchmark): one torch thread, as in fit()
            from ._threads import torch_threads

            with torch_threads(self.n_threads):
                return self.out_of_fold(progress=_NoProgress())
        F_in, y, Model, kw, steps = self._snapshot
        labeled = np.flatnonzero(y >= 0)
        K = len(self.session.classes)

        def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
            seen_k = np.unique(y[train])
            if len(seen_k) == 1:
                progress.update(steps)
                return padded_log_proba(np.zeros((len(test), 1)), seen_k, K)
            y_fold = np.full(len(y), -1, np.int64)
            y_fold[train] = np.searchsorted(seen_k, y[train])
            net = Model(F_in.shape[1], len(seen_k), **kw).fit(F_in, y_fold, progress=progress)
            return padded_log_proba(net.log_proba(F_in[test]), seen_k, K)

        return cross_fit(labeled, y[labeled], fit_predict, folds=self.calibration_folds, seed=self.seed, X=F_in)

    def _calibrate(self, pool: np.ndarray) -> None:
        """Fit the calibrators on ``oof_`` and set ``confidence_`` (chance, 1/K, without out-of-fold pairs):
        ``calibrator_`` for suggestions, ``pool_calibrator_`` (trust-weighted toward the unlabeled ``pool``
        ids) for propagated labels."""
        self.raw_confidence_ = np.exp(self.log_proba_.max(1))
        F_in, y = self._snapshot[:2]
        labeled = np.flatnonzero(y >= 0)
        # label-free input space: each item's distance to the nearest human label and its trust score
        self.distance_, self.trust_ = label_distances(F_in, labeled, y[labeled], self.log_proba_.argmax(1))
        self.calibration_se_ = float("inf")
        if self.calibration is None:
            self.calibrator_ = self.pool_calibrator_ = None
            self.confidence_ = self.raw_confidence_
            return
        K = self.log_proba_.shape[1]
        oof = self.oof_ if self.oof_ is not None else (np.zeros((0, K)), np.zeros(0, bool), np.zeros(0))
        self.calibrator_ = self.pool_calibrator_ = TopLabelCalibrator(self.calibration).fit(*oof)
        w = None
        if self.calibration_weights == "trust" and len(oof[1]) and len(pool):
            t = heldout_trust(F_in, labeled, y[labeled], oof[0].argmax(1), self.calibration_folds, self.seed)
            w = trust_weights(t, self.trust_[pool], seed=self.seed)
            self.pool_calibrator_ = TopLabelCalibrator(self.calibration).fit(*oof, sample_weight=w)
        self.calibration_se_ = accuracy_se(oof[1], w)
        self.confidence_ = self.pool_calibrator_.predict(self.log_proba_, distance=self.distance_)

    def _select(self, z: np.ndarray, unl: np.ndarray, rank: np.ndarray) -> np.ndarray:
        if len(unl) == 0:
            return np.zeros(0, np.int64)
        b = min(self.batch, len(unl))
        if self.selection == "random":
            return np.random.default_rng(self.seed + self.n_labeled_).choice(unl, b, replace=False)
        size = max(b, self.pool_factor * b, int(self.pool_frac * len(unl)))
        pool = np.argsort(rank, kind="stable")[:size]
        # small pool: the lowest weight per cluster; large pool: the cluster's most central item
        # (pool_pick="centroid") or its densest item in the encoder input's kNN graph ("density")
        score = None if self.pool_frac > 0 else rank[pool]
        if self.pool_frac > 0 and self.pool_pick == "density":
            score = -self.density()[unl[pool]]
        pick = _kmeans_representatives(z[unl[pool]], b, self.seed, score=score)
        return unl[pool[pick]]

    def density(self, k: int = 10) -> np.ndarray:
        """(N,) local density of every item in the encoder input: 1 / mean squared distance to its k
        nearest neighbours (computed once)."""
        if self._density is None:
            from .features import knn_graph

            _, d2 = knn_graph(self.encoder_input(), k)
            self._density = 1.0 / (d2.mean(1) + 1e-12)
        return self._density

    def _warn(self, msg: str) -> None:
        self.warnings_.append(msg)
        self._warn_once(msg)

    def _record(self) -> None:
        r = self.report_
        p = getattr(self, "_propagated", None) if self.proba_ is not None else None
        self.history_.append({"human_labels": self.n_labeled_, "model_version": self.model_version_,
                              "dmn_loss": r.dmn_loss, "min_weight": r.min_weight, "stop": r.stop,
                              "mean_confidence": float(p["confidence"].mean()) if p is not None and len(p)
                              else float("nan"),
                              "calibrated": self.calibration is not None and self.oof_ is not None})

    # -- queue protocol and public API ---------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.candidates_ is None:
            raise RuntimeError("Lancet is not fitted; call fit() first")

    def candidates(self, n: int | None = None) -> list[int]:
        """Unlabeled ids to ask next, best first (at most ``batch``, or ``n``), never near-duplicates."""
        self._check_fitted()
        if n is not None and (not isinstance(n, (int, np.integer)) or n < 0):
            raise ValueError(f"n must be a non-negative int or None, got {n!r}")
        y = np.asarray(self.session.label_vector())
        y = np.where(excluded_mask(self.session, len(y)), 0, y)   # excluded since fit: not asked either
        cands = [int(i) for i in self.candidates_ if y[int(i)] < 0]  # drop ones labeled since fit
        if n is not None and n > len(cands):
            # more than one batch asked: extend with the next-lowest weights
            extra = [int(i) for i in self.rank_.sort_values(kind="stable").index if y[int(i)] < 0
                     and int(i) not in set(cands)][: n - len(cands)]
            if len(cands) + len(extra) < n:
                self._warn_once(f"asked for {n} candidates but only {len(cands) + len(extra)} items are unlabeled")
            cands += extra
        return cands if n is None else cands[: int(n)]

    def _warn_once(self, msg: str) -> None:
        if self.warn:
            warnings.warn(msg, UserWarning, stacklevel=3)

    def propagated(self) -> pd.DataFrame:
        """DataFrame id, label (class name), confidence for every unlabeled item (empty before labels)."""
        self._check_fitted()
        if self.proba_ is None:
            return pd.DataFrame({"id": np.zeros(0, np.int64), "label": [], "confidence": np.zeros(0)})
        p = self._propagated.copy()
        p["label"] = [self.session.classes[i] for i in p["label"]]
        return p

    def predict(self) -> np.ndarray:
        """(N,) class index for every item from the head (human labels where given), -1 before any label."""
        self._check_fitted()
        y = np.asarray(self.session.label_vector())
        if self.proba_ is None:
            return y
        out = self.classes_seen_[self.proba_.argmax(1)]
        out[y >= 0] = y[y >= 0]
        return out

    def suggest(self, item_id: int) -> tuple[str, float] | None:
        """The head's label for ``item_id`` and its calibrated confidence (``calibrator_``: among items like
        those LANCET asks) for the panel's accept/reject keys; the panel shows "uncertain" instead of the
        figure before ``calibration.SHOW_PERCENT_FROM`` labels and while its audit disagrees."""
        if self.proba_ is None or self.confidence_ is None:
            return None
        i = int(item_id)
        k = int(np.argmax(self.proba_[i]))
        conf = self.confidence_[i] if self.calibrator_ is None else \
            self.calibrator_.predict(self.log_proba_[[i]], distance=self.distance_[[i]])[0]
        return self.session.classes[int(self.classes_seen_[k])], float(conf)

    def should_stop(self) -> StopReport:
        """Stop report: ``stop``, ``dmn_loss`` vs ``chance`` (ln 2), ``min_weight`` vs ``alpha_t``, ``reason``.

        Beyond the paper's rule: never ``stop`` while a class has no human label (digits, seed 2: the rule
        fired at 10 labels with one class unlabeled; benchmarks/RESULTS.md)."""
        self._check_fitted()
        return self.report_
