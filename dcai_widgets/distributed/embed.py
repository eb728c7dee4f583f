"""Embeddings computed by an Executor: actors hold the encoder, each encodes whole chunks of rows.

Chunks are multiples of the encoder's batch size and start at multiples of it, so every call of the
user's function sees exactly the batch the in-process ``CallableEncoder.encode`` gives it (same rows,
same batch shape): the outputs match the single-process path batch for batch.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..data.items import ItemSet, VectorItems
from .executor import get_executor
from .rows import shareable

__all__ = ["RangeFeed", "embed_rows", "encode_items"]

CHUNK_ROWS = 65_536   # rows per task: ~32 MB of 128-d float32 output, a few seconds of work per task


class _EncodeWorker:
    """Held by one actor: the encoder and the items; encodes the rows [lo, hi) batch by batch."""

    def __init__(self, encoder: Any, items: Any):
        self.encoder, self.items = encoder, items.get()

    def __call__(self, task: tuple[int, int]) -> tuple[int, np.ndarray]:
        lo, hi = task
        bs = self.encoder.batch_size
        outs = [self.encoder.encode_batch(self.encoder._batch(self.items, b, min(b + bs, hi)))
                for b in range(lo, hi, bs)]
        return lo, np.concatenate(outs, axis=0)


def _wire_items(items: ItemSet) -> ItemSet:
    """Items as they travel: vectors over a memory-mapped file go by path (see ``rows.MappedRows``)."""
    if isinstance(items, VectorItems):
        X = shareable(items.X)
        if X is not items.X:
            return VectorItems(X)
    return items


def encode_items(encoder: Any, items: ItemSet, executor: Any = None, out: Any = None,
                 chunk_rows: int = CHUNK_ROWS, progress: bool = True) -> np.ndarray:
    """``encoder.encode(items)`` computed by ``executor``: (N, d) float32, written into ``out`` if given.

    ``encoder`` is a ``CallableEncoder`` (anything with ``batch_size``, ``_batch(items, lo, hi)`` and
    ``encode_batch(batch)``), pickled once to each worker. ``out``: an (N, d) float32 array to fill, e.g.
    a writable ``np.memmap`` (the embeddings never need to fit in RAM); each chunk is written as it
    arrives. Returns ``out`` (or a new array).
    """
    from tqdm.auto import tqdm

    ex = get_executor(executor)
    n = len(items)
    bs = int(encoder.batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be at least 1, got {bs}")
    step = max(1, int(chunk_rows) // bs) * bs
    tasks = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    shared = ex.share(_wire_items(items))
    bar = tqdm(total=n, desc=f"encoding ({ex.name})", unit="row", disable=not progress or n <= 2 * step, leave=False)
    for _, (lo, emb) in ex.map(_EncodeWorker, (encoder, shared), tasks):
        if out is None:
            out = np.empty((n, emb.shape[1]), np.float32)
        elif out.shape[0] != n or (out.ndim == 2 and out.shape[1] != emb.shape[1]):
            raise ValueError(f"out has shape {tuple(out.shape)} but the encoder gives ({n}, {emb.shape[1]})")
        out[lo:lo + len(emb)] = emb
        bar.update(len(emb))
    bar.close()
    if out is None:
        raise ValueError("there are no items to encode")
    return out


class RangeFeed:
    """``encode_batch(lo, hi)`` for the chunked memory-mapped writer (``embed.memmap.write_embeddings``),
    served by an Executor: at its first call it hands every chunk from ``lo`` on to the workers, then
    returns each chunk when the writer asks for it (in order), keeping early arrivals until then.

    The workers encode each chunk as ``CallableEncoder.encode_range`` does (batches from the chunk start),
    so the file holds what the in-process writer would write; ``chunk`` must be the writer's chunk.
    """

    def __init__(self, encoder: Any, items: ItemSet, executor: Any = None, chunk: int = CHUNK_ROWS):
        self.encoder, self.items, self.chunk = encoder, items, int(chunk)
        self.ex = get_executor(executor)
        self._results = None
        self._early: dict[int, np.ndarray] = {}

    def __call__(self, lo: int, hi: int) -> np.ndarray:
        lo, hi = int(lo), int(hi)
        if self._results is None:
            n = len(self.items)
            tasks = [(a, min(a + self.chunk, n)) for a in range(lo, n, self.chunk)]
            self._results = self.ex.map(_EncodeWorker, (self.encoder, self.ex.share(_wire_items(self.items))),
                                        tasks)
        while lo not in self._early:
            try:
                _, (a, emb) = next(self._results)
            except StopIteration:
                raise ValueError(f"rows {lo}..{hi - 1} were not among the chunks handed to the workers; "
                                 f"ask for chunks of {self.chunk} rows in order") from None
            self._early[a] = emb
        emb = self._early.pop(lo)
        if len(emb) != hi - lo:
            raise ValueError(f"the workers encoded {len(emb)} rows from {lo} but {hi - lo} were asked; "
                             f"use chunk={self.chunk}")
        return emb


def embed_rows(fn: Callable[[Any], Any], rows: Any, executor: Any = None, batch_size: int = 256,
               out: Any = None, chunk_rows: int = CHUNK_ROWS, progress: bool = True) -> np.ndarray:
    """Encode raw feature rows (an array or memory-mapped array, (N, ...)) with ``fn`` (a callable on a
    batch, or a torch module) on ``executor``; the same result as ``CallableEncoder(fn, batch_size)``
    in process. See :func:`encode_items`."""
    from ..embed.encoders import CallableEncoder

    enc = fn if isinstance(fn, CallableEncoder) else CallableEncoder(fn, batch_size=batch_size)
    return encode_items(enc, VectorItems(rows), executor=executor, out=out, chunk_rows=chunk_rows,
                        progress=progress)
