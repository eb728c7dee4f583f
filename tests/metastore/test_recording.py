"""Fast recording path: per-sample conv gradients without unfold, the conv weight gradient handed to autograd
from them, shards streamed by a background writer (errors surface, crashes mid-write are detected)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcai_widgets.metastore import MetaStore, layers, shard_writes, storage
from dcai_widgets.metastore.storage import ShardWriter

from .helpers import CNN, MLP, param_names, per_sample_grads

ALL = ["conv1", "conv2", "conv3", "fc"]


def rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _conv_ref(conv: nn.Conv2d, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample (weight | bias) gradients by one autograd pass per sample."""
    out = []
    for i in range(x.shape[0]):
        conv.zero_grad()
        (conv(x[i:i + 1]) * g[i:i + 1]).sum().backward()
        parts = [conv.weight.grad.reshape(conv.out_channels, -1)]
        if conv.bias is not None:
            parts.append(conv.bias.grad[:, None])
        out.append(torch.cat(parts, 1))
    return torch.stack(out)


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("conv,shape", [
    (lambda: nn.Conv2d(2, 3, 3, padding=1), (5, 2, 7, 7)),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, bias=False), (5, 3, 9, 8)),
    (lambda: nn.Conv2d(4, 4, 2, padding=1, dilation=2), (5, 4, 6, 7)),
    (lambda: nn.Conv2d(2, 5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)), (4, 2, 9, 10)),
    (lambda: nn.Conv2d(3, 4, 3, padding="same"), (3, 3, 6, 6)),
])
def test_per_sample_conv_gradient_both_kernels(conv, shape, grouped, monkeypatch):
    monkeypatch.setattr(layers, "GROUPED_MIN_CHANNELS", 1 if grouped else 10**9)
    torch.manual_seed(0)
    conv = conv().double()
    spec = layers.resolve_layers(nn.Sequential(conv), ["0"])[0]
    for channels_last in (False, True):
        x = torch.randn(*shape, dtype=torch.float64)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        g = torch.randn_like(conv(x))
        got = layers.per_sample_grad(spec, spec.sublayers[0], x, g, shape[0])
        assert rel(got, _conv_ref(conv, x, g)) <= 1e-12


@pytest.mark.parametrize("grouped", [True, False])
def test_record_conv_layers_is_exact_and_trains_like_plain(tmp_path, grouped, monkeypatch):
    """All layers of a CNN recorded in the user's loop: stored gradients equal torch.func's, and the model's
    own gradients (conv weight gradients now summed from the per-sample ones) equal a plain twin's."""
    monkeypatch.setattr(layers, "GROUPED_MIN_CHANNELS", 1 if grouped else 10**9)
    torch.manual_seed(0)
    X, Y = torch.randn(24, 2, 7, 7, dtype=torch.float64), torch.randint(0, 3, (24,))
    Xt, Yt = torch.randn(3, 2, 7, 7, dtype=torch.float64), torch.randint(0, 3, (3,))
    model, twin = CNN().double(), CNN().double()
    twin.load_state_dict(model.state_dict())
    ms = MetaStore(model, ALL, path=tmp_path / "g", dtype="float64", loss_fn=nn.CrossEntropyLoss(),
                   shard_bytes=4000)
    opt, opt2 = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    names = param_names(model, ALL)
    ref = {}
    with ms.record("e1", lr=0.1) as rec:
        for s in range(0, 24, 8):
            ids = np.arange(s, s + 8)
            ref.update(zip(ids.tolist(), per_sample_grads(model, names, X[ids], Y[ids])))
            for m, o in ((model, opt), (twin, opt2)):
                o.zero_grad()
                F.cross_entropy(m(X[ids]), Y[ids]).backward()
            for p, q in zip(model.parameters(), twin.parameters()):
                assert rel(p.grad, q.grad) <= 1e-12
            rec.step(ids, Y[ids])
            opt.step()
            opt2.step()
    modes = ms.storage_report().set_index("layer")["mode"]
    assert list(modes[["conv1", "conv2", "conv3"]]) == ["full"] * 3 and modes["fc"] == "factors"
    R = torch.stack([ref[i] for i in range(24)])
    assert rel(ms.self_influence(np.arange(24)), 0.1 * (R ** 2).sum(1).numpy()) <= 1e-10
    te = per_sample_grads(model, names, Xt, Yt)       # test side replays at the recorded (final) weights
    assert rel(ms.p2p(None, Xt, Yt), (0.1 * R @ te.T).numpy()) <= 1e-10
    assert not any(ms.specs[0].module._forward_hooks)


def test_record_frozen_conv_and_no_grad_forward(tmp_path):
    """A conv whose weight does not train is recorded through the plain hooks (its gradient is still the
    per-sample gradient of its parameters); forwards under no_grad capture nothing."""
    torch.manual_seed(0)
    X, Y = torch.randn(16, 2, 7, 7, dtype=torch.float64), torch.randint(0, 3, (16,))
    model = CNN().double()
    for p in model.conv2.parameters():
        p.requires_grad_(False)
    ms = MetaStore(model, ["conv1", "conv2"], path=tmp_path / "g", dtype="float64")
    names = param_names(model, ["conv1", "conv2"])
    with ms.record("e1", lr=1.0, reduction="sum") as rec:
        with torch.no_grad():
            model(X)
        F.cross_entropy(model(X), Y, reduction="sum").backward()
        assert model.conv2.weight.grad is None
        rec.step(np.arange(16), Y)
    for p in model.conv2.parameters():
        p.requires_grad_(True)
    want = per_sample_grads(model, names, X, Y)
    assert rel(ms.self_influence(np.arange(16)), (want ** 2).sum(1).numpy()) <= 1e-10


def test_writer_error_surfaces_and_nothing_is_registered(tmp_path, monkeypatch):
    torch.manual_seed(0)
    X, Y = torch.randn(40, 6, dtype=torch.float64), torch.randint(0, 3, (40,))
    model = MLP().double()
    ms = MetaStore(model, ["fc1", "fc2"], path=tmp_path / "g", dtype="float64", shard_bytes=400)
    real_fsync = storage.os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(storage.os, "fsync", full_disk)
    # a failed background write is raised in the training loop (at a later step's flush) ...
    with pytest.raises(OSError, match="No space left"), ms.record("e1", lr=0.1) as rec:
        for s in range(0, 40, 4):
            F.cross_entropy(model(X[s:s + 4]), Y[s:s + 4]).backward()
            rec.step(np.arange(s, s + 4), Y[s:s + 4])
    assert ms.checkpoints == []
    assert not list((tmp_path / "g").rglob("*.tmp"))       # a failed write removes its temp file
    # ... or, when it is the last shard, by the end of the record block
    with pytest.raises(RuntimeError, match="'e2' failed.*No space left.*not registered"), \
            ms.record("e2", lr=0.1) as rec:
        F.cross_entropy(model(X[:4]), Y[:4]).backward()
        rec.step(np.arange(4), Y[:4])
    assert ms.checkpoints == []
    monkeypatch.setattr(storage.os, "fsync", real_fsync)
    ms = MetaStore(model, ["fc1", "fc2"], path=tmp_path / "g", dtype="float64", shard_bytes=400)
    assert ms.checkpoints == []
    with ms.record("e1", lr=0.1) as rec:           # the disk is back: the same name records cleanly
        for s in range(0, 40, 4):
            F.cross_entropy(model(X[s:s + 4]), Y[s:s + 4]).backward()
            rec.step(np.arange(s, s + 4), Y[s:s + 4])
    assert np.array_equal(ms.stored_ids("e1"), np.arange(40))


def test_crash_mid_shard_write_is_detected_and_recollected(tmp_path, monkeypatch):
    """A shard whose streamed write dies half-way (or before its rename) is never read: on reopening, the
    temp file is discarded, its items are missing, and ``collect`` fills them in."""
    torch.manual_seed(0)
    X, Y = torch.randn(40, 6, dtype=torch.float64), torch.randint(0, 3, (40,))
    Xt, Yt = torch.randn(4, 6, dtype=torch.float64), torch.randint(0, 3, (4,))
    model = MLP().double()
    ref = MetaStore(model, ["fc1", "fc2"], path=tmp_path / "ref", dtype="float64")
    ref.collect((X, Y), nn.CrossEntropyLoss(), "c", progress=False)
    want = ref.p2p(None, Xt, Yt)

    ms = MetaStore(model, ["fc1", "fc2"], path=tmp_path / "g", dtype="float64", shard_bytes=800, batch_size=5)
    calls = {"n": 0}
    real = shard_writes._write_all

    def dies_on_the_third_write(f, data):
        calls["n"] += 1
        if calls["n"] == 3 and len(data) > 16:
            real(f, memoryview(data)[: len(data) // 2])
            raise KeyboardInterrupt("killed")          # as if the process died mid-write
        real(f, data)
    monkeypatch.setattr(shard_writes, "_write_all", dies_on_the_third_write)
    with pytest.raises(KeyboardInterrupt):
        ms.collect((X, Y), nn.CrossEntropyLoss(), "c", progress=False)
    monkeypatch.setattr(shard_writes, "_write_all", real)
    tmps = list((tmp_path / "g" / "ckpt" / "c").rglob("*.tmp"))
    assert tmps, "the interrupted write should have left its temp file behind"
    with pytest.warns(UserWarning, match="recollected"):
        ms2 = MetaStore(model, ["fc1", "fc2"], path=tmp_path / "g", dtype="float64", shard_bytes=800)
    assert not any(p.exists() for p in tmps)
    assert len(ms2.stored_ids("c")) < 40
    ms2.collect((X, Y), nn.CrossEntropyLoss(), "c", progress=False)
    assert np.array_equal(ms2.stored_ids("c"), np.arange(40))
    assert rel(ms2.p2p(None, Xt, Yt), want) <= 1e-12
    assert ms2.verify() == {}


def test_shard_writer_queue_is_bounded():
    w = ShardWriter(max_pending=2)
    gate = threading.Event()
    done = []
    f1 = w.submit(gate.wait)
    f2 = w.submit(gate.wait)
    t = threading.Thread(target=lambda: done.append(w.submit(lambda: "third")))
    t.start()
    t.join(0.2)
    assert t.is_alive() and not done           # the third submit waits for a free slot
    gate.set()
    t.join()
    assert done[0].result() == "third" and f1.result() and f2.result()
    w.shutdown()
