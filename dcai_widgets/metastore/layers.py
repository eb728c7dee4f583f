"""Which layers MetaStore can factor, and how their per-sample gradients split into prefix x suffix.

A supported layer is a set of linear *sub-layers* applied at one or more positions: for each sample,
``grad W = sum_t g_t x_t^T`` where ``x_t`` (the suffix) is the sub-layer input at position ``t`` (with a
trailing 1 when there is a bias, so the bias gradient is the last column) and ``g_t`` (the prefix) is
dC/dy at that position. Linear: positions are any middle dims (tokens). Conv2d: positions are the
output pixels and ``x_t`` is the unfolded patch (one linear sub-layer per kernel offset, stacked).
MultiheadAttention: four sub-layers q, k, v, out over the token positions.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerSpec", "SubLayer", "mha_forward", "n_positions", "per_sample_grad", "resolve_layers",
           "sublayer_params", "to_factors"]

SUPPORTED = (nn.Linear, nn.Conv2d, nn.MultiheadAttention)


@dataclass
class SubLayer:
    """One linear map y = W x (+ b) whose per-sample gradient MetaStore stores as factors."""

    name: str          # "fc1", "conv3", "attn.q"
    module: str        # dotted path of the owning module
    kind: str          # "linear" | "conv2d" | "mha"
    in_features: int   # input width without the bias 1
    out_features: int
    bias: bool

    @property
    def a(self) -> int:
        """Suffix width (input width plus the bias column)."""
        return self.in_features + int(self.bias)

    @property
    def b(self) -> int:
        """Prefix width (output width)."""
        return self.out_features

    @property
    def full_size(self) -> int:
        """Number of parameters (weight + bias) = size of one full per-sample gradient."""
        return self.a * self.b


@dataclass
class LayerSpec:
    """A user-named layer and its sub-layers."""

    name: str
    kind: str
    module: nn.Module = field(repr=False)
    sublayers: list[SubLayer]


def _conv_padding(m: nn.Conv2d) -> tuple[int, int]:
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0, 0)
        pads = []
        for k, d in zip(m.kernel_size, m.dilation):
            total = d * (k - 1)
            if total % 2:
                raise ValueError(f"Conv2d padding='same' with even kernel {m.kernel_size} is asymmetric; "
                                 "MetaStore supports symmetric padding only (use an odd kernel or int padding)")
            pads.append(total // 2)
        return tuple(pads)  # type: ignore[return-value]
    return tuple(m.padding)  # type: ignore[return-value]


def resolve_layers(model: nn.Module, names: list[str] | tuple[str, ...]) -> list[LayerSpec]:
    """Look up each named layer in ``model`` and describe its sub-layers; clear errors otherwise."""
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("layers is empty: name at least one nn.Linear, nn.Conv2d or nn.MultiheadAttention "
                         "module, e.g. layers=['fc2']")
    modules = dict(model.named_modules())
    specs = []
    for name in names:
        if name not in modules or name == "":
            close = [n for n in modules if n and (name.split(".")[-1] in n)]
            supported = [n for n, m in modules.items() if isinstance(m, SUPPORTED)]
            raise ValueError(f"layer {name!r} does not exist in {type(model).__name__}; "
                             f"supported layers there: {supported}" + (f" (did you mean {close[:3]}?)" if close else ""))
        m = modules[name]
        if isinstance(m, nn.Linear):
            subs = [SubLayer(name, name, "linear", m.in_features, m.out_features, m.bias is not None)]
            kind = "linear"
        elif isinstance(m, nn.Conv2d):
            if m.groups != 1:
                raise ValueError(f"layer {name!r}: Conv2d with groups={m.groups} is not supported (groups=1 only)")
            if m.padding_mode != "zeros":
                raise ValueError(f"layer {name!r}: Conv2d padding_mode={m.padding_mode!r} is not supported "
                                 "(zeros only)")
            _conv_padding(m)
            kh, kw = m.kernel_size
            subs = [SubLayer(name, name, "conv2d", m.in_channels * kh * kw, m.out_channels, m.bias is not None)]
            kind = "conv2d"
        elif isinstance(m, nn.MultiheadAttention):
            if m.bias_k is not None or m.add_zero_attn:
                raise ValueError(f"layer {name!r}: MultiheadAttention with add_bias_kv/add_zero_attn is not "
                                 "supported")
            E = m.embed_dim
            has_b = m.in_proj_bias is not None
            subs = [SubLayer(f"{name}.q", name, "mha", E, E, has_b),
                    SubLayer(f"{name}.k", name, "mha", m.kdim, E, has_b),
                    SubLayer(f"{name}.v", name, "mha", m.vdim, E, has_b),
                    SubLayer(f"{name}.out", name, "mha", E, E, m.out_proj.bias is not None)]
            kind = "mha"
        else:
            raise ValueError(f"layer {name!r} is a {type(m).__name__}, which MetaStore cannot factor; "
                             "use nn.Linear, nn.Conv2d or nn.MultiheadAttention layers (or a child of this one)")
        specs.append(LayerSpec(name, kind, m, subs))
    return specs


def _batch_first(spec: LayerSpec, x: torch.Tensor, g: torch.Tensor,
                 batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear sub-layer's input and output gradient as (B, positions, features), batch checked first."""
    if x.shape[0] != batch or g.shape[0] != batch:
        raise ValueError(f"layer {spec.name!r}: expected the batch dimension first (batch={batch}), got input "
                         f"{tuple(x.shape)}; MetaStore needs batch-first layers")
    return x.reshape(batch, -1, x.shape[-1]), g.reshape(batch, -1, g.shape[-1])


def to_factors(spec: LayerSpec, sub: SubLayer, x: torch.Tensor, g: torch.Tensor,
               batch: int, ones: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn one call's sub-layer input ``x`` and output gradient ``g`` into (suffix (B,T,a), prefix (B,T,b)).

    With ``ones=False`` the bias column is left for the caller to add (saves a copy when storing full).
    """
    if spec.kind == "conv2d":
        m = spec.module
        xu = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=_conv_padding(m), stride=m.stride)
        xs = xu.transpose(1, 2)                                      # (B, L, Cin*kh*kw)
        gs = g.reshape(g.shape[0], g.shape[1], -1).transpose(1, 2)   # (B, L, Cout)
    else:
        xs, gs = _batch_first(spec, x, g, batch)
    if sub.bias and ones:
        xs = append_ones(xs)
    return xs, gs


GROUPED_MIN_CHANNELS = 8   # per-sample conv gradients via the grouped weight-gradient kernel from this many inputs


def _conv_grad_bmm(m: nn.Conv2d, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(B, Cout, Cin*kh*kw) per-sample weight gradients: strided patch view, one copy, one batched matmul."""
    (kh, kw), (sh, sw), (dh, dw) = m.kernel_size, m.stride, m.dilation
    ph, pw = _conv_padding(m)
    B, C = x.shape[0], x.shape[1]
    Co, Ho, Wo = g.shape[1], g.shape[2], g.shape[3]
    xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    sB, sC, sH, sW = xp.stride()        # any memory layout (contiguous, channels-last, a view)
    patches = xp.as_strided((B, C, kh, kw, Ho, Wo), (sB, sC, dh * sH, dw * sW, sh * sH, sw * sW),
                            xp.storage_offset())
    return torch.bmm(g.reshape(B, Co, Ho * Wo), patches.reshape(B, C * kh * kw, Ho * Wo).transpose(1, 2))


def _conv_grad_grouped(m: nn.Conv2d, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(B, Cout, Cin*kh*kw) per-sample weight gradients: the conv weight-gradient kernel with the batch as groups."""
    B, C, H, W = x.shape
    Co, Ho, Wo = g.shape[1], g.shape[2], g.shape[3]
    kh, kw = m.kernel_size
    wshape = x.new_empty(1).expand(B * Co, C, kh, kw)   # only its shape is read
    gw = torch.ops.aten.convolution_backward(
        g.reshape(1, B * Co, Ho, Wo), x.reshape(1, B * C, H, W), wshape, None, list(m.stride),
        list(_conv_padding(m)), list(m.dilation), False, [0, 0], B, [False, True, False])[1]
    return gw.reshape(B, Co, C * kh * kw)


def n_positions(spec: LayerSpec, x: torch.Tensor, g: torch.Tensor, batch: int) -> int:
    """Positions T of one call (output pixels for conv, tokens for linear/attention), without unfolding."""
    if spec.kind == "conv2d":
        return int(g[0, 0].numel())
    return int(g.numel() // (batch * g.shape[-1])) if batch else 0


def per_sample_grad(spec: LayerSpec, sub: SubLayer, x: torch.Tensor, g: torch.Tensor, batch: int) -> torch.Tensor:
    """Full per-sample gradients (B, b, a) of one call (bias gradient as the last column), computed directly.

    Conv2d, two exact ways, whichever was faster for the layer shape (measured on a 1-thread CPU): with 8 or
    more input channels, the convolution's own weight-gradient kernel run once with the batch as groups
    (sample i's input and dC/dy form group i, so group i's weight gradient is sample i's); with fewer, the
    patches read through a strided view of the padded input (one copy into GEMM layout) and one batched
    matmul ``grad W_i = sum_t g_it patch_it^T``. Both replace ``F.unfold`` (im2col), the slowest part of
    recording conv layers before. Linear/attention: one batched matmul over positions.
    """
    if spec.kind == "conv2d":
        m = spec.module
        if x.shape[1] >= GROUPED_MIN_CHANNELS:
            w = _conv_grad_grouped(m, x, g)
        else:
            w = _conv_grad_bmm(m, x, g)
        bias = g.sum((2, 3)) if sub.bias else None
    else:
        xs, gs = _batch_first(spec, x, g, batch)
        w = torch.bmm(gs.transpose(1, 2), xs)                                         # (B, b, a)
        bias = gs.sum(1) if sub.bias else None
    if bias is not None:
        w = torch.cat([w, bias[:, :, None]], 2)
    return w


def append_ones(xs: torch.Tensor) -> torch.Tensor:
    """Append the bias column of ones to a (B, T, a) suffix."""
    return torch.cat([xs, xs.new_ones(xs.shape[:-1] + (1,))], dim=-1)


def sublayer_params(spec: LayerSpec) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """The (weight as (b, a_without_bias), bias) tensors behind each sub-layer (views of the model's params)."""
    m = spec.module
    if spec.kind == "linear":
        return {spec.name: (m.weight, m.bias)}
    if spec.kind == "conv2d":
        return {spec.name: (m.weight.reshape(m.out_channels, -1), m.bias)}
    E = m.embed_dim
    if m._qkv_same_embed_dim:
        wq, wk, wv = m.in_proj_weight[:E], m.in_proj_weight[E:2 * E], m.in_proj_weight[2 * E:]
    else:
        wq, wk, wv = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
    if m.in_proj_bias is not None:
        bq, bk, bv = m.in_proj_bias[:E], m.in_proj_bias[E:2 * E], m.in_proj_bias[2 * E:]
    else:
        bq = bk = bv = None
    n = spec.name
    return {f"{n}.q": (wq, bq), f"{n}.k": (wk, bk), f"{n}.v": (wv, bv), f"{n}.out": (m.out_proj.weight, m.out_proj.bias)}


def mha_forward(m: nn.MultiheadAttention, capture: Callable[[str, torch.Tensor, torch.Tensor], None],
                query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False):
    """nn.MultiheadAttention.forward written with explicit q/k/v/out projections so each can be captured."""
    if not m.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    params = sublayer_params(LayerSpec("_", "mha", m, []))
    (wq, bq), (wk, bk), (wv, bv), (wo, bo) = (params[f"_.{s}"] for s in ("q", "k", "v", "out"))
    q = F.linear(query, wq, bq)
    k = F.linear(key, wk, bk)
    v = F.linear(value, wv, bv)
    capture("q", query, q)
    capture("k", key, k)
    capture("v", value, v)
    B, Tq, E = q.shape
    Tk = k.shape[1]
    H = m.num_heads
    d = E // H
    qh = q.reshape(B, Tq, H, d).transpose(1, 2)
    kh = k.reshape(B, Tk, H, d).transpose(1, 2)
    vh = v.reshape(B, Tk, H, d).transpose(1, 2)
    scores = qh @ kh.transpose(-2, -1) / math.sqrt(d)
    if is_causal and attn_mask is None:
        attn_mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).triu(1)
    if attn_mask is not None:
        if attn_mask.dim() == 3:
            attn_mask = attn_mask.reshape(B, H, Tq, Tk)
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    if key_padding_mask is not None:
        kpm = key_padding_mask.reshape(B, 1, 1, Tk)
        if kpm.dtype == torch.bool:
            scores = scores.masked_fill(kpm, float("-inf"))
        else:
            scores = scores + kpm
    attn = torch.softmax(scores, dim=-1)
    if m.training and m.dropout > 0:
        attn = F.dropout(attn, p=m.dropout)
    o = (attn @ vh).transpose(1, 2).reshape(B, Tq, E)
    out = F.linear(o, wo, bo)
    capture("out", o, out)
    if not m.batch_first:
        out = out.transpose(0, 1)
    weights = None
    if need_weights:
        weights = attn.mean(dim=1) if average_attn_weights else attn
    return out, weights
