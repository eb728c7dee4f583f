"""A cheap proxy model for active learning (Selection via Proxy, Coleman et al., ICLR 2020, sec. 3.1).

SVP's active-learning use: the model that scores the unlabeled candidates each round need not be the
expensive target; a smaller model or the same one trained for fewer epochs ranks them nearly as well at a
fraction of the cost. ``ProxyClassifier`` is that proxy as a scikit-learn classifier (``fit(X, y,
sample_weight)``, ``predict_proba``, ``clone``-able) over embedding rows, so SEALS takes it as its
``estimator`` and the Label queue (``UncertaintyQueue(scorer=...)``) as its scorer.
``proxy_estimator(session, "trainer")`` builds the proxy of a model the Train tab stored in
``session.models``: the same architecture (hidden units, learning rate, batch size, seed) trained
``epochs`` epochs, refit on the current labels every round. No widget imports.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from .loop import fit_loop, predict_logits

__all__ = ["ProxyClassifier", "proxy_estimator"]


class ProxyClassifier(ClassifierMixin, BaseEstimator):
    """A linear model (``hidden=0``) or one-hidden-layer MLP on standardized rows, trained ``epochs``
    epochs of Adam; a cheap stand-in for the target model when choosing data.

    Learned: ``classes_``, ``model_``, ``mean_``, ``scale_``, ``n_features_in_``."""

    def __init__(self, hidden: int = 0, epochs: int = 3, lr: float = 1e-2, batch_size: int = 64,
                 weight_decay: float = 1e-4, random_state: int = 0) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.random_state = random_state

    @classmethod
    def like(cls, trainer: Any, epochs: int = 3) -> ProxyClassifier:
        """The proxy of a ``Trainer``: its MLP's width, learning rate, batch size and seed, ``epochs`` epochs."""
        model = getattr(trainer, "model", None)
        if not (model is None or model == "mlp") or getattr(trainer, "_input_kind", lambda: "embeddings")() != "embeddings":
            raise ValueError("a proxy mirrors a Trainer's MLP on the embeddings (model=None or 'mlp'); for a CNN "
                             "or your own module use ProxyClassifier(...) directly (it scores embeddings)")
        return cls(hidden=int(trainer.hidden), epochs=int(epochs), lr=float(trainer.lr),
                   batch_size=int(trainer.batch_size), random_state=int(trainer.seed))

    def _check(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, (int, np.integer)) or self.hidden < 0:
            raise ValueError(f"hidden={self.hidden!r} must be a non-negative integer (0: linear)")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} must be a positive number")

    def _inputs(self, X: Any) -> torch.Tensor:
        X = np.asarray(X, np.float32)
        if X.ndim != 2:
            raise ValueError(f"X must be (n_samples, n_features), got shape {X.shape}")
        return torch.from_numpy((X - self.mean_) / self.scale_)

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> ProxyClassifier:
        from ..metastore.models import MLP

        self._check()
        X = np.asarray(X, np.float32)
        y = np.asarray(y).reshape(-1)
        if X.ndim != 2 or len(X) != len(y) or len(y) == 0:
            raise ValueError(f"X must be (n, d) with one label per row and n > 0; got {X.shape} and {y.shape}")
        self.classes_, yi = np.unique(y, return_inverse=True)
        self.n_features_in_ = X.shape[1]
        self.mean_ = X.mean(0)
        self.scale_ = X.std(0) + 1e-6
        w = np.ones(len(y), np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
        d, k = X.shape[1], len(self.classes_)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.random_state))
            self.model_ = MLP(d, k, hidden=int(self.hidden)) if self.hidden else torch.nn.Linear(d, k)
        fit_loop(self.model_, self._inputs(X), torch.as_tensor(yi, dtype=torch.int64), torch.from_numpy(w), None,
                 epochs=int(self.epochs), lr=float(self.lr), weight_decay=float(self.weight_decay),
                 batch_size=int(self.batch_size), patience=None, seed=int(self.random_state))
        return self

    def predict_log_proba(self, X: Any) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise RuntimeError("ProxyClassifier is not fitted; call fit() first")
        return torch.log_softmax(predict_logits(self.model_, self._inputs(X)), 1).double().numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_log_proba(X).argmax(1)]


def proxy_estimator(session: Any, scorer: Any, epochs: int = 3) -> Any:
    """A fresh (unfitted) classifier to score candidates with: ``scorer`` is a scikit-learn classifier
    (e.g. a ``ProxyClassifier``; cloned), or a key of ``session.models`` holding one, or holding a
    ``Trainer`` whose proxy (``ProxyClassifier.like``, ``epochs`` epochs) is returned."""
    from sklearn.base import clone

    what = scorer
    if isinstance(scorer, str):
        models = getattr(session, "models", {}) or {}
        if scorer not in models:
            raise ValueError(f"scorer={scorer!r}: session.models has no such model (have {sorted(models) or 'none'}); "
                             "train one in the Train tab or pass a classifier")
        what = models[scorer]
    if hasattr(what, "get_params") and hasattr(what, "predict_proba"):
        return clone(what)
    if hasattr(what, "hidden") and hasattr(what, "lr") and hasattr(what, "fit"):
        return ProxyClassifier.like(what, epochs=epochs)
    raise TypeError(f"scorer {type(what).__name__} is neither a scikit-learn classifier (fit/predict_proba) nor "
                    "a Trainer")
