"""Training-loop recording, crash safety, bad input, storage cost model, analytics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcai_widgets.metastore import MetaStore
from dcai_widgets.metastore.storage import choose_mode

from .helpers import CNN, MLP, param_names, per_sample_grads


def rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.fixture
def data():
    torch.manual_seed(1)
    return torch.randn(40, 6, dtype=torch.float64), torch.randint(0, 3, (40,)), \
        torch.randn(4, 6, dtype=torch.float64), torch.randint(0, 3, (4,))


def test_record_inside_training_loop_is_exact(tmp_path, data):
    X, Y, Xt, Yt = data
    torch.manual_seed(0)
    model = MLP().double()
    ms = MetaStore(model, ["fc1", "fc2"], path=tmp_path / "g", dtype="float64")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    names = param_names(model, ["fc1", "fc2"])
    perm = torch.randperm(40)
    ref = {}
    with ms.record("epoch-1", lr=0.05, loss_fn=nn.CrossEntropyLoss()) as rec:
        for s in range(0, 40, 8):
            ids = perm[s:s + 8]
            ref.update(zip(ids.tolist(), per_sample_grads(model, names, X[ids], Y[ids])))
            loss = F.cross_entropy(model(X[ids]), Y[ids])      # the user's mean-reduced loss
            opt.zero_grad()
            loss.backward()
            rec.step(ids, Y[ids])
            opt.step()
    # each item's stored gradient is the one it was trained with: check via self-influence
    got = ms.self_influence(np.arange(40))
    want = np.array([0.05 * float(ref[i] @ ref[i]) for i in range(40)])
    assert rel(got, want) <= 1e-4
    assert ms.checkpoints == ["epoch-1"]
    assert np.array_equal(ms.labels(np.arange(40)).to_numpy(), Y.numpy().astype(float))
    # hooks are gone afterwards: a plain forward leaves nothing captured
    assert not any(ms.specs[0].module._forward_hooks)


def test_collect_resumes_and_recollects_half_written_shards(tmp_path, data):
    X, Y, Xt, Yt = data
    torch.manual_seed(0)
    model = MLP().double()
    ms = MetaStore(model, ["fc1", "fc2"], path=tmp_path / "g", dtype="float64", shard_bytes=800, batch_size=5)
    ms.collect((X, Y), nn.CrossEntropyLoss(), "c", lr=1.0, progress=False)
    want = ms.p2p(None, Xt, Yt)
    sh_dir = tmp_path / "g" / "ckpt" / "c" / "fc1"
    shards = sorted(sh_dir.glob("shard-*.bin"))
    assert len(shards) > 2
    # crash 1: a listed shard truncated; crash 2: a temp file and an unlisted shard left behind
    data_bytes = shards[1].read_bytes()
    shards[1].write_bytes(data_bytes[: len(data_bytes) // 2])
    (sh_dir / "shard-000099.bin.tmp").write_bytes(b"partial")
    (sh_dir / "shard-000098.bin").write_bytes(data_bytes)
    with pytest.warns(UserWarning, match="recollected"):
        ms2 = MetaStore(model, ["fc1", "fc2"], path=tmp_path / "g", dtype="float64", shard_bytes=800)
    assert not (sh_dir / "shard-000099.bin.tmp").exists() and not (sh_dir / "shard-000098.bin").exists()
    missing = np.setdiff1d(np.arange(40), ms2.stored_ids("c"))
    assert 0 < len(missing) < 40
    with pytest.raises(ValueError, match="not stored"):
        ms2.p2p(missing, Xt, Yt)
    ms2.collect((X, Y), nn.CrossEntropyLoss(), "c", lr=1.0, progress=False)
    assert np.array_equal(ms2.stored_ids("c"), np.arange(40))
    assert rel(ms2.p2p(np.arange(40), Xt, Yt), want) <= 1e-12


def test_corrupt_shard_of_right_size_is_never_read(tmp_path, data):
    X, Y, Xt, Yt = data
    model = MLP().double()
    ms = MetaStore(model, ["fc2"], path=tmp_path / "g", dtype="float64", shard_bytes=1500, batch_size=5)
    ms.collect((X, Y), nn.CrossEntropyLoss(), "c", progress=False)
    want = ms.p2b(None, Xt, Yt)
    shard = sorted((tmp_path / "g" / "ckpt" / "c" / "fc2").glob("shard-*.bin"))[0]
    b = bytearray(shard.read_bytes())
    b[-20] ^= 0xFF
    shard.write_bytes(bytes(b))
    ms = MetaStore(model, ["fc2"], path=tmp_path / "g", dtype="float64", shard_bytes=1500)
    with pytest.raises(OSError, match="corrupt"):
        ms.p2b(None, Xt, Yt)
    assert len(ms.stored_ids("c")) < 40
    ms.collect((X, Y), nn.CrossEntropyLoss(), "c", progress=False)
    assert rel(ms.p2b(np.arange(40), Xt, Yt), want) <= 1e-12


def test_bad_input_messages(tmp_path, data):
    X, Y, Xt, Yt = data
    model = MLP().double()
    with pytest.raises(ValueError, match="does not exist.*fc1"):
        MetaStore(model, ["fc3"], path=tmp_path / "a")
    act = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match="BatchNorm1d.*cannot factor"):
        MetaStore(act, ["1"], path=tmp_path / "b")
    with pytest.raises(ValueError, match="groups=2"):
        MetaStore(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), ["0"], path=tmp_path / "c")
    with pytest.raises(TypeError, match="nn.Module"):
        MetaStore("model", ["fc1"])
    ms = MetaStore(model, ["fc1"], path=tmp_path / "g", dtype="float64")
    with pytest.raises(ValueError, match="nothing collected"):
        ms.p2b(None, Xt, Yt)
    ms.collect((X[:10], Y[:10]), nn.CrossEntropyLoss(), "c", progress=False)
    with pytest.raises(ValueError, match="never collected.*'c'"):
        ms.p2b(None, Xt, Yt, checkpoint="epoch-9")
    with pytest.raises(ValueError, match=r"not stored.*\[10, 11"):
        ms.p2b([0, 10, 11], Xt, Yt)
    with pytest.raises(ValueError, match=r"shape \(4, 7\).*\(6,\)"):
        ms.p2b(None, torch.randn(4, 7, dtype=torch.float64), Yt)
    with pytest.raises(ValueError, match="3 labels for 4"):
        ms.p2b(None, Xt, Yt[:3])
    with pytest.raises(ValueError, match="single number"):
        ms.collect((X, Y), lambda o, y: F.cross_entropy(o, y), "d", progress=False)
    with pytest.raises(ValueError, match="different weights"):
        with torch.no_grad():
            model.fc1.weight.add_(1.0)
        ms.collect((X, Y), nn.CrossEntropyLoss(), "c", progress=False)
    with pytest.raises(ValueError, match="checkpoint="):
        ms.collect((X, Y), nn.CrossEntropyLoss(), "epoch 3/x", progress=False)
    with pytest.raises(ValueError, match="different model"):
        MetaStore(CNN().double(), ["fc"], path=tmp_path / "g", dtype="float64")
    with pytest.raises(ValueError, match="float64 factors"):
        MetaStore(model, ["fc1"], path=tmp_path / "g", dtype="float32")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=8, shuffle=True)
    with pytest.raises(ValueError, match="shuffle"):
        ms.collect(loader, nn.CrossEntropyLoss(), "e", progress=False)
    # nothing stored was lost by all of that
    assert np.array_equal(ms.stored_ids("c"), np.arange(10))


def test_dataset_forms_give_same_store(tmp_path, data):
    X, Y, Xt, Yt = data
    model = MLP().double()
    a = MetaStore(model, ["fc2"], path=tmp_path / "a", dtype="float64")
    a.collect((X, Y), nn.CrossEntropyLoss(), "c", progress=False)
    b = MetaStore(model, ["fc2"], path=tmp_path / "b", dtype="float64")
    b.collect(torch.utils.data.TensorDataset(X, Y), nn.CrossEntropyLoss(), "c", progress=False)
    c = MetaStore(model, ["fc2"], path=tmp_path / "c", dtype="float64")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=16)
    c.collect(loader, nn.CrossEntropyLoss(), "c", ids=np.arange(100, 140), progress=False)
    assert rel(b.p2b(None, Xt, Yt), a.p2b(None, Xt, Yt)) <= 1e-12
    assert np.array_equal(c.stored_ids(), np.arange(100, 140))
    assert rel(c.p2b(np.arange(100, 140), Xt, Yt), a.p2b(None, Xt, Yt)) <= 1e-12


def test_cost_model_and_storage_ratio(tmp_path):
    assert choose_mode(1, 1025, 1024) == "factors"
    assert choose_mode(1024, 28, 64) == "full"          # first conv of a VGG on 32x32
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 64))
    ms = MetaStore(model, ["0", "2"], path=tmp_path / "g")
    X, Y = torch.randn(30, 1, 8, 8), torch.randint(0, 64, (30,))
    ms.collect((X, Y), nn.CrossEntropyLoss(), "c", progress=False)
    rep = ms.storage_report().set_index("layer")
    assert rep.loc["0", "mode"] == "full" and rep.loc["2", "mode"] == "factors"
    # linear: full 64*257 floats vs factors 257+64 per item; on-disk ratio near the analytic one
    assert rep.loc["2", "analytic_ratio"] == pytest.approx(64 * 257 / (257 + 64))
    assert 0.8 * rep.loc["2", "analytic_ratio"] < rep.loc["2", "ratio"] <= rep.loc["2", "analytic_ratio"]


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    y = torch.randint(0, 3, (n,), generator=g)
    return centers[y] + torch.randn(n, 4, generator=g), y


def test_suspects_find_flipped_labels_and_suggest_the_true_class(tmp_path):
    X, y = _blobs(300, 0)
    Xv, yv = _blobs(90, 1)
    flip = torch.arange(0, 300, 10)                  # 30 flipped (10%)
    y_noisy = y.clone()
    y_noisy[flip] = (y[flip] + 1) % 3
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
    ms = MetaStore(model, ["0", "2"], path=tmp_path / "g")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for epoch in range(3):
        for _ in range(20):
            opt.zero_grad()
            F.cross_entropy(model(X), y_noisy).backward()
            opt.step()
        ms.collect((X, y_noisy), nn.CrossEntropyLoss(), f"e{epoch}", lr=0.5, progress=False)
    for by in ("class", "batch"):
        sus = ms.suspects(Xv, yv, k=30, by=by)
        assert list(sus.columns) == ["id", "score", "label", "suggested"]
        assert (np.diff(sus["score"]) <= 0).all() and (sus["score"] > 0).all()   # suspicion, most suspect first
        hit = np.isin(sus["id"], flip.numpy())
        assert hit.mean() >= 0.7, by                     # chance is 0.1
        caught = sus[hit]
        assert (caught["suggested"].to_numpy() == y.numpy()[caught["id"].to_numpy()]).mean() >= 0.8
        assert (sus["label"].to_numpy() != sus["suggested"].to_numpy()).all()
    with pytest.raises(ValueError, match="by="):
        ms.suspects(Xv, yv, by="mean")
    named = ms.suspects(Xv, yv, k=5, classes=["a", "b", "c"])
    assert set(named["suggested"]) <= {"a", "b", "c"}
    # proponents of a validation item are mostly of its class, opponents carry other labels
    i = int(torch.nonzero(yv == 1)[0])
    pro = ms.proponents(Xv[i], yv[i], k=10)
    opp = ms.opponents(Xv[i], yv[i], k=10)
    assert (pro["label"] == 1).mean() >= 0.8 and (pro["score"] > 0).all()
    assert (opp["score"] < 0).all() and (np.diff(opp["score"]) >= 0).all()


def test_record_crash_leaves_nothing_registered(tmp_path, data):
    X, Y, Xt, Yt = data
    model = MLP().double()
    ms = MetaStore(model, ["fc2"], path=tmp_path / "g", dtype="float64", loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(RuntimeError, match="boom"), ms.record("e1", lr=0.1) as rec:
        F.cross_entropy(model(X[:8]), Y[:8]).backward()
        rec.step(np.arange(8), Y[:8])
        raise RuntimeError("boom")
    assert ms.checkpoints == []
    ms = MetaStore(model, ["fc2"], path=tmp_path / "g", dtype="float64", loss_fn=nn.CrossEntropyLoss())
    assert ms.checkpoints == []
    with ms.record("e1", lr=0.1, reduction="sum") as rec:       # the same name again starts clean
        F.cross_entropy(model(X[:8]), Y[:8], reduction="sum").backward()
        rec.step(np.arange(8, 16), Y[:8])
    assert np.array_equal(ms.stored_ids("e1"), np.arange(8, 16))
    with pytest.raises(ValueError, match="already collected"):
        ms.record("e1", lr=0.1)


def test_recorded_store_rejects_a_test_batch_the_model_cannot_take(tmp_path, data):
    X, Y, Xt, Yt = data
    model = MLP().double()
    ms = MetaStore(model, ["fc2"], path=tmp_path / "g", dtype="float64")
    with ms.record("e1", lr=0.1, loss_fn=nn.CrossEntropyLoss()) as rec:
        F.cross_entropy(model(X[:8]), Y[:8]).backward()
        rec.step(np.arange(8), Y[:8])
    with pytest.raises(ValueError, match=r"could not run on a test batch of shape \(4, 9\)"):
        ms.p2b(None, torch.randn(4, 9, dtype=torch.float64), Yt)
    assert ms.labels().index.tolist() == list(range(8))


def test_close_finishes_writes_and_reopens(tmp_path, data):
    X, Y, Xt, Yt = data
    model = MLP().double()
    with MetaStore(model, ["fc2"], path=tmp_path / "g", dtype="float64") as ms:
        ms.collect((X, Y), nn.CrossEntropyLoss(), "c", progress=False)
        want = ms.p2b(None, Xt, Yt)
    again = MetaStore(model, ["fc2"], path=tmp_path / "g", dtype="float64")
    assert rel(again.p2b(None, Xt, Yt), want) <= 1e-12
