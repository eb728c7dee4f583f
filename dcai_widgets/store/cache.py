"""Arrays cached on disk by content hash, written atomically so a crash never leaves a half file."""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np


HASH_CHUNK_BYTES = 64 << 20   # rows of a non-contiguous array are copied this many bytes at a time


def content_hash(*parts: object) -> str:
    """A short stable hash of arrays, strings, bytes and iterables of strings (dataset fingerprints)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            shape = part.shape if part.ndim else (1,)     # as np.ascontiguousarray reports a 0-d array
            h.update(f"nd:{part.dtype.str}:{shape}".encode())
            if part.dtype == object:
                h.update(repr(part.tolist()).encode())
            elif part.ndim and not part.flags.c_contiguous:
                # row chunks, hashed in order: the same digest as the whole C-ordered copy, without it
                step = max(1, HASH_CHUNK_BYTES // max(1, part[:1].nbytes))
                for lo in range(0, len(part), step):
                    h.update(np.ascontiguousarray(part[lo:lo + step]).tobytes())
            else:
                arr = np.ascontiguousarray(part)
                try:     # the buffer itself: no copy of a large (e.g. memory-mapped) array
                    h.update(memoryview(arr).cast("B"))
                except (TypeError, ValueError, BufferError):
                    h.update(arr.tobytes())
        elif isinstance(part, bytes):
            h.update(b"b:" + part)
        elif isinstance(part, str):
            h.update(b"s:" + part.encode())
        elif isinstance(part, Iterable):
            h.update(b"it:")
            for x in part:
                h.update(str(x).encode() + b"\x00")
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it (all-or-nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ArrayCache:
    """A folder of `.npy` files keyed by name; `get_or_compute` computes once and reuses after."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        p = self.path(key)
        if not p.exists():
            return None
        try:
            return np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            p.unlink(missing_ok=True)  # unreadable cache entry: drop it and recompute
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.save(buf, np.asarray(array), allow_pickle=False)
        atomic_write_bytes(self.path(key), buf.getvalue())

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        arr = self.get(key)
        if arr is None:
            arr = np.asarray(compute())
            self.put(key, arr)
        return arr
