"""ELITE: robust deep anomaly detection with meta gradients (Zhang et al., KDD 2021) over a Session.

Deep SVDD / autoencoder backbones, ELITE's tailored hinge loss, ALICE's meta-gradient pseudo-label
inference with the expert's labels as the validation set, and query rules for what to ask next.
"""
from .alice import alice_step, meta_gradients, tailored_loss, validation_loss
from .engine import BACKBONES, QUERY_RULES, Elite

__all__ = ["Elite", "BACKBONES", "QUERY_RULES", "alice_step", "meta_gradients", "tailored_loss",
           "validation_loss"]
