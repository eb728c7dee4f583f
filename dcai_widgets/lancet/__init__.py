"""LANCET (Zhang et al., VLDB 2021): learned embedding, label propagation, DMN candidate selection, stop rule.

`cfm_loss` and `DMN` (torch modules) are imported on first use, so importing the engine does not import
torch: the app's first item does not wait for it (the first fit, in the background, does)."""
from .engine import Lancet
from .stop import StopReport, stop_report

__all__ = ["Lancet", "cfm_loss", "DMN", "StopReport", "stop_report"]


def __getattr__(name: str):
    if name == "cfm_loss":
        from .cfm import cfm_loss

        return cfm_loss
    if name == "DMN":
        from .dmn import DMN

        return DMN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
