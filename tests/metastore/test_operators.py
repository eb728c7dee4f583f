"""Operators on random factors equal the same products on explicitly built full gradients (property test)."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dcai_widgets.metastore import operators as ops
from dcai_widgets.metastore.storage import ShardCache


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 4), T=st.integers(1, 5), Tt=st.integers(1, 5),
       a=st.integers(1, 9), b=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_factor_products_equal_full_products(n, m, T, Tt, a, b, seed):
    g = torch.Generator().manual_seed(seed)
    X, G = torch.randn(n, T, a, generator=g, dtype=torch.float64), torch.randn(n, T, b, generator=g, dtype=torch.float64)
    Xt, Gt = torch.randn(m, Tt, a, generator=g, dtype=torch.float64), torch.randn(m, Tt, b, generator=g, dtype=torch.float64)
    F = ops.full_from_factors(X, G).reshape(n, -1)
    Ft = ops.full_from_factors(Xt, Gt).reshape(m, -1)
    fac = {"x": X.numpy(), "g": G.numpy()}
    full = {"full": F.numpy()}
    bar = ops.mean_grad(Xt, Gt)
    for blk in (fac, full):
        assert torch.allclose(ops.p2p_block(blk, Xt, Gt), F @ Ft.T)
        assert torch.allclose(ops.p2b_block(blk, bar), F @ Ft.mean(0))
        assert torch.allclose(ops.p2b_auto(blk, Xt, Gt, bar), F @ Ft.mean(0))
        assert torch.allclose(ops.self_block(blk), (F * F).sum(1))
        assert torch.allclose(ops.batch_grad_block(blk).reshape(-1), F.sum(0))
    assert torch.allclose(ops.b2p_test(F.mean(0).reshape(b, a), Xt, Gt), Ft @ F.mean(0))
    multi = torch.stack([bar, 2 * bar])
    assert torch.allclose(ops.p2b_block(fac, multi), torch.stack([F @ Ft.mean(0), 2 * F @ Ft.mean(0)], 1))


def test_shard_cache_evicts_least_recently_used():
    c = ShardCache(max_bytes=3 * 800)
    arrs = {k: {"x": np.zeros(100)} for k in "abcd"}   # 800 bytes each
    for k in "abc":
        c.put(k, arrs[k])
    assert c.get("a") is arrs["a"]                      # a is now the most recent
    c.put("d", arrs["d"])                               # evicts b
    assert c.get("b") is None and c.get("c") is not None and c.get("a") is not None
    c.put("huge", {"x": np.zeros(1000)})                # bigger than the cache: not kept
    assert c.get("huge") is None
