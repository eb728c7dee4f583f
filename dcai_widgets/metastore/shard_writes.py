"""Writing a sub-layer's shards: buffer batches of factors (or full gradients), write each shard once.

A mixin of :class:`~dcai_widgets.metastore.storage.LayerShards` (the crash-safety rules are in that
module's docstring): a shard is streamed key by key to a temporary file with its XXH3-64, fsynced and
renamed, and only then listed in the manifest log, so a crash mid-write leaves nothing that is read.
The cost model (``choose_mode``) stores the factors (Zhang, WPI 2023, Part III) unless the full gradient
is smaller. Writes may run on a ``ShardWriter`` thread, off the training loop.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

__all__ = ["ShardWrites", "choose_mode"]


def _write_all(f: Any, data: memoryview | bytes) -> None:
    """Write every byte (a raw file may accept fewer than asked)."""
    mv = memoryview(data)
    while len(mv):
        n = f.write(mv)
        mv = mv[n:]


def _checksum(kind: str):
    """A running checksum object with ``update(bytes)`` and ``value()`` of the given kind."""
    if kind == "xxh3":
        h = xxhash.xxh3_64()
        return h.update, h.intdigest

    state = [0]

    def update(b) -> None:
        state[0] = zlib.crc32(b, state[0])
    return update, lambda: state[0]


def choose_mode(T: int, a: int, b: int) -> str:
    """Cost model: store factors (T*(a+b) numbers) unless the full gradient (a*b numbers) is smaller."""
    return "factors" if T * (a + b) <= a * b else "full"


class ShardWrites:
    """The write half of ``LayerShards``. The host provides ``root``, ``manifest``, ``storage``,
    ``dtype``, ``shard_bytes``, ``writer``, ``_buf``/``_buf_rows``, ``_pending``, ``_next_shard``,
    ``_lock``, ``_append(record)`` and ``_build_index()``."""

    # -- write --------------------------------------------------------------------------------
    @property
    def mode(self) -> str | None:
        return self.manifest["mode"]

    def set_mode(self, T: int, a: int, b: int) -> str:
        """Fix (on the first batch) or check the positions per sample; returns the storage mode."""
        if self.manifest["mode"] is None:
            self.manifest["mode"] = choose_mode(T, a, b) if self.storage == "auto" else self.storage
            self.manifest["T"] = int(T)
            self.manifest["a"], self.manifest["b"] = int(a), int(b)
        elif self.manifest["T"] != T:
            raise ValueError(f"{self.root.name}: {T} positions per sample but earlier shards have "
                             f"{self.manifest['T']}; all samples must share one input shape")
        return self.manifest["mode"]

    def _rec(self, ids: np.ndarray, y: np.ndarray | None, B: int) -> dict[str, np.ndarray]:
        rec = {"ids": np.asarray(ids, np.int64).reshape(-1)}
        rec["y"] = (np.asarray(y, np.float64).reshape(B, -1)[:, 0] if y is not None and np.size(y) == B
                    else np.full(B, np.nan))
        return rec

    def _tdtype(self):
        import torch
        return {np.float16: torch.float16, np.float32: torch.float32, np.float64: torch.float64}[self.dtype]

    def append(self, ids: np.ndarray, y: np.ndarray | None, xs, gs, bias: bool = False) -> None:
        """Buffer a batch of factors (B,T,a), (B,T,b) (torch or numpy); stored as factors or full per the cost model.

        ``bias=True`` means ``xs`` lacks the bias column of ones, which is added here (cheaply for full).
        """
        import torch

        xs = torch.as_tensor(xs).detach()
        gs = torch.as_tensor(gs).detach()
        B, T, a = xs.shape
        mode = self.set_mode(T, a + int(bias), gs.shape[2])
        rec = self._rec(ids, y, B)
        tdt = self._tdtype()
        if mode == "factors":
            if bias:
                xs = torch.cat([xs, xs.new_ones(B, T, 1)], 2)
            rec["x"] = xs.to("cpu", tdt).numpy()
            rec["g"] = gs.to("cpu", tdt).numpy()
            self._push(rec)
        else:  # full gradient: batched matmul (sum over positions of g x^T)
            full = torch.bmm(gs.transpose(1, 2), xs)
            if bias:
                full = torch.cat([full, gs.sum(1)[:, :, None]], 2)
            self.append_full(ids, y, full, T)

    def append_full(self, ids: np.ndarray, y: np.ndarray | None, full, T: int) -> None:
        """Buffer a batch of full per-sample gradients (B, b, a), bias column last (the mode must be full)."""
        import torch

        full = torch.as_tensor(full).detach()
        B, b, a = full.shape
        if self.set_mode(T, a, b) != "full":
            raise ValueError(f"{self.root.name}: stores factors, not full gradients")
        rec = self._rec(ids, y, B)
        rec["full"] = full.reshape(B, -1).to("cpu", self._tdtype()).numpy()
        self._push(rec)

    def _push(self, rec: dict[str, np.ndarray]) -> None:
        self._buf.append(rec)
        self._buf_rows += len(rec["ids"])
        row_bytes = sum(v[0].nbytes for k, v in rec.items() if k not in ("ids", "y") and len(v))
        if self._buf_rows * row_bytes >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows as one shard (atomic), then list it in the manifest (atomic).

        With a writer this returns at once (after re-raising any earlier background write error);
        ``sync()`` waits for the writes (reads do so themselves).
        """
        if self.writer is not None:
            self._raise_done()
        if not self._buf:
            return
        recs = self._buf
        self._buf, self._buf_rows = [], 0
        name = f"shard-{self._next_shard:06d}.bin"
        self._next_shard += 1
        if self.writer is None:
            self._write_shard(name, recs)
        else:
            self._pending.append(self.writer.submit(self._write_shard, name, recs))

    def _raise_done(self) -> None:
        """Re-raise the error of a finished background write (the first one), forgetting finished writes."""
        done = [f for f in self._pending if f.done()]
        if done:
            self._pending = [f for f in self._pending if not f.done()]
            for f in done:
                f.result()

    def _write_shard(self, name: str, recs: list[dict[str, np.ndarray]]) -> None:
        """Stream the buffered batches into ``name`` key by key (no concatenated copy), CRC as it goes;
        temp file + fsync + rename, then the manifest lists it. Same layout as one concatenated array per key."""
        rows = sum(len(r["ids"]) for r in recs)
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(name + ".tmp")
        layout: dict = {}
        try:
            off, digest = self._stream(tmp, recs, rows, layout)
        except Exception:          # e.g. disk full: leave no temp file behind (a killed process may; it is
            tmp.unlink(missing_ok=True)   # discarded when the store is next opened)
            raise
        os.replace(tmp, path)
        ids = np.concatenate([r["ids"] for r in recs])
        ys = np.concatenate([r["y"] for r in recs])
        entry = {"file": name, "ids": ids.tolist(), "rows": rows, "y": ys.tolist(), "arrays": layout, "bytes": off,
                 "xxh3": digest}
        with self._lock:
            self._append({"add": entry})
            self.manifest["shards"].append(entry)
            self._build_index()

    def _stream(self, tmp: Path, recs: list[dict[str, np.ndarray]], rows: int, layout: dict) -> tuple[int, int]:
        """Write the batches to ``tmp`` (fsynced); returns (bytes, XXH3-64) and fills ``layout``."""
        off = 0
        update, value = _checksum("xxh3")
        with open(tmp, "wb", buffering=0) as f:
            for k, first in recs[0].items():
                pad = (-off) % 64
                if pad:
                    z = bytes(pad)
                    _write_all(f, z)
                    update(z)
                    off += pad
                layout[k] = [first.dtype.str, [rows, *first.shape[1:]], off]
                for r in recs:
                    a = r[k]
                    if a.dtype != first.dtype or a.shape[1:] != first.shape[1:]:
                        raise ValueError(f"{self.root.name}: batch arrays {k!r} of different dtype/shape in one shard")
                    if not a.flags.c_contiguous:
                        a = np.ascontiguousarray(a)
                    mv = memoryview(a).cast("B") if a.nbytes else b""
                    _write_all(f, mv)
                    update(mv)
                    off += a.nbytes
            f.flush()
            os.fsync(f.fileno())
        return off, value()

    def sync(self) -> None:
        """Wait for background shard writes (re-raising their errors)."""
        pending, self._pending = self._pending, []
        err = None
        for f in pending:      # wait for all of them, then raise the first error
            try:
                f.result()
            except BaseException as e:  # noqa: BLE001
                err = err or e
        if err is not None:
            raise err
