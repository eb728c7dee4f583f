"""MetaStore: compact per-sample gradients and exact influence queries (Zhang, WPI 2023, Part III)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import analytics
from .collector import Collector, per_sample_loss, replay, sub_factors, sub_full
from .layers import SubLayer, n_positions, resolve_layers
from .queries import InfluenceQueries, _to_tensor
from .storage import DTYPES, LayerShards, ShardCache, ShardWriter, atomic_write, choose_mode, read_json

__all__ = ["MetaStore", "Recorder"]

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def model_signature(model: nn.Module) -> dict[str, list[int]]:
    """Parameter names and shapes: what makes two models share a store."""
    return {n: list(p.shape) for n, p in model.named_parameters()}


def _sig_hash(sig: dict) -> str:
    return hashlib.sha1(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:16]


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict (to tell two checkpoints' weights apart)."""
    h = hashlib.sha1()
    for k in sorted(state):
        v = state[k]
        if torch.is_tensor(v):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class MetaStore(InfluenceQueries):
    """Per-sample gradients of chosen layers stored as prefix/suffix factors, queried exactly.

    Collect factors by model replay at a checkpoint (``collect``) or inside your own training loop
    (``record``); then ask P2P/P2B/B2P/B2B inner products, summed over checkpoints with learning-rate
    weights (TracIn-CP, Pruthi et al. 2020), proponents/opponents, self-influence and ``suspects``.
    Factors are stored instead of full gradients where smaller (the dissertation's cost model).

    Shards are memory-mapped; ``check_reads=True`` (default) checksums each shard (XXH3-64) at its first
    read in a process, so a corrupted file is never used; ``check_reads=False`` trusts the fsynced,
    atomically renamed shards after the size check at open (faster cold queries) and leaves checksums to
    ``verify()`` / ``verify=True``.

    >>> ms = MetaStore(model, layers=["fc1", "fc2"], path="grads/")
    >>> ms.collect((X, y), nn.CrossEntropyLoss(), checkpoint="epoch-3", lr=0.1)
    >>> ms.p2b(train_ids, test_x, test_y)     # one exact inner product per train id
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], path: str | Path | None = None,
                 dtype: str = "float32", cache_bytes: int = 2 << 30, shard_bytes: int = 16 << 20,
                 batch_size: int = 128, verify: bool = False, loss_fn: Callable | None = None,
                 storage: str = "auto", check_reads: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if storage not in ("auto", "factors", "full"):
            raise ValueError(f"storage={storage!r}: use 'auto' (cost model), 'factors' or 'full'")
        self.storage = storage
        self.check_reads = bool(check_reads)   # checksum each shard at its first read in this process
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; use one of {sorted(DTYPES)}")
        self.model = model
        self.specs = resolve_layers(model, list(layers) if not isinstance(layers, str) else [layers])
        self.layers = [s.name for s in self.specs]
        self.dtype = dtype
        self.loss_fn = loss_fn
        self.on_progress: Callable[[str, int, int | None], None] | None = None  # (checkpoint, done, total)
        self.batch_size = int(batch_size)
        self.shard_bytes = int(shard_bytes)
        self.cache = ShardCache(cache_bytes)
        self._writer = ShardWriter(max_pending=4)   # shards written off the training thread, bounded queue
        self.path = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix="metastore-"))
        self.path.mkdir(parents=True, exist_ok=True)
        self._open_meta()
        self._shards: dict[tuple[str, str], LayerShards] = {}
        self._weights_cache: dict[str, dict[str, torch.Tensor]] = {}
        for ck in self.checkpoints:   # checks sizes, discards half-written shards (warns)
            for s in self.sublayers:
                self._shard(ck, s.name)
        if verify:
            self.verify()

    # -- store metadata ----------------------------------------------------------------------
    def _open_meta(self) -> None:
        sig = model_signature(self.model)
        meta = read_json(self.path / "meta.json", recover=(
            f"delete {self.path / 'meta.json'} and open the store again with the same model (it is rebuilt "
            "from the model; pass the same dtype=) — the checkpoints and factors are kept"))
        if meta is None:
            meta = {"format": 1, "model": type(self.model).__name__, "signature": _sig_hash(sig),
                    "params": sig, "dtype": self.dtype, "sample_shape": None, "layers": []}
        elif meta.get("signature") != _sig_hash(sig):
            old = {(k, tuple(v)) for k, v in meta.get("params", {}).items()}
            new = set((k, tuple(v)) for k, v in sig.items())
            diff = sorted(old ^ new)[:4]
            raise ValueError(f"the store at {self.path} was written for a different model "
                             f"({meta.get('model')}; differing parameters e.g. {diff}); use a new path for this "
                             "model, or delete that directory to start over")
        elif meta.get("dtype") != self.dtype:
            raise ValueError(f"the store at {self.path} holds {meta.get('dtype')} factors but dtype={self.dtype!r} "
                             f"was given; pass dtype={meta.get('dtype')!r} or use a new path")
        meta["layers"] = sorted(set(meta.get("layers", [])) | set(self.layers))
        self.meta = meta
        atomic_write(self.path / "meta.json", json.dumps(meta).encode())
        self.checkpoints_: dict[str, dict] = read_json(self.path / "checkpoints.json", {}, recover=(
            f"delete {self.path / 'checkpoints.json'} and call collect() again for each checkpoint with its "
            "name, weights and lr: factors already under ckpt/<name>/ are reused, only missing items are "
            "replayed"))

    def _save_checkpoints(self) -> None:
        atomic_write(self.path / "checkpoints.json", json.dumps(self.checkpoints_).encode())

    @property
    def sublayers(self) -> list[SubLayer]:
        return [s for spec in self.specs for s in spec.sublayers]

    def _shard(self, ckpt: str, sub: str) -> LayerShards:
        key = (ckpt, sub)
        if key not in self._shards:
            self._shards[key] = LayerShards(self.path / "ckpt" / ckpt / sub, self.cache, self.dtype,
                                            self.shard_bytes, self.storage, writer=self._writer,
                                            check_reads=self.check_reads)
        return self._shards[key]

    def verify(self) -> dict[str, list[str]]:
        """Check every shard's CRC; discard bad ones (their items become missing). Returns what was dropped."""
        bad = {}
        for ck in self.checkpoints_:
            for s in self.sublayers:
                b = self._shard(ck, s.name).verify_all()
                if b:
                    bad[f"{ck}/{s.name}"] = b
        return bad

    # -- checkpoints --------------------------------------------------------------------------
    def _check_ckpt_name(self, checkpoint: str) -> str:
        if not isinstance(checkpoint, str) or not _NAME.match(checkpoint):
            raise ValueError(f"checkpoint={checkpoint!r}: use a short name of letters, digits, '_', '-', '.' "
                             "(e.g. 'epoch-3')")
        return checkpoint

    def add_checkpoint(self, checkpoint: str, lr: float = 1.0, state_dict: dict | None = None,
                       overwrite: bool = False) -> None:
        """Register the model's current weights (or ``state_dict``) as ``checkpoint`` with learning rate ``lr``."""
        self._check_ckpt_name(checkpoint)
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr={lr!r}: the learning rate of a checkpoint must be a positive number")
        state = {k: v.detach().cpu().clone() for k, v in (state_dict or self.model.state_dict()).items()}
        h = weights_hash(state)
        old = self.checkpoints_.get(checkpoint)
        if old is not None and not overwrite:
            if old["weights_hash"] != h:
                raise ValueError(f"checkpoint {checkpoint!r} was collected with different weights; give this "
                                 "one a new name, or pass overwrite=True to replace it")
            if old["lr"] != lr:
                old["lr"] = float(lr)
                self._save_checkpoints()
            return
        if old is not None and overwrite:
            self.drop_checkpoint(checkpoint)
        bio = io.BytesIO()
        torch.save(state, bio)
        atomic_write(self.path / "ckpt" / checkpoint / "weights.pt", bio.getvalue())
        self.checkpoints_[checkpoint] = {"lr": float(lr), "order": len(self.checkpoints_), "weights_hash": h}
        self._save_checkpoints()
        self._weights_cache[checkpoint] = state

    def _drop_shards(self, checkpoint: str) -> None:
        for key in [k for k in self._shards if k[0] == checkpoint]:
            del self._shards[key]
        self.cache.drop(str(self.path / "ckpt" / checkpoint))

    def drop_checkpoint(self, checkpoint: str) -> None:
        """Delete a checkpoint's weights and factors."""
        self.checkpoints_.pop(checkpoint, None)
        self._save_checkpoints()
        for key in [k for k in self._shards if k[0] == checkpoint]:
            del self._shards[key]
        self.cache.drop(str(self.path / "ckpt" / checkpoint))
        self._weights_cache.pop(checkpoint, None)
        shutil.rmtree(self.path / "ckpt" / checkpoint, ignore_errors=True)

    @property
    def checkpoints(self) -> list[str]:
        """Collected checkpoints in the order they were added."""
        return sorted(self.checkpoints_, key=lambda c: self.checkpoints_[c]["order"])

    def _ckpts(self, checkpoint: str | Sequence[str] | None) -> list[str]:
        if not self.checkpoints_:
            raise ValueError("nothing collected yet: call ms.collect(dataset, loss_fn, checkpoint=...) first")
        if checkpoint is None:
            return self.checkpoints
        names = [checkpoint] if isinstance(checkpoint, str) else list(checkpoint)
        for c in names:
            if c not in self.checkpoints_:
                raise ValueError(f"checkpoint {c!r} was never collected; collected checkpoints: {self.checkpoints}")
        return names

    def _subs(self, layers: str | Sequence[str] | None) -> list[SubLayer]:
        if layers is None:
            return self.sublayers
        names = [layers] if isinstance(layers, str) else list(layers)
        out = []
        for n in names:
            hit = [s for s in self.sublayers if s.name == n or s.module == n]
            if not hit:
                raise ValueError(f"layer {n!r} is not in this MetaStore; its layers: {self.layers} "
                                 f"(sub-layers {[s.name for s in self.sublayers]})")
            out += [s for s in hit if s not in out]
        return out

    @contextlib.contextmanager
    def at(self, checkpoint: str) -> Iterator[None]:
        """Temporarily load a checkpoint's weights into the model (eval mode); restore afterwards."""
        if checkpoint not in self._weights_cache:
            self._weights_cache[checkpoint] = torch.load(self.path / "ckpt" / checkpoint / "weights.pt",
                                                         map_location="cpu", weights_only=True, mmap=True)
        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        training = self.model.training
        self.model.load_state_dict(self._weights_cache[checkpoint])
        self.model.eval()
        try:
            yield
        finally:
            self.model.load_state_dict(saved)
            self.model.train(training)

    @contextlib.contextmanager
    def _borrowed(self, checkpoint: str) -> Iterator[None]:
        """Like ``at`` for a read-only replay: the model's parameters and buffers point at the checkpoint's
        (memory-mapped) tensors instead of copying them in, and back afterwards. Saves a clone of the live
        weights and two copies per query (a third of a cold P2P on the 1024x1024 benchmark layer). Falls back
        to ``at`` when a tensor differs in shape, dtype or device (``load_state_dict`` would cast/move it)."""
        if checkpoint not in self._weights_cache:
            self._weights_cache[checkpoint] = torch.load(self.path / "ckpt" / checkpoint / "weights.pt",
                                                         map_location="cpu", weights_only=True, mmap=True)
        state = self._weights_cache[checkpoint]
        named = list(self.model.named_parameters()) + list(self.model.named_buffers())
        if (len(state) != len(self.model.state_dict())
                or not all(n in state and state[n].shape == t.shape and state[n].dtype == t.dtype
                           and state[n].device == t.device for n, t in named)):
            with self.at(checkpoint):
                yield
            return
        saved = [(t, t.data) for _, t in named]
        training = self.model.training
        with torch.no_grad():
            for n, t in named:
                t.data = state[n]
        self.model.eval()
        try:
            yield
        finally:
            for t, d in saved:
                t.data = d
            self.model.train(training)

    # -- collection ---------------------------------------------------------------------------
    def stored_ids(self, checkpoint: str | None = None, layers: Sequence[str] | None = None) -> np.ndarray:
        """Sorted ids stored for every chosen sub-layer of ``checkpoint`` (all checkpoints if None)."""
        ids = None
        for ck in self._ckpts(checkpoint):
            for s in self._subs(layers):
                a = self._shard(ck, s.name).ids
                ids = a if ids is None else np.intersect1d(ids, a)
        return ids if ids is not None else np.zeros(0, np.int64)

    def labels(self, ids: Sequence[int] | None = None) -> pd.Series:
        """The training label stored with each item at collection (NaN when unknown)."""
        s0 = self.sublayers[0]
        vals: dict[int, float] = {}
        for ck in self.checkpoints:
            vals.update(self._shard(ck, s0.name).labels())
        ser = pd.Series(vals, dtype=float).sort_index()
        return ser if ids is None else ser.reindex(np.asarray(ids, np.int64))

    def _sample_shape_check(self, x: torch.Tensor) -> None:
        shape = self.meta.get("sample_shape")
        if shape is None:
            self.meta["sample_shape"] = list(x.shape[1:])
            atomic_write(self.path / "meta.json", json.dumps(self.meta).encode())
        elif list(x.shape[1:]) != shape:
            raise ValueError(f"batch of shape {tuple(x.shape)} does not match the collected samples' shape "
                             f"{tuple(shape)}; pass (m, {', '.join(map(str, shape))})")

    def collect(self, dataset: Any, loss_fn: Callable, checkpoint: str, lr: float = 1.0,
                ids: Sequence[int] | None = None, batch_size: int | None = None, overwrite: bool = False,
                progress: bool = True, executor: Any = None) -> MetaStore:
        """Replay the model (current weights = ``checkpoint``) over ``dataset`` and store every item's factors.

        ``dataset`` yields (x, y) per sample (a torch Dataset, a list, or a tuple ``(X, Y)`` of arrays), or
        is a non-shuffling DataLoader. Items already stored for this checkpoint are skipped, so after a
        crash calling ``collect`` again fills in exactly what is missing.

        ``executor``: None/"local" replays here; "ray", "ray://host:port" or an Executor replays the same
        batches on Ray actors holding a copy of the model and writes their products here, in batch order
        (``dcai_widgets.distributed.metastore``).
        """
        from ..distributed.executor import is_local

        if not is_local(executor):
            from ..distributed.metastore import collect as collect_on

            return collect_on(self, dataset, loss_fn, checkpoint, lr=lr, ids=ids, batch_size=batch_size,
                              overwrite=overwrite, progress=progress, executor=executor)
        self.add_checkpoint(checkpoint, lr, overwrite=overwrite)
        loss = per_sample_loss(loss_fn)
        self._remember_loss(loss_fn)
        subs = self.sublayers
        have = self.stored_ids(checkpoint)      # items stored for every sub-layer are skipped; an item that
        # a crash left stored for some sub-layers only is replayed and written to the others only (never twice)
        have_by = {s.name: self._shard(checkpoint, s.name).ids for s in subs}
        bs = int(batch_size or self.batch_size)
        training = self.model.training
        self.model.eval()
        col = Collector(self.specs, keep_graph=True).attach()
        try:
            n = _n_items(dataset)
            bar = tqdm(total=None if n is None else max(0, n - len(have)), desc=f"MetaStore {checkpoint}",
                       unit="item", disable=not progress, leave=False)
            for bids, x, y in _batches(dataset, ids, have, bs):
                bar.update(len(bids))
                x = _to_tensor(x, self._float_dtype(), self._device())
                y = _to_tensor(y, None, self._device())
                self._sample_shape_check(x)
                replay(self.model, col, x, y, loss)
                self._store_batch(checkpoint, subs, bids, y, col, skip=have_by)
                col.clear()
                if self.on_progress is not None:
                    self.on_progress(checkpoint, bar.n, bar.total)
            bar.close()
        finally:
            col.detach()
            self.model.train(training)
            for s in subs:
                self._shard(checkpoint, s.name).flush()
            for s in subs:
                self._shard(checkpoint, s.name).sync()
        return self

    def _store_batch(self, ckpt: str, subs: list[SubLayer], bids: np.ndarray, y: Any, col: Collector | None,
                     scale: float = 1.0, skip: dict[str, np.ndarray] | None = None,
                     products: dict[str, tuple] | None = None) -> None:
        """Hand one batch's captured (input, dC/dy) of every sub-layer to its shards: as factors, or as full
        per-sample gradients computed straight from the layer input (no unfold) where the cost model says so.
        ``skip[sub]``: ids that sub-layer already stores (their rows are not written again).
        ``products[sub]``: (T, mode, (full, T) or (X, G)) a worker already computed from its own replay of
        the batch (``distributed.metastore``), stored instead of the collector's calls."""
        yn = None if y is None else (y.detach().cpu().numpy() if torch.is_tensor(y) else np.asarray(y))
        bids = np.asarray(bids, np.int64).reshape(-1)
        B = len(bids)
        raw = col.raw() if products is None else {}
        names = {s.name for s in subs}
        for spec in self.specs:
            for s in spec.sublayers:
                if s.name not in names:
                    continue
                sh = self._shard(ckpt, s.name)
                calls = raw.get(s.name)
                mode = sh.mode
                if mode is None:
                    mode = sh.set_mode(sum(n_positions(spec, c[0], c[1], B) for c in calls) if products is None
                                       else products[s.name][0], s.a, s.b)
                if products is not None and products[s.name][1] != mode:
                    raise RuntimeError(f"{s.name}: a worker computed {products[s.name][1]!r} products but the "
                                       f"store keeps {mode!r}")
                keep = None if skip is None else ~np.isin(bids, skip.get(s.name, ()))
                if keep is not None and not keep.any():
                    continue
                part = keep is not None and not keep.all()
                kt = torch.as_tensor(keep) if part else None
                ids_s = bids[keep] if part else bids
                y_s = yn[keep] if part and yn is not None and np.ndim(yn) > 0 and len(yn) == B else yn
                if mode == "full":
                    full, T = sub_full(spec, s, calls, B, scale) if products is None else products[s.name][2]
                    sh.append_full(ids_s, y_s, full[kt] if part else full, T)
                else:
                    X, G = sub_factors(spec, s, calls, B, scale, ones=False) if products is None \
                        else products[s.name][2]
                    sh.append(ids_s, y_s, X[kt] if part else X, G[kt] if part else G, bias=s.bias)

    def _float_dtype(self) -> torch.dtype:
        p = next(self.model.parameters(), None)
        return p.dtype if p is not None else torch.float32

    def _device(self):
        p = next(self.model.parameters(), None)
        return p.device if p is not None else None

    def record(self, checkpoint: str, lr: float = 1.0, reduction: str = "mean",
               loss_fn: Callable | None = None) -> Recorder:
        """Context manager that captures factors inside your own training loop (model unchanged).

        >>> with ms.record("epoch-1", lr=0.1) as rec:
        ...     for ids, x, y in loader:
        ...         loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward()
        ...         rec.step(ids, y); opt.step()

        ``reduction`` says how your loss combines samples ("mean" or "sum") so dC_i/dy_i is recovered
        exactly. The checkpoint's weights are those at the end of the block (TracIn's in-loop approximation:
        each item's gradient is taken at the weights it was trained with).

        Inside the block, a Conv2d layer stored as full per-sample gradients (the cost model's choice for
        early convs) gets its weight gradient from those per-sample gradients (their sum, equal to the
        plain gradient up to float rounding) instead of autograd computing it a second time; such a layer's
        gradients are then not twice differentiable (``create_graph=True``) while recording.
        """
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction={reduction!r}: use 'mean' or 'sum' (how your loss combines samples)")
        self._check_ckpt_name(checkpoint)
        if loss_fn is not None:
            self._remember_loss(loss_fn)
        return Recorder(self, checkpoint, lr, reduction)

    # -- analytics (analytics.py works on this public interface) -------------------------------
    def proponents(self, x: Any, y: Any, k: int = 10, checkpoint=None, layers=None) -> pd.DataFrame:
        """Training items whose gradient most agrees with this test item's: DataFrame id, score, label."""
        return analytics.ranked(self, x, y, k, checkpoint, layers, positive=True)

    def opponents(self, x: Any, y: Any, k: int = 10, checkpoint=None, layers=None) -> pd.DataFrame:
        """Training items whose gradient most opposes this test item's (most negative scores)."""
        return analytics.ranked(self, x, y, k, checkpoint, layers, positive=False)

    def suspects(self, val_x: Any = None, val_y: Any = None, k: int = 50, checkpoint=None, layers=None,
                 classes: Sequence[str] | None = None, by: str | Sequence[str] = "auto",
                 train_x: Any = None) -> pd.DataFrame:
        """Likely mislabeled training items, most suspect first: DataFrame id, score, label, suggested.

        ``by`` picks the signal(s) — "class", "batch", "self", "margin", "knn", a tuple of them (rank
        average), or "auto" (the benchmark-chosen default, using what the inputs given allow); see
        ``analytics.suspects`` for what each needs and which to use when.
        """
        return analytics.suspects(self, val_x, val_y, k, checkpoint, layers, classes, by, train_x)

    def storage_report(self) -> pd.DataFrame:
        """Per checkpoint and sub-layer: mode chosen, items, bytes on disk and the full-gradient bytes."""
        rows = []
        for ck in self.checkpoints:
            for s in self.sublayers:
                sh = self._shard(ck, s.name)
                n = len(sh.ids)
                full = n * s.full_size * np.dtype(DTYPES[self.dtype]).itemsize
                disk = sh.nbytes_on_disk()
                T = sh.manifest.get("T")
                rows.append({"checkpoint": ck, "layer": s.name, "mode": sh.mode, "positions": T, "items": n,
                             "bytes": disk, "full_bytes": full, "ratio": full / disk if disk else np.nan,
                             "analytic_ratio": (s.full_size / min(s.full_size, T * (s.a + s.b))) if T else np.nan})
        return pd.DataFrame(rows)

    def close(self) -> None:
        """Write what is buffered, wait for background writes, and stop the writer thread."""
        for sh in self._shards.values():
            sh.flush()
        for sh in self._shards.values():
            sh.sync()
        self._writer.shutdown(wait=True)

    def __enter__(self) -> MetaStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"MetaStore(layers={self.layers}, path={str(self.path)!r}, checkpoints={self.checkpoints}, "
                f"dtype={self.dtype!r})")


class Recorder:
    """Captures factors during the user's own training loop; see ``MetaStore.record``."""

    def __init__(self, ms: MetaStore, checkpoint: str, lr: float, reduction: str):
        if checkpoint in ms.checkpoints_:
            raise ValueError(f"checkpoint {checkpoint!r} is already collected; record under a new name or "
                             f"ms.drop_checkpoint({checkpoint!r}) first")
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr={lr!r}: the learning rate of a checkpoint must be a positive number")
        self.ms, self.checkpoint, self.lr, self.reduction = ms, checkpoint, lr, reduction
        self.collector = Collector(ms.specs, keep_graph=False, fuse=self._stores_full)

    def _stores_full(self, sub: SubLayer, T: int) -> bool:
        """Will ``sub`` be stored as full per-sample gradients (cost model, or the store's fixed choice)?"""
        sh = self.ms._shard(self.checkpoint, sub.name)
        mode = sh.mode or (choose_mode(T, sub.a, sub.b) if sh.storage == "auto" else sh.storage)
        return mode == "full"

    def __enter__(self) -> Recorder:
        # leftovers of an earlier crashed recording under this (unregistered) name are never read
        shutil.rmtree(self.ms.path / "ckpt" / self.checkpoint, ignore_errors=True)
        self.ms._drop_shards(self.checkpoint)
        self.collector.attach()
        return self

    def step(self, ids: Sequence[int], y: Any = None) -> None:
        """Store the factors of the batch whose ``loss.backward()`` just ran, under ``ids``."""
        ids = np.asarray(ids.cpu() if torch.is_tensor(ids) else ids, np.int64).reshape(-1)
        B = len(ids)
        scale = float(B) if self.reduction == "mean" else 1.0
        try:
            self.ms._store_batch(self.checkpoint, self.ms.sublayers, ids, y, self.collector, scale)
        finally:
            self.collector.clear()

    def __exit__(self, exc_type, *exc) -> None:
        self.collector.detach()
        ms = self.ms
        if exc_type is not None:   # not registered: the partial shards are discarded on the next record
            for s in ms.sublayers:
                with contextlib.suppress(Exception):
                    ms._shard(self.checkpoint, s.name).sync()
            ms._drop_shards(self.checkpoint)
            return
        # wait for every background write; a failed one fails the recording (nothing is registered)
        err = None
        for s in ms.sublayers:
            try:
                ms._shard(self.checkpoint, s.name).flush()
            except Exception as e:  # noqa: BLE001
                err = err or e
        for s in ms.sublayers:
            try:
                ms._shard(self.checkpoint, s.name).sync()
            except Exception as e:  # noqa: BLE001
                err = err or e
        if err is not None:
            ms._drop_shards(self.checkpoint)
            raise RuntimeError(f"MetaStore: writing the factors of checkpoint {self.checkpoint!r} failed ({err}); "
                               "the recording was not registered") from err
        ms.add_checkpoint(self.checkpoint, self.lr)   # registered last: only a complete recording counts


def _n_items(dataset: Any) -> int | None:
    from torch.utils.data import DataLoader
    if isinstance(dataset, DataLoader):
        try:
            return len(dataset.dataset)
        except TypeError:
            return None
    try:
        return len(dataset[0]) if isinstance(dataset, tuple) and len(dataset) == 2 else len(dataset)
    except TypeError:
        return None


def _batches(dataset: Any, ids: Sequence[int] | None, have: np.ndarray, bs: int
             ) -> Iterator[tuple[np.ndarray, Any, Any]]:
    """Yield (ids, x, y) batches of the items of ``dataset`` not already in ``have``."""
    from torch.utils.data import DataLoader, SequentialSampler
    have_set = set(have.tolist())
    if isinstance(dataset, DataLoader):
        if ids is None and not isinstance(dataset.sampler, SequentialSampler):
            raise ValueError("the DataLoader shuffles, so positions are not item ids; pass shuffle=False or ids=")
        pos = 0
        id_arr = None if ids is None else np.asarray(ids, np.int64)
        for x, y in dataset:
            n = len(x)
            bid = np.arange(pos, pos + n) if id_arr is None else id_arr[pos:pos + n]
            pos += n
            keep = np.array([i not in have_set for i in bid.tolist()])
            if keep.any():
                kt = torch.as_tensor(keep)
                yield bid[keep], _to_tensor(x)[kt], _to_tensor(y)[kt]
        return
    source, plan = _plan(dataset, ids, have, bs)
    for bids, pos in plan:
        yield (bids, *_take(source, pos))


def _is_xy(dataset: Any) -> bool:
    return isinstance(dataset, tuple) and len(dataset) == 2 and all(hasattr(d, "shape") for d in dataset)


def _plan(dataset: Any, ids: Sequence[int] | None, have: np.ndarray, bs: int
          ) -> tuple[Any, list[tuple[np.ndarray, np.ndarray]]]:
    """(source, [(ids, positions)] per batch) for the items of a Dataset, list or (X, Y) arrays not in
    ``have``; ``_take(source, positions)`` reads a batch (here, or in a worker given the source)."""
    if _is_xy(dataset):
        X, Y = dataset
        if len(X) != len(Y):
            raise ValueError(f"dataset (X, Y) has {len(X)} inputs but {len(Y)} labels")
        source = dataset
    elif hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        source = dataset
    else:
        source = list(dataset)
    n = len(source[0]) if _is_xy(source) else len(source)
    id_arr = np.arange(n) if ids is None else np.asarray(ids, np.int64).reshape(-1)
    if len(id_arr) != n:
        raise ValueError(f"ids has {len(id_arr)} entries but the dataset has {n} items")
    if len(np.unique(id_arr)) != n:
        raise ValueError("ids must be unique")
    todo = np.nonzero(~np.isin(id_arr, have))[0]
    return source, [(id_arr[todo[s:s + bs]], todo[s:s + bs]) for s in range(0, len(todo), bs)]


def _take(source: Any, pos: np.ndarray) -> tuple[Any, Any]:
    """One batch (x, y) at ``pos`` of a ``_plan`` source."""
    if _is_xy(source):
        X, Y = source
        xb = X[torch.as_tensor(pos)] if torch.is_tensor(X) else X[pos]
        yb = Y[torch.as_tensor(pos)] if torch.is_tensor(Y) else Y[pos]
        return xb, yb
    pairs = [source[int(p)] for p in pos]
    return torch.stack([_to_tensor(p[0]) for p in pairs]), torch.stack([_to_tensor(p[1]) for p in pairs])
