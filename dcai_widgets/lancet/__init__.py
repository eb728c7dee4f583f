"""LANCET (Zhang et al., VLDB 2021): learned embedding, label propagation, DMN candidate selection, stop rule."""
from .cfm import cfm_loss
from .dmn import DMN
from .engine import Lancet
from .stop import StopReport, stop_report

__all__ = ["Lancet", "cfm_loss", "DMN", "StopReport", "stop_report"]
