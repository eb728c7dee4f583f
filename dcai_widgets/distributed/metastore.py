"""MetaStore gradient collection on an Executor: actors replay the model, this process writes the shards.

Each actor holds a copy of the model at the checkpoint's weights, the chosen layers' hooks and the
dataset; per batch it runs the same replay as ``MetaStore.collect`` (forward, exact per-sample dC/dy,
Zhang, WPI 2023, Part III) and turns the captured calls into what the store keeps -- factors or full
per-sample gradients by the same cost model. The store (append-only shards, one writer) stays in this
process and appends the batches in their planned order, so the shards hold the same rows in the same
order as an in-process ``collect``.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..metastore.collector import Collector, per_sample_loss, replay, sub_factors, sub_full
from ..metastore.layers import n_positions, resolve_layers
from ..metastore.storage import choose_mode
from ..metastore.store import _plan, _take, _to_tensor
from .executor import get_executor

__all__ = ["collect"]


class _ReplayWorker:
    """Held by one actor: the model (eval mode), hooks on its chosen layers, the loss and the dataset."""

    def __init__(self, model: torch.nn.Module, layers: list[str], loss_fn: Callable, storage: str,
                 modes: dict[str, str | None], data: Any):
        self.model = copy.deepcopy(model).cpu().eval()   # a copy: hooks never touch the caller's model
        self.specs = resolve_layers(self.model, layers)
        self.loss = per_sample_loss(loss_fn)
        self.col = Collector(self.specs, keep_graph=True).attach()
        self.storage, self.modes = storage, dict(modes)
        self.data = data.get()
        p = next(self.model.parameters(), None)
        self.dtype = p.dtype if p is not None else torch.float32

    def __call__(self, task: tuple[np.ndarray, np.ndarray]) -> tuple:
        bids, pos = task
        x, y = _take(self.data, pos)
        x, y = _to_tensor(x, self.dtype), _to_tensor(y)
        replay(self.model, self.col, x, y, self.loss)
        raw, B, products = self.col.raw(), len(bids), {}
        for spec in self.specs:
            for s in spec.sublayers:
                calls = raw[s.name]
                T = sum(n_positions(spec, c[0], c[1], B) for c in calls)
                mode = self.modes.get(s.name) or (choose_mode(T, s.a, s.b) if self.storage == "auto" else self.storage)
                self.modes[s.name] = mode
                tensors = sub_full(spec, s, calls, B) if mode == "full" else sub_factors(spec, s, calls, B, ones=False)
                products[s.name] = (T, mode, tensors)
        self.col.clear()
        return bids, y, tuple(x.shape), products


def _as_dataset(dataset: Any, bs: int) -> tuple[Any, int]:
    """A DataLoader becomes its dataset (sequential, default collation only); its batch size is kept."""
    from torch.utils.data import DataLoader, SequentialSampler
    from torch.utils.data.dataloader import default_collate

    if not isinstance(dataset, DataLoader):
        return dataset, bs
    if not isinstance(dataset.sampler, SequentialSampler) or dataset.collate_fn is not default_collate:
        raise ValueError("a distributed collect reads items from the DataLoader's dataset; pass a non-shuffling "
                         "DataLoader with the default collate_fn, or the dataset / (X, Y) arrays themselves")
    return dataset.dataset, int(dataset.batch_size or bs)


def collect(ms: Any, dataset: Any, loss_fn: Callable, checkpoint: str, lr: float = 1.0,
            ids: Sequence[int] | None = None, batch_size: int | None = None, overwrite: bool = False,
            progress: bool = True, executor: Any = None) -> Any:
    """``ms.collect(...)`` with the replay on ``executor``; see ``MetaStore.collect``.

    The model, the loss function and the dataset must pickle (a torch Dataset, a list, or ``(X, Y)``
    arrays/tensors; a lambda loss does not: pass ``nn.CrossEntropyLoss()`` or ``F.cross_entropy``).
    """
    from tqdm.auto import tqdm

    ex = get_executor(executor)
    ms.add_checkpoint(checkpoint, lr, overwrite=overwrite)
    per_sample_loss(loss_fn)      # fails here, with its clear message, rather than inside a worker
    ms._remember_loss(loss_fn)
    subs = ms.sublayers
    have = ms.stored_ids(checkpoint)
    have_by = {s.name: ms._shard(checkpoint, s.name).ids for s in subs}
    data, bs = _as_dataset(dataset, int(batch_size or ms.batch_size))
    source, plan = _plan(data, ids, have, bs)
    modes = {s.name: ms._shard(checkpoint, s.name).mode for s in subs}
    args = (ms.model, ms.layers, loss_fn, ms.storage, modes, ex.share(source))
    total = sum(len(b) for b, _ in plan)
    bar = tqdm(total=total, desc=f"MetaStore {checkpoint} ({ex.name})", unit="item", disable=not progress,
               leave=False)
    pending: dict[int, tuple] = {}
    nxt = 0
    try:
        for i, res in ex.map(_ReplayWorker, args, plan):
            pending[i] = res
            while nxt in pending:            # append in plan order: the same shard layout as in process
                bids, y, shape, products = pending.pop(nxt)
                ms._sample_shape_check(torch.empty(shape, device="meta"))
                ms._store_batch(checkpoint, subs, bids, y, None, skip=have_by, products=products)
                nxt += 1
                bar.update(len(bids))
                if ms.on_progress is not None:
                    ms.on_progress(checkpoint, bar.n, bar.total)
        bar.close()
    finally:
        for s in subs:
            ms._shard(checkpoint, s.name).flush()
        for s in subs:
            ms._shard(checkpoint, s.name).sync()
    return ms
