"""The shard manifest is an append-only log (issue 18): it grows by one record per shard instead of being
rewritten whole, a crash mid-append (a cut-off last line) costs only that shard (recollected), and stores
with the former JSON manifest are read and converted."""
from __future__ import annotations

import itertools
import json

import numpy as np
import torch
from torch import nn

from dcai_widgets.metastore import MetaStore
from dcai_widgets.metastore.storage import MANIFEST, OLD_MANIFEST, read_manifest


def _data(n):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 48), nn.Tanh(), nn.Linear(48, 5))
    g = torch.Generator().manual_seed(1)
    return model, torch.randn(n, 20, generator=g), torch.randint(0, 5, (n,), generator=g)


def _log(root):
    return root / "ckpt" / "c0" / "2" / MANIFEST


def _collected(tmp_path, n):
    """A store of ``n`` items' factors in several shards (closed), and its self-influence."""
    model, X, y = _data(n)
    ms = MetaStore(model, ["2"], path=tmp_path / "s", shard_bytes=4000, batch_size=16)
    ms.collect((X, y), nn.CrossEntropyLoss(), "c0", lr=0.5, progress=False)
    want = ms.self_influence()
    ms.close()
    return model, X, y, want, _log(tmp_path / "s")


def test_each_shard_appends_one_record_and_keeps_the_earlier_bytes(tmp_path):
    model, X, y = _data(300)
    ms = MetaStore(model, ["2"], path=tmp_path / "s", shard_bytes=4000, batch_size=16)
    seen = []
    for a in range(0, 300, 50):       # collections that each add shards to the same sub-layer
        ms.collect((X[a:a + 50], y[a:a + 50]), nn.CrossEntropyLoss(), "c0", lr=0.5, ids=np.arange(a, a + 50),
                   progress=False)
        seen.append(_log(tmp_path / "s").read_bytes())
    for before, after in itertools.pairwise(seen):
        assert after.startswith(before) and len(after) > len(before)     # appended, never rewritten
    lines = seen[-1].splitlines()
    m, valid = read_manifest(_log(tmp_path / "s"), "")
    assert valid == len(seen[-1]) and len(m["shards"]) > 6
    assert len(lines) == len(m["shards"]) + 1                            # one mode record + one per shard
    # linear: the log is the shards' records, each about the size of its own ids (not the store's)
    sizes = [len(x) for x in lines[1:]]
    assert max(sizes) < 3 * min(sizes)
    assert sorted(i for sh in m["shards"] for i in sh["ids"]) == list(range(300))


def test_a_cut_off_last_record_costs_only_that_shard(tmp_path):
    model, X, y, want, log = _collected(tmp_path, 200)
    data = log.read_bytes()
    last = data[:-1].rfind(b"\n") + 1
    m_before, _ = read_manifest(log, "")
    lost = m_before["shards"][-1]
    log.write_bytes(data[:last + (len(data) - last) // 2])                # a crash in the middle of the append
    again = MetaStore(model, ["2"], path=tmp_path / "s", shard_bytes=4000, batch_size=16)
    assert log.read_bytes() == data[:last]                                # the torn record is cut off
    assert not (log.parent / lost["file"]).exists()                       # its shard was unlisted: discarded
    assert len(again.stored_ids()) == 200 - len(lost["ids"])
    again.collect((X, y), nn.CrossEntropyLoss(), "c0", lr=0.5, progress=False)
    assert again.stored_ids().tolist() == list(range(200))
    np.testing.assert_allclose(again.self_influence(), want, rtol=1e-5, atol=1e-8)


def test_a_store_with_the_former_json_manifest_is_read_and_converted(tmp_path):
    model, _, _, want, log = _collected(tmp_path, 120)
    m, _ = read_manifest(log, "")
    (log.parent / OLD_MANIFEST).write_text(json.dumps(m))                 # the former format, as it was written
    log.unlink()
    old = MetaStore(model, ["2"], path=tmp_path / "s")
    assert old.stored_ids().tolist() == list(range(120))
    np.testing.assert_allclose(old.self_influence(), want, rtol=1e-6)
    assert log.exists() and not (log.parent / OLD_MANIFEST).exists()
    assert read_manifest(log, "")[0] == m
