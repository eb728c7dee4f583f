"""Embeddings out of RAM: computed in chunks straight into a memory-mapped ``.npy`` file.

``write_embeddings(encode_batch, n, path)`` calls ``encode_batch(lo, hi)`` for consecutive row ranges (a
progress bar shows them), checks each chunk and writes it into an (n, d) file opened with
``np.lib.format.open_memmap``; only one chunk is ever in RAM.  The finished file is reopened read-only
with ``open_embeddings``: an ``np.memmap`` (an ndarray), which the Session, the FAISS index
(``NeighborIndex``) and the engines read by row id.  A run that stops part-way resumes at the first
chunk not yet written (the progress is kept beside the partial file).

float32 by default; ``dtype="float16"`` halves the file (10M x 128: 2.4 GiB instead of 4.8 GiB) at a
relative precision of about 5e-4, which leaves nearest-neighbour rankings of typical embeddings intact;
values beyond float16's range (|x| > 65504) are refused rather than stored as infinities.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..rows import ROW_DTYPES, nonfinite_rows

__all__ = ["EMBED_CHUNK", "EncodeBatch", "open_embeddings", "write_embeddings"]

EMBED_CHUNK = 65_536   # rows per encode_batch call (32 MiB of float32 at d=128)
EncodeBatch = Callable[[int, int], Any]   # (lo, hi) -> (hi - lo, d) array of rows lo..hi-1


def open_embeddings(path: str | os.PathLike, mode: str = "r") -> np.memmap:
    """A finished embeddings file (``.npy``, float32 or float16, 2-D) as a read-only ``np.memmap``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no embeddings file at {str(path)!r}")
    try:
        X = np.load(path, mmap_mode=mode, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{str(path)!r} is not a .npy array file: {e}") from None
    if not isinstance(X, np.memmap):
        raise ValueError(f"{str(path)!r} could not be memory-mapped (a .npz archive?); save it with np.save")
    if X.ndim != 2 or X.dtype not in ROW_DTYPES:
        raise ValueError(f"{str(path)!r} holds a {X.dtype} array of shape {X.shape}; embeddings must be "
                         "a 2-D float32 or float16 array (N, d)")
    return X


def _check_chunk(out: Any, lo: int, hi: int, d: int | None, dtype: np.dtype) -> np.ndarray:
    arr = np.asarray(out)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"encode_batch({lo}, {hi}) returned dtype {arr.dtype}; it must return numbers")
    if arr.ndim != 2 or arr.shape[0] != hi - lo or (d is not None and arr.shape[1] != d):
        want = f"({hi - lo}, {d})" if d is not None else f"({hi - lo}, d)"
        raise ValueError(f"encode_batch({lo}, {hi}) returned shape {arr.shape}; expected {want}")
    bad = nonfinite_rows(arr)
    if len(bad):
        raise ValueError(f"encode_batch({lo}, {hi}) returned NaN or infinite values in rows "
                         f"{(lo + bad[:5]).tolist()}")
    if dtype == np.float16 and arr.size and float(np.abs(arr).max()) > float(np.finfo(np.float16).max):
        raise ValueError(f"encode_batch({lo}, {hi}) returned values beyond float16's range (|x| > 65504); "
                         "use dtype='float32' or rescale the embeddings")
    return arr


def write_embeddings(encode_batch: EncodeBatch, n: int, path: str | os.PathLike, *,
                     dtype: str | np.dtype = "float32", chunk: int = EMBED_CHUNK, progress: bool = True,
                     desc: str = "embedding") -> np.memmap:
    """Encode rows 0..n-1 in chunks into the ``.npy`` file ``path`` and return it memory-mapped (read-only).

    ``encode_batch(lo, hi)`` returns the (hi - lo, d) embeddings of rows lo..hi-1 (any numeric dtype; d
    fixed by the first chunk).  The file is written as ``path.partial`` and renamed when complete, so a
    file at ``path`` is always whole; an interrupted run resumes after its last written chunk.  Anonymous
    memory stays at one chunk (``chunk`` rows), whatever n is.  ``progress``: a ``tqdm.auto`` bar.
    """
    from tqdm.auto import tqdm

    dtype = np.dtype(dtype)
    if dtype not in ROW_DTYPES:
        raise ValueError(f"dtype must be float32 or float16 (opt-in, half the disk); got {dtype}")
    n, chunk = int(n), int(chunk)
    if n < 1:
        raise ValueError(f"n must be >= 1 (rows to encode); got {n}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 row; got {chunk}")
    if not callable(encode_batch):
        raise TypeError(f"encode_batch must be a callable (lo, hi) -> rows; got {type(encode_batch).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".partial")
    state_f = path.with_name(path.name + ".partial.json")
    want = {"n": n, "dtype": dtype.str, "chunk": chunk}
    state = json.loads(state_f.read_text()) if state_f.exists() and part.exists() else None
    if state is not None and {k: state.get(k) for k in want} != want:
        state = None      # a different run's leftovers: start over
    start, X = 0, None
    if state is not None:
        X = np.lib.format.open_memmap(part, mode="r+")
        if X.shape != (n, state["d"]) or X.dtype != dtype:
            X, state = None, None
        else:
            start = int(state["done"])
    first = None
    if X is None:
        hi = min(n, chunk)
        first = _check_chunk(encode_batch(0, hi), 0, hi, None, dtype)
        X = np.lib.format.open_memmap(part, mode="w+", dtype=dtype, shape=(n, first.shape[1]))
        state = {**want, "d": int(first.shape[1]), "done": 0}
    d = X.shape[1]
    with tqdm(total=n, initial=start, desc=desc, unit="row", disable=not progress, leave=False) as bar:
        for lo in range(start, n, chunk):
            hi = min(n, lo + chunk)
            rows = first if (first is not None and lo == 0) else _check_chunk(encode_batch(lo, hi), lo, hi, d, dtype)
            X[lo:hi] = rows
            first = None
            X.flush()
            state["done"] = hi
            state_f.write_text(json.dumps(state))
            bar.update(hi - lo)
    del X
    os.replace(part, path)
    state_f.unlink(missing_ok=True)
    return open_embeddings(path)
