"""Train the downstream model on the workbench's labels (``Trainer``), choose its data cheaply with a
proxy (``SelectionViaProxy``, Coleman et al., ICLR 2020) and search sampling schedules (``AutoSampling``,
Sun et al., ICML 2021). PyTorch only; no widget imports."""
from __future__ import annotations

from .data import LabeledData, labeled_data, make_model, model_inputs
from .loop import Sampler, fit_loop, predict_logits
from .samplers import ClassSampler, FixedSampler, LossSampler, UniformSampler
from .autosampling import AutoSampling
from .curves import accuracy_vs_labels
from .svp import SelectionViaProxy, kcenter_greedy, select_labeled, selection_scores, spearman
from .proxy import ProxyClassifier, proxy_estimator
from .trainer import Trainer

__all__ = ["Trainer", "ProxyClassifier", "proxy_estimator", "SelectionViaProxy", "AutoSampling", "selection_scores", "kcenter_greedy", "spearman",
           "accuracy_vs_labels", "select_labeled", "Sampler", "UniformSampler", "ClassSampler", "LossSampler", "FixedSampler",
           "LabeledData", "labeled_data", "model_inputs", "make_model", "fit_loop", "predict_logits"]
