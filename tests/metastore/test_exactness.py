"""P2P/P2B/B2P/B2B/self-influence from stored factors equal inner products of full per-sample gradients
computed independently with torch.func (vmap + grad), summed over checkpoints with lr weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dcai_widgets.metastore import MetaStore

from .helpers import CNN, MLP, Attn, Encoder, TokenLinear, param_names, per_sample_grads

CASES = {
    "linear": (MLP, (6,), ["fc1", "fc2"]),
    "linear-tokens": (TokenLinear, (4, 6), ["proj", "head"]),
    "conv2d": (CNN, (2, 7, 7), ["conv1", "conv2", "conv3", "fc"]),
    "attention": (lambda: Attn(batch_first=True), (5, 8), ["attn", "head"]),
    "attention-seq-first": (lambda: Attn(batch_first=False), (5, 8), ["attn"]),
    "transformer-layer": (Encoder, (5, 8), ["enc.self_attn", "enc.linear1", "enc.linear2", "head"]),
}
LRS = {"c1": 0.1, "c2": 0.03}


def rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def build(case, storage, tmp_path, dtype="float64", torch_dtype=torch.float64):
    make, shape, layers = CASES[case]
    torch.manual_seed(0)
    model = make().to(torch_dtype)
    X = torch.randn(23, *shape, dtype=torch_dtype)
    Y = torch.randint(0, 3, (23,))
    Xt = torch.randn(5, *shape, dtype=torch_dtype)
    Yt = torch.randint(0, 3, (5,))
    # small shards so queries cross shard boundaries
    ms = MetaStore(model, layers, path=tmp_path / "g", dtype=dtype, storage=storage, shard_bytes=3000,
                   batch_size=7)
    names = param_names(model, layers)
    ref_tr, ref_te = {}, {}
    for ck, lr in LRS.items():
        ms.collect((X, Y), nn.CrossEntropyLoss(), checkpoint=ck, lr=lr, progress=False)
        ref_tr[ck] = per_sample_grads(model, names, X, Y).double()
        ref_te[ck] = per_sample_grads(model, names, Xt, Yt).double()
        with torch.no_grad():  # the next checkpoint has different weights
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return ms, X, Y, Xt, Yt, ref_tr, ref_te


@pytest.mark.filterwarnings("ignore:There is a performance drop")
@pytest.mark.parametrize("storage", ["factors", "full", "auto"])
@pytest.mark.parametrize("case", list(CASES))
def test_operators_match_torch_func(case, storage, tmp_path):
    ms, X, Y, Xt, Yt, tr, te = build(case, storage, tmp_path)
    ids = np.array([3, 0, 22, 7, 11, 15])
    p2p = sum(LRS[c] * tr[c][ids] @ te[c].T for c in LRS).numpy()
    p2b = sum(LRS[c] * tr[c][ids] @ te[c].mean(0) for c in LRS).numpy()
    b2p = sum(LRS[c] * te[c] @ tr[c][ids].mean(0) for c in LRS).numpy()
    b2b = float(sum(LRS[c] * tr[c][ids].mean(0) @ te[c].mean(0) for c in LRS))
    selfi = sum(LRS[c] * (tr[c][ids] ** 2).sum(1) for c in LRS).numpy()
    assert rel(ms.p2p(ids, Xt, Yt), p2p) <= 1e-4
    assert rel(ms.p2b(ids, Xt, Yt), p2b) <= 1e-4
    assert rel(ms.b2p(ids, Xt, Yt), b2p) <= 1e-4
    assert abs(ms.b2b(ids, Xt, Yt) - b2b) <= 1e-4 * abs(b2b)
    assert rel(ms.self_influence(ids), selfi) <= 1e-4
    # one checkpoint alone is that checkpoint's term only
    one = (LRS["c2"] * tr["c2"][ids] @ te["c2"].T).numpy()
    assert rel(ms.p2p(ids, Xt, Yt, checkpoint="c2"), one) <= 1e-4


def test_float32_default_within_1e4(tmp_path):
    ms, X, Y, Xt, Yt, tr, te = build("conv2d", "auto", tmp_path, dtype="float32", torch_dtype=torch.float32)
    p2p = sum(LRS[c] * tr[c] @ te[c].T for c in LRS).numpy()
    assert rel(ms.p2p(None, Xt, Yt), p2p) <= 1e-4


def test_float16_storage_is_close(tmp_path):
    ms, X, Y, Xt, Yt, tr, te = build("linear", "factors", tmp_path, dtype="float16", torch_dtype=torch.float32)
    p2b = sum(LRS[c] * tr[c] @ te[c].mean(0) for c in LRS).numpy()
    assert rel(ms.p2b(None, Xt, Yt), p2b) <= 1e-2
    shards = ms._shard("c1", "fc1")
    assert shards.load_shard(0)["x"].dtype == np.float16


def test_layer_subset_and_sublayer(tmp_path):
    ms, X, Y, Xt, Yt, tr, te = build("attention", "auto", tmp_path)
    # the head alone: its params are the last (8*3 + 3) entries of the reference vector
    n_head = 8 * 3 + 3
    ref = sum(LRS[c] * tr[c][:, -n_head:] @ te[c][:, -n_head:].T for c in LRS).numpy()
    assert rel(ms.p2p(None, Xt, Yt, layers="head"), ref) <= 1e-4
    # the q sub-layer of the attention: rows 0..7 of in_proj_weight and in_proj_bias[0:8]
    E = 8
    w = np.arange(3 * E * E).reshape(3 * E, E)[:E].ravel()
    bq = 3 * E * E + np.arange(E)
    cols = torch.as_tensor(np.concatenate([w, bq]))
    ref_q = sum(LRS[c] * tr[c][:, cols] @ te[c][:, cols].T for c in LRS).numpy()
    assert rel(ms.p2p(None, Xt, Yt, layers="attn.q"), ref_q) <= 1e-4
