"""Row sources that travel to workers cheaply: a memory-mapped file goes by its path, not its bytes."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MappedRows", "shareable"]


class MappedRows:
    """A read-only view of a memory-mapped (N, ...) array that pickles as (path, offset, dtype, shape).

    Pickling an ``np.memmap`` copies its whole content; this proxy lets each worker map the same file
    instead (on one machine the page cache is shared; on a cluster the file must be on storage every
    node mounts). Supports ``len``, ``shape``, ``dtype`` and row indexing/slicing.
    """

    def __init__(self, path: str, offset: int, dtype: Any, shape: tuple[int, ...]):
        self.path, self.offset, self.dtype, self.shape = str(path), int(offset), np.dtype(dtype), tuple(shape)
        self._arr: np.ndarray | None = None

    @classmethod
    def of(cls, arr: np.ndarray) -> MappedRows | None:
        """The proxy for a C-contiguous memory-mapped array backed by a file; None for anything else."""
        # the root array is the one that owns the mapping (its base is the mmap object); a slice of a
        # memmap is also an np.memmap but carries its parent's offset, so only the root's offset is true
        root = arr
        while isinstance(getattr(root, "base", None), np.ndarray):
            root = root.base
        if not isinstance(root, np.memmap) or getattr(root, "filename", None) is None:
            return None
        if not arr.flags.c_contiguous:
            return None
        # offset of arr's first byte inside the file: the root's offset plus arr's place in the root
        start = root.offset + (arr.__array_interface__["data"][0] - root.__array_interface__["data"][0])
        return cls(root.filename, start, arr.dtype, arr.shape)

    def array(self) -> np.ndarray:
        if self._arr is None:
            self._arr = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        return self._arr

    def __getstate__(self) -> dict:
        return {"path": self.path, "offset": self.offset, "dtype": self.dtype.str, "shape": self.shape}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["offset"], state["dtype"], state["shape"])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key):
        return self.array()[key]

    def __array__(self, dtype=None, copy=None):
        a = self.array()
        return a if dtype is None else a.astype(dtype)


def shareable(arr: Any) -> Any:
    """``arr`` as it should travel to workers: a :class:`MappedRows` when it is file-backed, else itself."""
    if isinstance(arr, np.ndarray):
        proxy = MappedRows.of(arr)
        if proxy is not None:
            return proxy
    return arr
