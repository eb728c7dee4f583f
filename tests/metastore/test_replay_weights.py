"""Test replay borrows the checkpoint's tensors (no copy) and leaves the live model exactly as it was."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dcai_widgets.metastore import MetaStore

from .helpers import MLP


def _store(tmp_path):
    torch.manual_seed(0)
    model = MLP()
    X, Y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    ms = MetaStore(model, ["fc1", "fc2"], path=tmp_path / "s", batch_size=8)
    ms.collect((X, Y), nn.CrossEntropyLoss(), checkpoint="c1", lr=0.1, progress=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    ms.collect((X, Y), nn.CrossEntropyLoss(), checkpoint="c2", lr=0.1, progress=False)
    return ms, model


def test_borrowed_replay_matches_copying_replay_and_restores_model(tmp_path):
    ms, model = _store(tmp_path)
    Xt, Yt = torch.randn(3, 6), torch.randint(0, 3, (3,))
    ms.close()
    model.train()
    live = {k: v.clone() for k, v in model.state_dict().items()}
    ids_before = {k: id(p) for k, p in model.named_parameters()}
    fresh = MetaStore(model, ["fc1", "fc2"], path=tmp_path / "s")      # weights memory-mapped from disk
    borrowed = fresh.p2p(None, Xt, Yt)
    assert model.training
    assert {k: id(p) for k, p in model.named_parameters()} == ids_before
    for k, v in model.state_dict().items():
        assert torch.equal(v, live[k]), k
    # the copying path (load_state_dict into the model) gives the same scores
    fresh._borrowed = fresh.at
    copied = fresh.p2p(None, Xt, Yt)
    np.testing.assert_array_equal(borrowed, copied)
    # and replay really used the checkpoints' weights, not the live ones
    assert not np.allclose(fresh.p2p(None, Xt, Yt, checkpoint="c1"), fresh.p2p(None, Xt, Yt, checkpoint="c2"))


def test_dtype_mismatch_falls_back_to_copying(tmp_path):
    ms, model = _store(tmp_path)
    Xt, Yt = torch.randn(3, 6), torch.randint(0, 3, (3,))
    ref = ms.p2p(None, Xt, Yt)
    model.double()                       # live model float64, checkpoints float32: load_state_dict casts
    got = ms.p2p(None, Xt.double(), Yt)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7)


def test_prefetched_corrupt_shard_of_next_checkpoint_is_detected(tmp_path):
    """P2P maps + checks the next checkpoint's first shard ahead (reader thread); a same-size corruption there,
    or in a later shard, still fails the query before any score is returned."""
    torch.manual_seed(0)
    model = MLP().double()
    X, Y = torch.randn(40, 6, dtype=torch.float64), torch.randint(0, 3, (40,))
    Xt, Yt = X[:2], Y[:2]
    ms = MetaStore(model, ["fc2"], path=tmp_path / "g", dtype="float64", shard_bytes=1500, batch_size=5)
    for ck in ("c1", "c2"):
        ms.collect((X, Y), nn.CrossEntropyLoss(), ck, lr=0.1, progress=False)
    ms.close()
    shards = sorted((tmp_path / "g" / "ckpt" / "c2" / "fc2").glob("shard-*.bin"))
    assert len(shards) >= 2
    for victim in (shards[0], shards[-1]):
        b = bytearray(victim.read_bytes())
        b[-20] ^= 0xFF
        victim.write_bytes(bytes(b))
        fresh = MetaStore(model, ["fc2"], path=tmp_path / "g", dtype="float64", shard_bytes=1500)
        with pytest.raises(OSError, match="corrupt"):
            fresh.p2p(None, Xt, Yt)
        assert not victim.exists()          # discarded, its items reported missing
        fresh.close()
