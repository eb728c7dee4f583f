"""Capture per-sample suffix/prefix factors with PyTorch hooks, by replay or inside a training loop."""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .layers import LayerSpec, mha_forward, to_factors

__all__ = ["Collector", "per_sample_loss"]


class Collector:
    """Forward hooks on the chosen layers that keep each call's input and output (and later dC/dy).

    ``keep_graph=True`` (replay) keeps the outputs attached so the caller can ask autograd for dC/dy;
    ``keep_graph=False`` (training-loop recording) registers tensor hooks that grab dC/dy when the
    user's own ``loss.backward()`` runs. The model itself is never modified; hooks go away on ``detach``.
    """

    def __init__(self, specs: list[LayerSpec], keep_graph: bool = True):
        self.specs = specs
        self.keep_graph = keep_graph
        self._handles: list[Any] = []
        self._patched: list[nn.Module] = []
        # sub-layer name -> list of [x, out, grad] per call
        self.calls: dict[str, list[list[Any]]] = {s.name: [] for sp in specs for s in sp.sublayers}

    # -- hooks -------------------------------------------------------------------------------
    def _record(self, subname: str, x: torch.Tensor, out: torch.Tensor) -> None:
        if not out.requires_grad or _functorch_wrapped(out):
            return  # under torch.no_grad() or inside a torch.func transform: nothing to attribute
        entry = [x.detach(), out if self.keep_graph else None, None]
        if not self.keep_graph:
            def grab(g, entry=entry):
                entry[2] = g.detach()
            out.register_hook(grab)
        self.calls[subname].append(entry)

    def attach(self) -> Collector:
        """Install the hooks (idempotent)."""
        if self._handles or self._patched:
            return self
        for spec in self.specs:
            if spec.kind in ("linear", "conv2d"):
                name = spec.sublayers[0].name

                def hook(module, args, output, name=name):
                    self._record(name, args[0], output)
                self._handles.append(spec.module.register_forward_hook(hook))
            else:  # MultiheadAttention: route forward through explicit projections
                prefix = spec.name

                def capture(sub, x, out, prefix=prefix):
                    self._record(f"{prefix}.{sub}", x, out)
                spec.module.forward = functools.partial(mha_forward, spec.module, capture)
                self._patched.append(spec.module)
        return self

    def detach(self) -> None:
        """Remove every hook and restore patched forwards."""
        for h in self._handles:
            h.remove()
        self._handles = []
        for m in self._patched:
            if "forward" in m.__dict__:
                del m.forward
        self._patched = []
        self.clear()

    def clear(self) -> None:
        """Forget captured calls."""
        for v in self.calls.values():
            v.clear()

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.detach()

    # -- factors -----------------------------------------------------------------------------
    def outputs(self) -> list[torch.Tensor]:
        """Captured outputs (graph attached) in a fixed order, for autograd.grad."""
        return [e[1] for spec in self.specs for s in spec.sublayers for e in self.calls[s.name]]

    def factors(self, batch: int, grads: list[torch.Tensor] | None = None, scale: float = 1.0,
                ones: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per sub-layer (suffix (B,T,a), prefix (B,T,b)), positions of repeated calls concatenated."""
        if grads is not None:
            it = iter(grads)
            for spec in self.specs:
                for s in spec.sublayers:
                    for e in self.calls[s.name]:
                        e[2] = next(it)
        result = {}
        for spec in self.specs:
            for s in spec.sublayers:
                xs, gs = [], []
                for x, _, g in self.calls[s.name]:
                    if g is None:
                        continue
                    xf, gf = to_factors(spec, s, x, g, batch, ones)
                    xs.append(xf)
                    gs.append(gf * scale if scale != 1.0 else gf)
                if not xs:
                    raise RuntimeError(f"layer {s.name!r} was not reached by a backward pass in this step; "
                                       "is it used by the model's forward, and did loss.backward() run?")
                if len(xs) == 1:
                    result[s.name] = (xs[0].detach(), gs[0].detach())
                else:
                    result[s.name] = (torch.cat(xs, 1).detach(), torch.cat(gs, 1).detach())
        return result


def _functorch_wrapped(t: torch.Tensor) -> bool:
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))
    except AttributeError:  # pragma: no cover - older torch
        return False


def per_sample_loss(loss_fn: Callable) -> Callable:
    """A version of ``loss_fn`` that returns one loss per sample (reduction='none' where it has one)."""
    if isinstance(loss_fn, nn.Module) and hasattr(loss_fn, "reduction"):
        loss_fn = copy.copy(loss_fn)
        loss_fn.reduction = "none"

    def fn(out, y):
        loss = loss_fn(out, y)
        if loss.dim() == 0:
            if out.shape[0] == 1:
                return loss.reshape(1)
            raise ValueError("loss_fn returned a single number for a batch; MetaStore needs one loss per "
                             "sample: pass e.g. nn.CrossEntropyLoss() (its reduction is switched to 'none') "
                             "or a function with reduction='none'")
        if loss.shape[0] != out.shape[0]:
            raise ValueError(f"loss_fn returned shape {tuple(loss.shape)} for a batch of {out.shape[0]}; "
                             "expected one loss per sample (batch dimension first)")
        return loss.reshape(loss.shape[0], -1).sum(1)
    return fn


def replay_factors(model: nn.Module, collector: Collector, x: torch.Tensor, y: torch.Tensor,
                   loss: Callable, ones: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Run the model on one batch and return each sub-layer's per-sample factors (dC_i/dy_i exact)."""
    collector.clear()
    with torch.enable_grad():
        out = model(x)
        losses = loss(out, y)
        outs = collector.outputs()
        if not outs:
            raise RuntimeError("none of the chosen layers took part in the forward pass")
        grads = torch.autograd.grad(losses.sum(), outs, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(o) for g, o in zip(grads, outs)]
    fac = collector.factors(x.shape[0], grads, ones=ones)
    collector.clear()
    return fac
