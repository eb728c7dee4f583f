"""Ray executor (issue 18, past one machine): embedding, kNN graph/table and MetaStore gradient collection
on a real local Ray cluster (2 CPUs, started once for this module and stopped) give the results of the
in-process path: exact for integer outputs, <= 1e-6 relative for floats."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn

from dcai_widgets.data.items import VectorItems
from dcai_widgets.distributed import (
    LocalExecutor,
    MappedRows,
    RayExecutor,
    embed_rows,
    encode_items,
    get_executor,
    is_local,
)
from dcai_widgets.embed.encoders import CallableEncoder
from dcai_widgets.neighbors import NeighborIndex


def assert_rel_close(got: np.ndarray, want: np.ndarray, rel: float = 1e-6) -> None:
    """Every entry within ``rel`` of the reference's largest magnitude (floats may differ by rounding)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = max(float(np.abs(want).max()), 1e-30)
    assert float(np.abs(got.astype(np.float64) - want).max()) <= rel * scale


@pytest.fixture(scope="module")
def ray_ex():
    """One local Ray cluster for the module: 2 CPUs, a small object store, no dashboard; stopped after."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ex = RayExecutor(workers=2, init={"num_cpus": 2, "object_store_memory": 200 * 2**20})
    try:
        n = ex.n_workers()              # starts the cluster (3 attempts)
    except Exception as e:              # Ray 2.60's raylet gives its agents a fixed 15 s to start
        if "timed out during startup" not in str(e):
            raise
        import os

        pytest.skip(f"Ray could not start a local node here: its agents took over 15 s to start, 3 times "
                    f"(load average {os.getloadavg()[0]:.0f} on {os.cpu_count()} CPUs)")
    assert n == 2
    assert ex._started
    yield ex
    ex.close()
    assert not ray.is_initialized()


def _mlp(d_in: int, d_out: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 64), nn.ReLU(), nn.Linear(64, d_out))


def test_ray_is_imported_only_when_asked():
    code = ("import sys, numpy as np\n"
            "from torch import nn\n"
            "from dcai_widgets.embed.encoders import CallableEncoder\n"
            "from dcai_widgets.data.items import VectorItems\n"
            "from dcai_widgets.neighbors import NeighborIndex\n"
            "import dcai_widgets.distributed\n"
            "X = np.random.default_rng(0).normal(size=(50, 4)).astype('float32')\n"
            "CallableEncoder(nn.Linear(4, 3)).encode(VectorItems(X))\n"
            "NeighborIndex().fit(X).knn_graph(5)\n"
            "assert 'ray' not in sys.modules, 'ray imported on the local path'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_get_executor_names_and_errors():
    assert isinstance(get_executor(None), LocalExecutor) and is_local("local") and is_local(None)
    ex = get_executor("ray://head:10001")
    assert isinstance(ex, RayExecutor) and ex.address == "ray://head:10001" and not is_local(ex)
    assert get_executor(ex) is ex
    with pytest.raises(ValueError, match="unknown executor 'spark'"):
        get_executor("spark")
    with pytest.raises(TypeError, match="executor must be"):
        get_executor(3)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        RayExecutor(workers=0)


def test_local_executor_chunks_equal_encoder():
    """Chunked encoding (tasks of whole batches) is the encoder's own batch loop, bit for bit."""
    X = np.random.default_rng(1).normal(size=(1000, 8)).astype(np.float32)
    enc = CallableEncoder(_mlp(8, 5), batch_size=64)
    want = enc.encode(VectorItems(X))
    got = encode_items(enc, VectorItems(X), executor="local", chunk_rows=100)   # rounded to 64
    np.testing.assert_array_equal(got, want)


def test_memmap_rows_travel_by_path(tmp_path):
    X = np.lib.format.open_memmap(tmp_path / "rows.npy", mode="w+", dtype=np.float32, shape=(40, 6))
    X[:] = np.arange(240, dtype=np.float32).reshape(40, 6)
    X.flush()
    R = np.load(tmp_path / "rows.npy", mmap_mode="r")
    proxy = MappedRows.of(R[10:])
    import pickle

    wire = pickle.dumps(proxy)
    assert len(wire) < 400                               # the path, not 40 x 6 floats
    back = pickle.loads(wire)
    np.testing.assert_array_equal(back[0:30], np.asarray(R[10:]))
    assert MappedRows.of(np.zeros((3, 2))) is None


def test_embedding_on_ray_equals_in_process(ray_ex, tmp_path):
    """Rows in a memory-mapped file (sent by path), several chunks on two actors holding the model (the
    encoder's own executor= routing is checked with a recording executor below)."""
    X = np.random.default_rng(0).normal(size=(3000, 32)).astype(np.float32)
    M = np.lib.format.open_memmap(tmp_path / "rows.npy", mode="w+", dtype=np.float32, shape=X.shape)
    M[:] = X
    M.flush()
    rows = np.load(tmp_path / "rows.npy", mmap_mode="r")
    model = _mlp(32, 16)
    want = CallableEncoder(model, batch_size=128).encode(VectorItems(X))
    enc = CallableEncoder(model, batch_size=128, executor=ray_ex)
    got = encode_items(enc, VectorItems(rows), executor=ray_ex, chunk_rows=700)   # 5 chunks of 640 rows
    assert_rel_close(got, want)


def test_embed_rows_fills_a_memmapped_out(tmp_path):
    X = np.random.default_rng(6).normal(size=(500, 8)).astype(np.float32)
    model = _mlp(8, 4)
    out = np.lib.format.open_memmap(tmp_path / "emb.npy", mode="w+", dtype=np.float32, shape=(500, 4))
    ex = _Recording()
    got = embed_rows(model, X, executor=ex, batch_size=64, out=out, chunk_rows=128)
    assert got is out and ex.calls == ["_EncodeWorker"]
    np.testing.assert_array_equal(np.asarray(got), CallableEncoder(model, batch_size=64).encode(VectorItems(X)))
    with pytest.raises(ValueError, match="out has shape"):
        embed_rows(model, X, executor=ex, batch_size=64, out=np.empty((500, 3), np.float32))


def test_knn_graph_and_table_on_ray_equal_in_process(ray_ex):
    """An approximate (IVF) cosine index: each actor gets a copy of the trained index, same settings."""
    rng = np.random.default_rng(2)
    X = (rng.normal(size=(8, 16))[rng.integers(0, 8, 2500)] + 0.5 * rng.normal(size=(2500, 16))).astype(np.float32)
    ni = NeighborIndex(kind="ivf", nlist=16, nprobe=3, metric="cosine").fit(X)
    ids, dist = ni.knn_graph(10)
    ids_r, dist_r = ni.knn_graph(10, executor=ray_ex)
    np.testing.assert_array_equal(ids_r, ids)
    assert_rel_close(dist_r, dist)
    table = ni.knn_table(7, batch=600)                       # 5 blocks
    np.testing.assert_array_equal(ni.knn_table(7, batch=600, executor=ray_ex), table)


def test_metastore_collect_on_ray_equals_in_process(ray_ex, tmp_path):
    from dcai_widgets.metastore import MetaStore

    torch.manual_seed(3)
    imgs = torch.randn(300, 1, 8, 8)
    y = torch.randint(0, 3, (300,))
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    loss = nn.CrossEntropyLoss()
    local = MetaStore(model, ["0", "3"], path=tmp_path / "local").collect((imgs, y), loss, "c0", batch_size=64,
                                                                           progress=False)
    dist = MetaStore(model, ["0", "3"], path=tmp_path / "ray")
    # a crash left the first 100 items stored: the Ray collect fills in exactly the rest
    dist.collect((imgs[:100], y[:100]), loss, "c0", batch_size=64, progress=False)
    dist.collect((imgs, y), loss, "c0", batch_size=64, progress=False, executor=ray_ex)
    modes = dict(zip(local.storage_report()["layer"], local.storage_report()["mode"]))
    assert set(modes.values()) == {"full", "factors"}        # both storage modes went through the workers
    np.testing.assert_array_equal(dist.stored_ids("c0"), local.stored_ids("c0"))
    np.testing.assert_array_equal(dist.labels().to_numpy(), local.labels().to_numpy())
    assert_rel_close(dist.self_influence(), local.self_influence())
    test_x, test_y = torch.randn(5, 1, 8, 8), torch.randint(0, 3, (5,))
    assert_rel_close(dist.p2p(None, test_x, test_y), local.p2p(None, test_x, test_y))
    with pytest.raises(ValueError, match="DataLoader"):
        from torch.utils.data import DataLoader, TensorDataset

        loader = DataLoader(TensorDataset(imgs, y), batch_size=32, shuffle=True)
        MetaStore(model, ["3"], path=tmp_path / "dl").collect(loader, loss, "c0", executor=ray_ex)


class _Recording:
    """An Executor that runs here but is not the local path: shows what a caller hands to its executor."""

    name = "recording"

    def __init__(self):
        self.calls: list[str] = []
        self.inner = LocalExecutor()

    def share(self, obj):
        return self.inner.share(obj)

    def map(self, make, args, tasks):
        self.calls.append(make.__name__)
        return self.inner.map(make, args, tasks)


def test_session_executor_routes_embedding_and_knn(tmp_path):
    """Session(executor=...) runs the encoder's batches and the kNN table on that executor, same results."""
    from dcai_widgets.session import Session

    X = np.random.default_rng(4).normal(size=(600, 8)).astype(np.float32)
    model = _mlp(8, 4)
    ex = _Recording()
    s = Session(VectorItems(X), ["a", "b"], encoder=model, executor=ex, cache_dir=tmp_path / "a",
                warn_temp_store=False)
    ref = Session(VectorItems(X), ["a", "b"], encoder=model, cache_dir=tmp_path / "b", warn_temp_store=False)
    np.testing.assert_array_equal(s.embeddings, ref.embeddings)
    np.testing.assert_array_equal(s.knn_table(5), ref.knn_table(5))
    assert ex.calls == ["_EncodeWorker", "_SearchWorker"]
    assert ref.encoder.executor is None and s.encoder.executor is ex


def test_memmapped_session_embeddings_on_executor(tmp_path, monkeypatch):
    """From EMBED_MEMMAP_ROWS items up the Session writes the embeddings in chunks to a memory-mapped file;
    with an executor the chunks come from its workers (RangeFeed) and the file holds the same rows."""
    import dcai_widgets.session as session_mod
    from dcai_widgets.distributed import RangeFeed
    from dcai_widgets.embed.memmap import write_embeddings

    monkeypatch.setattr(session_mod, "EMBED_MEMMAP_ROWS", 100)
    X = np.random.default_rng(5).normal(size=(700, 8)).astype(np.float32)
    model = _mlp(8, 4)
    ex = _Recording()
    s = session_mod.Session(VectorItems(X), ["a", "b"], encoder=CallableEncoder(model, batch_size=64),
                            executor=ex, cache_dir=tmp_path / "a", warn_temp_store=False)
    ref = session_mod.Session(VectorItems(X), ["a", "b"], encoder=CallableEncoder(model, batch_size=64),
                              cache_dir=tmp_path / "b", warn_temp_store=False)
    assert isinstance(s.embeddings, np.memmap) and ex.calls == ["_EncodeWorker"]
    np.testing.assert_array_equal(s.embeddings, ref.embeddings)
    # chunks of 300 rows (not a multiple of the batch): each chunk's batches start at its first row
    enc = CallableEncoder(model, batch_size=64)
    got = write_embeddings(RangeFeed(enc, VectorItems(X), _Recording(), chunk=300), 700, tmp_path / "e.npy",
                           chunk=300, progress=False)
    want = write_embeddings(lambda lo, hi: enc.encode_range(VectorItems(X), lo, hi), 700, tmp_path / "f.npy",
                            chunk=300, progress=False)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="use chunk=300"):
        RangeFeed(enc, VectorItems(X), _Recording(), chunk=300)(0, 200)
