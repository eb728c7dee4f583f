"""Capture per-sample suffix/prefix factors with PyTorch hooks, by replay or inside a training loop."""
from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .layers import LayerSpec, SubLayer, _conv_padding, mha_forward, n_positions, per_sample_grad, to_factors

__all__ = ["Collector", "per_sample_loss", "replay", "replay_factors", "sub_factors", "sub_full"]


class Collector:
    """Forward hooks on the chosen layers that keep each call's input and output (and later dC/dy).

    ``keep_graph=True`` (replay) keeps the outputs attached so the caller can ask autograd for dC/dy;
    ``keep_graph=False`` (training-loop recording) registers tensor hooks that grab dC/dy when the
    user's own ``loss.backward()`` runs. The model itself is never modified; hooks go away on ``detach``.

    ``fuse(sub, T) -> bool`` (recording only) names the Conv2d sub-layers whose full per-sample gradients
    will be stored: their output is routed through ``ConvPerSampleGrad``, whose backward computes the
    per-sample weight gradients once and gives autograd their sum as the weight gradient, so the user's
    ``loss.backward()`` does not also compute that gradient on its own.
    """

    def __init__(self, specs: list[LayerSpec], keep_graph: bool = True,
                 fuse: Callable[[SubLayer, int], bool] | None = None):
        self.specs = specs
        self.keep_graph = keep_graph
        self.fuse = None if keep_graph else fuse
        self._handles: list[Any] = []
        self._patched: list[nn.Module] = []
        # sub-layer name -> list of [x, out, grad, full per-sample grad or None] per call
        self.calls: dict[str, list[list[Any]]] = {s.name: [] for sp in specs for s in sp.sublayers}

    # -- hooks -------------------------------------------------------------------------------
    def _record(self, subname: str, x: torch.Tensor, out: torch.Tensor) -> None:
        if not out.requires_grad or _functorch_wrapped(out):
            return  # under torch.no_grad() or inside a torch.func transform: nothing to attribute
        entry = [x.detach(), out if self.keep_graph else None, None, None]
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

                def hook(module, args, output, name=name, spec=spec):
                    if spec.kind == "conv2d" and self.fuse is not None and _fusable(module, args[0], output):
                        sub = spec.sublayers[0]
                        if self.fuse(sub, int(output[0, 0].numel())):
                            entry = [args[0].detach(), None, None, None]
                            self.calls[name].append(entry)
                            return ConvPerSampleGrad.apply(output.detach(), args[0], module.weight, module.bias,
                                                           spec, sub, entry)
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

    def set_grads(self, grads: list[torch.Tensor]) -> None:
        """Attach dC/dy (in ``outputs()`` order) to the captured calls (replay)."""
        it = iter(grads)
        for spec in self.specs:
            for s in spec.sublayers:
                for e in self.calls[s.name]:
                    e[2] = next(it)

    def raw(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]]:
        """Per sub-layer, the (input, dC/dy, full per-sample gradient if the backward already computed it)
        of each call that a backward pass reached."""
        out = {}
        for spec in self.specs:
            for s in spec.sublayers:
                calls = [(e[0], e[2], e[3]) for e in self.calls[s.name] if e[2] is not None]
                if not calls:
                    raise RuntimeError(f"layer {s.name!r} was not reached by a backward pass in this step; "
                                       "is it used by the model's forward, and did loss.backward() run?")
                out[s.name] = calls
        return out

    def factors(self, batch: int, grads: list[torch.Tensor] | None = None, scale: float = 1.0,
                ones: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per sub-layer (suffix (B,T,a), prefix (B,T,b)), positions of repeated calls concatenated."""
        if grads is not None:
            self.set_grads(grads)
        raw = self.raw()
        return {s.name: sub_factors(spec, s, raw[s.name], batch, scale, ones)
                for spec in self.specs for s in spec.sublayers}


def sub_factors(spec: LayerSpec, sub: SubLayer, calls: list[tuple], batch: int,
                scale: float = 1.0, ones: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(suffix (B,T,a), prefix (B,T,b)) of one sub-layer, positions of repeated calls concatenated."""
    xs, gs = [], []
    for x, g, *_ in calls:
        xf, gf = to_factors(spec, sub, x, g, batch, ones)
        xs.append(xf)
        gs.append(gf * scale if scale != 1.0 else gf)
    if len(xs) == 1:
        return xs[0].detach(), gs[0].detach()
    return torch.cat(xs, 1).detach(), torch.cat(gs, 1).detach()


def sub_full(spec: LayerSpec, sub: SubLayer, calls: list[tuple], batch: int,
             scale: float = 1.0) -> tuple[torch.Tensor, int]:
    """(full per-sample gradients (B, b, a) summed over repeated calls, positions T) of one sub-layer."""
    full, T = None, 0
    for x, g, *pre in calls:
        w = pre[0] if pre and pre[0] is not None else per_sample_grad(spec, sub, x.detach(), g.detach(), batch)
        full = w if full is None else full.add_(w)
        T += n_positions(spec, x, g, batch)
    if scale != 1.0:
        full.mul_(scale)
    return full, T


class ConvPerSampleGrad(torch.autograd.Function):
    """Identity on a Conv2d's output whose backward yields the per-sample weight gradients (kept in ``entry``)
    and hands autograd the input gradient and their sum as the weight/bias gradient.

    Used while recording a conv layer stored as full per-sample gradients: the module's own backward node is
    bypassed, so its weight gradient (the same sum) is not computed twice. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, out, x, weight, bias, spec, sub, entry):
        ctx.save_for_backward(x, weight)
        ctx.spec, ctx.sub, ctx.entry, ctx.has_bias = spec, sub, entry, bias is not None
        return out.view_as(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        m = ctx.spec.module
        gx = None
        if ctx.needs_input_grad[1]:
            gx = torch.ops.aten.convolution_backward(g, x, w, None, list(m.stride), list(_conv_padding(m)),
                                                     list(m.dilation), False, [0, 0], m.groups,
                                                     [True, False, False])[0]
        full = per_sample_grad(ctx.spec, ctx.sub, x, g, x.shape[0])        # (B, Cout, Cin*kh*kw [+1])
        ctx.entry[2], ctx.entry[3] = g.detach(), full
        a0 = w[0].numel()
        gw = full[:, :, :a0].sum(0).reshape(w.shape) if ctx.needs_input_grad[2] else None
        gb = full[:, :, a0].sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return None, gx, gw, gb, None, None, None


def _autocast_on() -> bool:
    try:
        return any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda"))
    except TypeError:  # pragma: no cover - older torch
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def _fusable(m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> bool:
    """May this conv call's weight gradient come from its per-sample gradients? Plain float, eager, leaf
    parameters that train, no autocast, no torch.func transform or compilation."""
    w, b = m.weight, m.bias
    return (out.requires_grad and isinstance(w, nn.Parameter) and w.requires_grad
            and (b is None or (isinstance(b, nn.Parameter) and b.requires_grad))
            and x.dim() == 4 and out.dtype == x.dtype == w.dtype and out.dtype in (torch.float32, torch.float64)
            and not _functorch_wrapped(out) and not _autocast_on() and not torch.compiler.is_compiling())


def _functorch_wrapped(t: torch.Tensor) -> bool:
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))
    except AttributeError:  # pragma: no cover - older torch
        return False


def _takes_reduction(fn: Callable) -> bool:
    """Does the callable accept a ``reduction=`` keyword (as torch.nn.functional losses do)?"""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "reduction" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def per_sample_loss(loss_fn: Callable) -> Callable:
    """A version of ``loss_fn`` that returns one loss per sample.

    A torch.nn loss module gets ``reduction='none'`` (on a copy); a function that takes a ``reduction``
    argument (``F.cross_entropy``, ``F.nll_loss``, ...) is called with ``reduction="none"``; anything else
    must already return one loss per sample, else a clear error is raised at the first batch.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (e.g. nn.CrossEntropyLoss() or F.cross_entropy), "
                        f"got {type(loss_fn).__name__}")
    if isinstance(loss_fn, nn.Module) and hasattr(loss_fn, "reduction"):
        loss_fn = copy.copy(loss_fn)
        loss_fn.reduction = "none"
    elif not isinstance(loss_fn, nn.Module) and _takes_reduction(loss_fn):
        loss_fn = functools.partial(loss_fn, reduction="none")

    def fn(out, y):
        loss = loss_fn(out, y)
        if loss.dim() == 0:
            if out.shape[0] == 1:
                return loss.reshape(1)
            raise ValueError("loss_fn returned a single number for a batch; MetaStore needs one loss per "
                             "sample: pass e.g. nn.CrossEntropyLoss() (its reduction is switched to 'none') "
                             "or F.cross_entropy (called with reduction='none'), or a function returning one loss per sample")
        if loss.shape[0] != out.shape[0]:
            raise ValueError(f"loss_fn returned shape {tuple(loss.shape)} for a batch of {out.shape[0]}; "
                             "expected one loss per sample (batch dimension first)")
        return loss.reshape(loss.shape[0], -1).sum(1)
    return fn


def replay(model: nn.Module, collector: Collector, x: torch.Tensor, y: torch.Tensor, loss: Callable) -> None:
    """Run the model on one batch and leave each call's input and exact per-sample dC_i/dy_i in ``collector``."""
    collector.clear()
    with torch.enable_grad():
        out = model(x)
        losses = loss(out, y)
        outs = collector.outputs()
        if not outs:
            raise RuntimeError("none of the chosen layers took part in the forward pass")
        grads = torch.autograd.grad(losses.sum(), outs, allow_unused=True)
    collector.set_grads([g if g is not None else torch.zeros_like(o) for g, o in zip(grads, outs)])


def replay_factors(model: nn.Module, collector: Collector, x: torch.Tensor, y: torch.Tensor,
                   loss: Callable, ones: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Run the model on one batch and return each sub-layer's per-sample factors (dC_i/dy_i exact)."""
    replay(model, collector, x, y, loss)
    fac = collector.factors(x.shape[0], ones=ones)
    collector.clear()
    return fac
