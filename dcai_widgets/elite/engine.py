"""``Elite``: robust deep anomaly detection with meta gradients over a Session (or plain arrays).

Zhang, Cao, VanNostrand, Madden, Rundensteiner, "ELITE: Robust Deep Anomaly Detection with Meta
Gradient", KDD 2021. A Deep SVDD (Ruff et al., ICML 2018) or autoencoder is trained on the unlabeled
pool, which is polluted by anomalies. Every pool item carries a pseudo label, all "normal" at the start;
ELITE's tailored hinge loss minimises the score of items believed normal and pushes items believed
anomalous above a margin ``C`` (the untrained model's mean training loss). The expert's few labels are
the validation set: ALICE (``alice.py``) flips the pseudo labels whose flip lowers the validation loss
after a look-ahead step and weights each item by its meta-gradient's magnitude. With ``alice=False`` the
same loop is the plain unsupervised model (every item normal), the baseline ELITE is measured against.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..lancet._threads import torch_threads
from .alice import alice_step, tailored_loss, validation_loss, validation_weights
from .classical import CLASSICAL, classical_scores
from .inputs import Inputs, arrays_inputs, session_inputs
from .models import build
from .pollution import PollutionEstimate, audit_order, estimate_pollution

BACKBONES = ("svdd", "ae", "conv")
QUERY_RULES = ("score", "meta", "margin", "random")
MODES = ("published", "semi")


class Elite:
    """ELITE over ``session``'s embeddings (or raw images with ``backbone="conv"``).

    ``normal``/``anomaly``: the two class names whose current expert labels form the validation set
    (other classes are ignored). ``epochs``: the epoch limit; ALICE also stops after an epoch in which
    no flip lowered the validation loss (not before ``min_epochs``). ``lr``: Adam's step size, also the
    look-ahead step of the meta-gradient. ``eta_m``: the meta-gradient weight scale eta_M.
    ``hidden``: layer widths of the MLP (the last one is Deep SVDD's representation size).
    ``flip="strong"``: only items whose |meta-gradient| exceeds the batch mean are flip candidates
    (``"all"``: every item whose flip lowers the validation loss to first order). The two are level:
    mean ROC-AUC 0.797 ("strong") vs 0.792 ("all") over the 5 ADBench sets x r_p 0.1/0.3 x seeds 0-1 x
    both backbones (benchmarks/RESULTS.md, ELITE); "strong" flips fewer items per step.
    ``alice=False`` trains the plain unsupervised Deep SVDD / autoencoder (no labels needed).
    ``mode``: ``"published"`` (the paper: the expert labels only validate; the default) or ``"semi"``
    (beyond the paper: the labels also train the model, ALICE validating on cross-fitted held-out folds
    of them, ``folds`` models). Measured, "semi" is *not* better: mean ROC-AUC 0.785 vs 0.800 for the
    published mode over the 5 ADBench sets x r_p 0.1/0.3 x 3 seeds x both backbones, both far below
    the labels-only logistic regression's 0.899 (benchmarks/elite_beyond.py; RESULTS.md, ELITE,
    "Beyond the paper"). It is kept as an option so that the negative result can be reproduced; the
    Clean tab uses the published mode.

    ``backbone="hbos"`` (with ``alice=False`` only): no deep model; a classical detector
(``classical.py``, HBOS) scores the items, the Clean tab's label-free first ranking.

    After ``fit()``: ``scores_`` (N,) higher = more anomalous; ``pseudo_labels_`` (N,) 1 anomalous,
    0 normal (the expert's label for labeled items, -1 for excluded ones not labeled); ``meta_gradients_``
    (N,) each pool item's latest meta-gradient (0 for items not trained on); ``C_``; ``history_``; ``pollution_estimate_``
    (``pollution.PollutionEstimate``) and ``pollution_`` (its point estimate, NaN when not estimable):
    the set's share of anomalies from the expert's labels in the fixed random order ``audit_order_``
    (the "random" query rule), never from labels chosen by score or from the pseudo labels.
    """

    def __init__(self, session: Any = None, backbone: str | torch.nn.Module = "svdd", normal: str = "normal",
                 anomaly: str = "anomaly", *, epochs: int = 30, min_epochs: int = 5, batch_size: int = 128,
                 lr: float = 1e-3, eta_m: float = 1.0, hidden: Sequence[int] = (64, 32), alice: bool = True,
                 flip: str = "strong", weight_decay: float = 1e-6, seed: int = 0,
                 threads: int | None = 1, mode: str = "published", folds: int = 2) -> None:
        self.session = session
        self.backbone = backbone
        self.normal = normal
        self.anomaly = anomaly
        self.epochs = epochs
        self.min_epochs = min_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.eta_m = eta_m
        self.hidden = hidden
        self.alice = alice
        self.flip = flip
        self.weight_decay = weight_decay
        self.seed = seed
        self.threads = threads
        self.mode = mode
        self.folds = folds
        self._arrays: tuple | None = None

    @classmethod
    def from_arrays(cls, X: np.ndarray, labels: Sequence | np.ndarray | None = None,
                    excluded: Sequence[int] | np.ndarray | None = None, **kw: Any) -> Elite:
        """ELITE over plain arrays (scripts, benchmarks): ``X`` (N, d) features, or (N, H, W[, C]) images
        with ``backbone="conv"``; ``labels`` (N,) with 1 = anomalous, 0 = normal, -1 = unlabeled (or the
        ``normal``/``anomaly`` names, None for unlabeled); ``excluded`` item ids kept out of training."""
        self = cls(None, **kw)
        self._arrays = (X, labels, excluded)
        return self

    # -- checks --------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if not isinstance(self.backbone, torch.nn.Module) and self.backbone not in BACKBONES + CLASSICAL:
            raise ValueError(f"backbone must be one of {BACKBONES + CLASSICAL} or a torch module, "
                             f"got {self.backbone!r}")
        if self._classical() and self.alice:
            raise ValueError(f"backbone={self.backbone!r} is a classical detector for the label-free ranking "
                             f"(alice=False); ELITE's ALICE trains a deep model: use one of {BACKBONES}")
        for name in ("epochs", "batch_size", "min_epochs"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (0 if name == "min_epochs" else 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("lr", "eta_m"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        hidden = tuple(self.hidden)
        if not hidden or any(not isinstance(h, (int, np.integer)) or h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive layer widths, got {self.hidden!r}")
        if self.flip not in ("strong", "all"):
            raise ValueError(f"flip must be 'strong' or 'all', got {self.flip!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "semi":
            if not self.alice:
                raise ValueError("mode='semi' is ELITE with ALICE; alice=False trains the unsupervised model")
            if not isinstance(self.folds, (int, np.integer)) or isinstance(self.folds, bool) or self.folds < 2:
                raise ValueError(f"folds must be an int >= 2 (cross-fitted validation), got {self.folds!r}")
        if self.normal == self.anomaly:
            raise ValueError(f"normal and anomaly must be different class names, both are {self.normal!r}")

    def _classical(self) -> bool:
        return isinstance(self.backbone, str) and self.backbone in CLASSICAL

    def _inputs(self) -> Inputs:
        conv = isinstance(self.backbone, str) and self.backbone == "conv"
        if self._arrays is not None:
            X, labels, excluded = self._arrays
            return arrays_inputs(X, labels, excluded, self.normal, self.anomaly, images=conv,
                                 need_labels=self.alice)
        if self.session is None:
            raise ValueError("Elite needs a session (Elite(session)) or arrays (Elite.from_arrays(X, labels))")
        return session_inputs(self.session, self.normal, self.anomaly, images=conv, need_labels=self.alice)

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, callback: Callable[[int, int, dict], Any] | None = None) -> Elite:
        """Train the model (with ALICE unless ``alice=False``) and score every item; returns self.

        ``callback(epoch, epochs, record)`` runs after each epoch (a panel's progress bar; it may raise
        to cancel the fit)."""
        self._check_params()
        t0 = time.perf_counter()
        inp = self._inputs()
        with torch_threads(self.threads):
            self._fit(inp, callback)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _fit(self, inp: Inputs, callback) -> None:
        X = torch.from_numpy(inp.X)
        train = inp.train_ids
        if self._classical():
            scores = classical_scores(inp.X, train, self.backbone)
            y, meta, Cs, hist = np.zeros(len(train)), np.zeros(len(train)), [np.nan], []
            self.model_ = None
            if callback is not None:
                callback(1, 1, {"epoch": 1, "flips": 0, "pseudo_anomalies": 0})
        elif self.mode == "semi":
            scores, y, meta, Cs, hist = self._fit_semi(inp, X, callback)
        else:
            model, y, meta, C, hist = self._train(X, train, inp.val_ids, inp.val_labels, None, None, callback)
            with torch.no_grad():
                scores = self._score(model, X).numpy().astype(np.float64)
            self.model_, Cs = model, [C]
        self.C_ = float(np.mean(Cs))
        self.history_ = hist
        self.n_epochs_ = len(hist)
        n = len(inp.X)
        self.n_items_ = n
        self.scores_ = scores
        self.train_ids_ = train
        self.labeled_ids_ = inp.val_ids
        self.labeled_labels_ = inp.val_labels
        self.excluded_ids_ = inp.excluded
        pseudo = np.full(n, -1, dtype=np.int64)
        pseudo[train] = y.astype(np.int64)
        pseudo[inp.val_ids] = inp.val_labels
        self.pseudo_labels_ = pseudo
        self.meta_gradients_ = np.zeros(n)
        self.meta_gradients_[train] = meta
        self.threshold_ = _threshold(scores, inp.val_ids, inp.val_labels)
        self.audit_order_ = audit_order(n, self.seed)
        codes = np.full(n, -1, dtype=np.int64)
        codes[inp.val_ids] = inp.val_labels
        est = estimate_pollution(codes, inp.excluded, self.audit_order_)
        self.pollution_estimate_: PollutionEstimate = est
        self.pollution_ = est.estimate

    def _fit_semi(self, inp: Inputs, X: torch.Tensor, callback):
        """``mode="semi"`` (beyond the paper): ``folds`` models, each trained on the pool plus the expert
        labels outside its fold (fixed labels, in every mini-batch, as DeepSAD trains on its labels) and
        validated by ALICE on the fold's held-out labels, so the validation loss never sees a label the
        model trains on. Scores: the mean of the models' pool-standardised scores (the out-of-fold model
        alone scores a labeled item); pseudo labels: the models' majority."""
        folds = _stratified_folds(inp.val_labels, int(self.folds), self.seed)
        train, vid, vlab = inp.train_ids, inp.val_ids, inp.val_labels
        z = np.zeros((len(folds), len(inp.X)))
        ys, metas, Cs, hist = [], [], [], []
        for k, hold in enumerate(folds):
            fit = np.setdiff1d(np.arange(len(vid)), hold)
            model, y, meta, C, h = self._train(X, train, vid[hold], vlab[hold], vid[fit], vlab[fit], callback, k)
            with torch.no_grad():
                s = self._score(model, X).numpy().astype(np.float64)
            sd = s[train].std()
            z[k] = (s - s[train].mean()) / (sd if sd > 0 else 1.0)
            ys.append(y), metas.append(meta), Cs.append(C), hist.extend(h)
            self.model_ = model
        scores = z.mean(0)
        for k, hold in enumerate(folds):   # a labeled item is scored by the model that did not train on it
            scores[vid[hold]] = z[k, vid[hold]]
        return scores, (np.mean(ys, 0) > 0.5).astype(np.int64), np.mean(metas, 0), Cs, hist

    def _train(self, X: torch.Tensor, train: np.ndarray, val_ids: np.ndarray, val_labels: np.ndarray,
               fixed_ids: np.ndarray | None, fixed_labels: np.ndarray | None, callback, fold: int | None = None):
        """One ELITE training run: (model, pool pseudo labels, pool meta-gradients, C, history).
        ``fixed_ids``/``fixed_labels``: expert-labeled items trained on with their labels (never flipped),
        appended to every mini-batch (``mode="semi"``); None for the published method."""
        rng = np.random.default_rng(self.seed if fold is None else self.seed + 1000 * (fold + 1))
        xt = X[torch.from_numpy(train)]
        model = build(self.backbone, tuple(X.shape[1:]), tuple(int(h) for h in self.hidden), self.seed)
        model = model.to(X.dtype)
        model.setup(xt)
        with torch.no_grad():
            C = float(self._score(model, xt).mean())  # untrained model, every item pseudo-normal
        xv = X[torch.from_numpy(val_ids)] if len(val_ids) else None
        yv = torch.from_numpy(val_labels.astype(np.float32)).to(X.dtype) if len(val_ids) else None
        y = torch.zeros(len(train), dtype=X.dtype)
        wv = validation_weights(yv) if yv is not None else None
        meta = torch.zeros(len(train), dtype=X.dtype)
        nf = 0 if fixed_ids is None else len(fixed_ids)
        if nf:
            xf = X[torch.from_numpy(fixed_ids)]
            yf = torch.from_numpy(fixed_labels.astype(np.float32)).to(X.dtype)
            frozen = torch.ones(nf, dtype=torch.bool)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        history: list[dict] = []
        bs = int(min(self.batch_size, len(train)))
        for epoch in range(int(self.epochs)):
            perm = torch.from_numpy(rng.permutation(len(train)))
            flips = 0
            for start in range(0, len(train), bs):
                b = perm[start:start + bs]
                xb, yb, fr = xt[b], y[b], None
                if nf:
                    xb, yb = torch.cat([xb, xf]), torch.cat([yb, yf])
                    fr = torch.cat([torch.zeros(len(b), dtype=torch.bool), frozen])
                opt.zero_grad()
                if self.alice:
                    y_new, res, grads = alice_step(model, xb, yb, xv, yv, C, self.lr, self.eta_m,
                                                   strong=self.flip == "strong", wv=wv, frozen=fr)
                    for p, gr in zip((p for p in model.parameters() if p.requires_grad), grads):
                        p.grad = gr
                    y[b] = y_new[: len(b)]
                    meta[b] = res.meta_gradients[: len(b)]
                    flips += len(res.flipped)
                else:
                    tailored_loss(model(xb), yb, C).mean().backward()
                opt.step()
            rec = {"epoch": epoch + 1, "flips": flips, "pseudo_anomalies": int(y.sum())}
            if fold is not None:
                rec["fold"] = fold
            if self.alice:
                with torch.no_grad():
                    rec["val_loss"] = float(validation_loss(self._score(model, xv), yv, C))
            history.append(rec)
            if callback is not None:   # semi: one progress over all folds' epoch limits
                k, nk = (0, 1) if fold is None else (fold, int(self.folds))
                callback(k * int(self.epochs) + epoch + 1, nk * int(self.epochs), rec)
            if self.alice and flips == 0 and epoch + 1 >= self.min_epochs:
                break  # flips no longer lower the validation loss
        return model, y.numpy(), meta.numpy(), C, history

    @staticmethod
    def _score(model, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(x[i:i + 2048]) for i in range(0, len(x), 2048)])

    # -- results -------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "scores_"):
            raise RuntimeError("this Elite is not fitted yet; call fit() first")

    def suspects(self, k: int | None = 20) -> pd.DataFrame:
        """The ``k`` highest-scoring pool items not labeled by the expert and not excluded: DataFrame
        id, score, pseudo_label ("anomaly"/"normal" names), most anomalous first (k=None: all)."""
        self._check_fitted()
        ids = self.train_ids_[np.argsort(-self.scores_[self.train_ids_], kind="stable")]
        if k is not None:
            if not isinstance(k, (int, np.integer)) or k < 0:
                raise ValueError(f"k must be a non-negative int or None, got {k!r}")
            ids = ids[: int(k)]
        names = np.where(self.pseudo_labels_[ids] == 1, str(self.anomaly), str(self.normal))
        return pd.DataFrame({"id": ids.astype(np.int64), "score": self.scores_[ids], "pseudo_label": names})

    def query(self, n: int = 10, rule: str = "score", seed: int | None = None) -> np.ndarray:
        """Which ``n`` unlabeled pool items to ask the expert about next (beyond the paper).

        ``"score"``: the highest-scoring items whose pseudo label is still "normal" (ALICE has not
        committed to them; confirming or refuting a top suspect changes the validation set most where
        the model is least sure). ``"meta"``: the largest |meta-gradient|, i.e. the largest expected
        change of the validation loss if the item's label changed. ``"margin"``: the items whose score is
        nearest the threshold that best separates the expert's labels (uncertainty sampling; falls back
        to "score" without both classes). ``"random"``: the baseline, the pool in the fixed ``audit_order_``
        (``seed`` given: that seed's order), so the labels it collects are the random sample the
        pollution estimate uses."""
        self._check_fitted()
        if rule not in QUERY_RULES:
            raise ValueError(f"unknown query rule {rule!r}; use one of {QUERY_RULES}")
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        pool = self.train_ids_
        if rule == "random":   # the fixed audit order (pollution.py), so labels in it form a random sample
            order = self.audit_order_ if seed is None else audit_order(self.n_items_, seed)
            return order[np.isin(order, pool)][: int(n)].astype(np.int64)
        if rule == "meta":
            order = np.argsort(-np.abs(self.meta_gradients_[pool]), kind="stable")
            return pool[order][: int(n)].astype(np.int64)
        if rule == "margin" and np.isfinite(self.threshold_):
            order = np.argsort(np.abs(self.scores_[pool] - self.threshold_), kind="stable")
            return pool[order][: int(n)].astype(np.int64)
        normal = pool[self.pseudo_labels_[pool] == 0]
        flipped = pool[self.pseudo_labels_[pool] == 1]
        ranked = [normal[np.argsort(-self.scores_[normal], kind="stable")],
                  flipped[np.argsort(self.scores_[flipped], kind="stable")]]  # then the least sure flips
        return np.concatenate(ranked)[: int(n)].astype(np.int64)


def _stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint folds of positions into ``labels``, each holding >= 1 item of both classes (so
    each fold can validate, and the rest can train); a clear error when a class has fewer than ``k``."""
    counts = {c: int((labels == c).sum()) for c in (0, 1)}
    if min(counts.values()) < k:
        raise ValueError(f"mode='semi' cross-fits over folds={k} folds and needs at least {k} expert labels "
                         f"of each class; there are {counts[0]} normal and {counts[1]} anomalous: label more "
                         "items or use mode='published'")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for c in (0, 1):
        for i, pos in enumerate(rng.permutation(np.flatnonzero(labels == c))):
            folds[i % k].append(int(pos))
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


def _threshold(scores: np.ndarray, val_ids: np.ndarray, val_labels: np.ndarray) -> float:
    """The threshold on the score that best separates the expert's normal from anomalous items
    (balanced accuracy; midpoint between neighbouring labeled scores; the highest such threshold on
    ties), used by the "margin" query rule. NaN without both classes. Not a pollution estimate: the
    share of the pool above it is biased by how the labeled items were chosen (see pollution.py)."""
    if len(val_ids) == 0 or val_labels.min() == val_labels.max():
        return float("nan")
    s = scores[val_ids]
    order = np.argsort(s)
    s, lab = s[order], val_labels[order]
    cuts = np.concatenate([[s[0] - 1.0], (s[1:] + s[:-1]) / 2, [s[-1] + 1.0]])
    n_a, n_n = lab.sum(), (1 - lab).sum()
    best, t_best = -1.0, cuts[0]
    for t in cuts:
        bacc = 0.5 * ((lab[s > t] == 1).sum() / n_a + (lab[s <= t] == 0).sum() / n_n)
        if bacc >= best:   # ties: the highest threshold
            best, t_best = bacc, t
    return float(t_best)
