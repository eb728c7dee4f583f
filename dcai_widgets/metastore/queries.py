"""MetaStore's exact influence queries over the stored gradient factors (Zhang, WPI 2023, Part III).

TracIn-CP (Pruthi et al., NeurIPS 2020) in the four granularities of the dissertation: point-to-point
(``p2p``), point-to-batch (``p2b``), batch-to-point (``b2p``) and batch-to-batch (``b2b``), plus
self-influence and per-class P2B; each sums ``lr_c`` x the inner products over checkpoints. The train side
is read from the shards (never recomputed); the test side is replayed through the model at each
checkpoint. A mixin of :class:`~dcai_widgets.metastore.store.MetaStore`, kept apart so the store's
collection and bookkeeping and its query algebra can be read (and tested) on their own.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from . import operators as ops
from .collector import Collector, per_sample_loss, replay_factors
from .storage import atomic_write

__all__ = ["InfluenceQueries"]


def _to_tensor(a: Any, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    t = a if torch.is_tensor(a) else torch.as_tensor(np.asarray(a))
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t.to(device) if device is not None else t


class InfluenceQueries:
    """Influence queries for a store that provides: ``model``, ``specs``, ``meta``, ``path``,
    ``batch_size``, ``loss_fn``, ``checkpoints_`` and ``_borrowed(ckpt)``, ``_ckpts``, ``_subs``,
    ``_shard(ckpt, layer)``, ``_float_dtype()``, ``_device()`` (as MetaStore does)."""

    # -- test-side replay ---------------------------------------------------------------------
    def _test_batches(self, test_x: Any, test_y: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x = _to_tensor(test_x, self._float_dtype(), self._device())
        y = _to_tensor(test_y, None, self._device())
        shape = self.meta.get("sample_shape")
        if shape is not None and list(x.shape) == shape:
            x = x[None]
        if shape is not None and list(x.shape[1:]) != shape:
            raise ValueError(f"test_x has shape {tuple(x.shape)} but the collected samples have shape "
                             f"{tuple(shape)}; pass a batch (m, {', '.join(map(str, shape))}) or one sample "
                             f"{tuple(shape)}")
        if y.dim() == 0:
            y = y[None]
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"test_y has {y.shape[0]} labels for {x.shape[0]} test inputs; give one label per input")
        for s in range(0, x.shape[0], self.batch_size):
            yield x[s:s + self.batch_size], y[s:s + self.batch_size]

    def _test_factors(self, ckpt: str, test_x, test_y, loss_fn=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        loss = per_sample_loss(loss_fn or self._loss_fn())
        parts: dict[str, list] = {}
        with self._borrowed(ckpt), Collector(self.specs, keep_graph=True) as col:
            for x, y in self._test_batches(test_x, test_y):
                try:
                    fac = replay_factors(self.model, col, x, y, loss)
                except RuntimeError as e:
                    raise ValueError(f"the model could not run on a test batch of shape {tuple(x.shape)} with "
                                     f"labels of shape {tuple(y.shape)}: {e}; pass inputs shaped like the "
                                     "training samples") from e
                for k, (X, G) in fac.items():
                    parts.setdefault(k, []).append((X.cpu(), G.cpu()))
        return {k: (torch.cat([p[0] for p in v]), torch.cat([p[1] for p in v])) for k, v in parts.items()}

    def _remember_loss(self, loss_fn: Callable) -> None:
        """Keep the loss for test replay; a plain torch.nn loss is also named in meta.json for reopening."""
        self.loss_fn = loss_fn
        if (isinstance(loss_fn, nn.Module) and type(loss_fn).__module__ == "torch.nn.modules.loss"
                and not list(loss_fn.buffers()) and hasattr(nn, type(loss_fn).__name__)):
            name = type(loss_fn).__name__
            if self.meta.get("loss") != name:
                self.meta["loss"] = name
                atomic_write(self.path / "meta.json", json.dumps(self.meta).encode())

    def _loss_fn(self) -> Callable:
        if self.loss_fn is None and self.meta.get("loss"):
            self.loss_fn = getattr(nn, self.meta["loss"])()
        if self.loss_fn is None:
            raise ValueError("no loss function known for test replay: pass MetaStore(..., loss_fn=...), set "
                             "ms.loss_fn = nn.CrossEntropyLoss(), or collect() first")
        return self.loss_fn

    def _train_ids(self, ckpts, subs, train_ids) -> np.ndarray:
        if train_ids is None:
            ids = None
            for ck in ckpts:
                for s in subs:
                    a = self._shard(ck, s.name).ids
                    ids = a if ids is None else np.intersect1d(ids, a)
            return ids
        ids = np.asarray(train_ids, dtype=np.int64).reshape(-1)
        for ck in ckpts:
            for s in subs:
                miss = self._shard(ck, s.name).missing(ids)
                if len(miss):
                    raise ValueError(f"{len(miss)} train id(s) are not stored for checkpoint {ck!r}, layer "
                                     f"{s.name!r} (e.g. {miss[:5].tolist()}); collect them first with "
                                     f"ms.collect(..., checkpoint={ck!r})")
        return ids

    # -- operators ----------------------------------------------------------------------------
    def _accumulate(self, train_ids, checkpoint, layers, per_ckpt: Callable) -> tuple[np.ndarray, Any]:
        ckpts, subs = self._ckpts(checkpoint), self._subs(layers)
        ids = self._train_ids(ckpts, subs, train_ids)
        total = None
        for ck in ckpts:
            lr = self.checkpoints_[ck]["lr"]
            r = per_ckpt(ck, subs, ids)
            total = lr * r if total is None else total + lr * r
        return ids, total

    def p2p(self, train_ids: Sequence[int] | None, test_x: Any, test_y: Any, checkpoint=None,
            layers=None, _with_ids: bool = False) -> np.ndarray:
        """(n_train, n_test) exact TracIn-CP inner products of each train item with each test item.

        ``train_ids=None`` means every stored item (in ``stored_ids()`` order).
        """
        reads = [(c, s.name) for c in self._ckpts(checkpoint) for s in self._subs(layers)]

        def per(ck, subs, ids):
            if (ck, subs[0].name) == reads[0]:
                self._shard(*reads[0]).prefetch(ids)    # mapped + checked while the test item replays
            tf = self._test_factors(ck, test_x, test_y)
            out = None
            for s in subs:
                Xt, Gt = tf[s.name]
                part = torch.zeros(len(ids), Xt.shape[0], dtype=torch.float64)
                i = reads.index((ck, s.name)) + 1
                then = (lambda i=i: self._shard(*reads[i]).prefetch(ids)) if i < len(reads) else None
                for pos, blk in self._shard(ck, s.name).blocks(ids, then):
                    part[torch.as_tensor(pos)] = ops.p2p_block(blk, Xt, Gt).double()
                out = part if out is None else out + part
            return out
        ids, total = self._accumulate(train_ids, checkpoint, layers, per)
        return (ids, total.numpy()) if _with_ids else total.numpy()

    def _test_bar(self, ck, test_x, test_y, subs) -> dict[str, torch.Tensor]:
        tf = self._test_factors(ck, test_x, test_y)
        return {s.name: ops.mean_grad(*tf[s.name]) for s in subs}

    def p2b(self, train_ids: Sequence[int] | None, test_x: Any, test_y: Any, checkpoint=None,
            layers=None, _with_ids: bool = False) -> np.ndarray:
        """(n_train,) inner product of each train item's gradient with the test batch's mean gradient."""
        def per(ck, subs, ids):
            tf = self._test_factors(ck, test_x, test_y)
            out = torch.zeros(len(ids), dtype=torch.float64)
            for s in subs:
                Xt, Gt = tf[s.name]
                bar = ops.mean_grad(Xt, Gt)
                for pos, blk in self._shard(ck, s.name).blocks(ids):
                    out[torch.as_tensor(pos)] += ops.p2b_auto(blk, Xt, Gt, bar).double()
            return out
        ids, total = self._accumulate(train_ids, checkpoint, layers, per)
        return (ids, total.numpy()) if _with_ids else total.numpy()

    def _train_bar(self, ck, subs, ids) -> dict[str, torch.Tensor]:
        bars = {}
        for s in subs:
            acc = None
            for _, blk in self._shard(ck, s.name).blocks(ids):
                g = ops.batch_grad_block(blk).double()
                acc = g if acc is None else acc + g
            bars[s.name] = acc.reshape(s.b, s.a) / len(ids)
        return bars

    def b2p(self, train_ids: Sequence[int] | None, test_x: Any, test_y: Any, checkpoint=None,
            layers=None) -> np.ndarray:
        """(n_test,) inner product of the train batch's mean gradient with each test item's gradient."""
        def per(ck, subs, ids):
            bars = self._train_bar(ck, subs, ids)
            tf = self._test_factors(ck, test_x, test_y)
            return sum(ops.b2p_test(bars[s.name], tf[s.name][0].double(), tf[s.name][1].double()) for s in subs)
        return self._accumulate(train_ids, checkpoint, layers, per)[1].numpy()

    def b2b(self, train_ids: Sequence[int] | None, test_x: Any, test_y: Any, checkpoint=None,
            layers=None) -> float:
        """Inner product of the train batch's mean gradient with the test batch's mean gradient."""
        def per(ck, subs, ids):
            tb = self._train_bar(ck, subs, ids)
            vb = self._test_bar(ck, test_x, test_y, subs)
            return sum(float((tb[s.name] * vb[s.name].double()).sum()) for s in subs)
        return float(self._accumulate(train_ids, checkpoint, layers, per)[1])

    def self_influence(self, ids: Sequence[int] | None = None, checkpoint=None, layers=None) -> np.ndarray:
        """(n,) TracIn-CP self-influence ``sum_c lr_c ||grad_i||^2`` of stored items (all if ids is None)."""
        def per(ck, subs, ids_):
            out = torch.zeros(len(ids_), dtype=torch.float64)
            for s in subs:
                for pos, blk in self._shard(ck, s.name).blocks(ids_):
                    out[torch.as_tensor(pos)] += ops.self_block(blk).double()
            return out
        return self._accumulate(ids, checkpoint, layers, per)[1].numpy()

    def class_p2b(self, val_x: Any, val_y: Any, ids: Sequence[int] | None = None, checkpoint=None, layers=None
                  ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(ids, (n, C) TracIn-CP P2B of each training item against each validation class's mean gradient,
        the classes present in ``val_y``)."""
        ckpts, subs = self._ckpts(checkpoint), self._subs(layers)
        ids = self._train_ids(ckpts, subs, ids)
        yv = np.asarray(val_y.cpu() if torch.is_tensor(val_y) else val_y).reshape(-1).astype(np.int64)
        cls = sorted(set(yv.tolist()))
        per = None
        for ck in ckpts:
            tf = self._test_factors(ck, val_x, val_y)
            acc = torch.zeros(len(ids), len(cls), dtype=torch.float64)
            for s in subs:
                X, G = tf[s.name]
                bars = torch.stack([ops.mean_grad(X[torch.as_tensor(yv == c)], G[torch.as_tensor(yv == c)])
                                    for c in cls])
                for pos, blk in self._shard(ck, s.name).blocks(ids):
                    acc[torch.as_tensor(pos)] += ops.p2b_block(blk, bars).double()
            acc *= self.checkpoints_[ck]["lr"]
            per = acc if per is None else per + acc
        return ids, per.numpy(), cls
