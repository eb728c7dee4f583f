"""Sharded on-disk arrays of per-sample factors (or full gradients), crash-safe, with an LRU shard cache.

Layout under the store root::

    meta.json                         model signature, layers, sample shape, dtype
    checkpoints.json                  name -> lr, order, weights file
    ckpt/<checkpoint>/weights.pt      the model weights the factors belong to
    ckpt/<checkpoint>/<sublayer>/manifest.jsonl  append-only log: mode record, one record per shard added
                                                 (file, ids, rows, bytes, checksum), drop records
    ckpt/<checkpoint>/<sublayer>/shard-000000.bin  ids, y, and x+g (factors) or full, raw and 64-byte
                                                   aligned (dtype/shape/offset in the manifest: zero-copy reads)

Every file is written to a temporary name and renamed atomically; a shard counts only once the manifest
lists it with a matching size and checksum, so a half-written shard (a crash mid-collection) is never read:
its items are reported missing and the next ``collect`` recollects them. The manifest is an append-only log
(one CRC-checked JSON line per record, appended and fsynced after the shard is in place), so it grows
linearly with the store: the JSON manifest rewritten whole for every shard grew quadratically (issue 18).
A crash mid-append leaves an unterminated last line, which is dropped at the next open (its shard is then
unlisted: deleted and recollected); a damaged complete line is an error naming the file. Stores with the
former ``manifest.json`` are read and converted on open. An id listed twice in one
sub-layer (stores written before resume skipped per sub-layer) is read once, from its first shard.

Shards are read through read-only memory maps (no copy into process memory: a cold query costs the page
cache, not an allocation plus a copy), and checked at their first read in a process with XXH3-64 (about
8x faster than the CRC32 of the first formats, which older shards keep).
"""
from __future__ import annotations

import io
import json
import mmap
import os
import threading
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .shard_writes import ShardWrites, _checksum, _write_all, choose_mode

__all__ = ["LayerShards", "ShardCache", "ShardWriter", "StoreFileError", "atomic_write", "choose_mode",
           "read_json"]

DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64}

# One reader thread maps and checksums the next shard of a query while the caller computes on the current
# one (mmap with MAP_POPULATE and XXH3 both release the GIL): the checksum stays on every first read but
# overlaps the products instead of adding to them.
_READER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metastore-reader")


def atomic_write(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` via a temp file + fsync + rename, so readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class StoreFileError(ValueError):
    """A store file exists but cannot be read (truncated or not JSON); the message says how to recover."""


def read_json(path: Path, default: Any = None, recover: str = "") -> Any:
    """JSON content of ``path`` or ``default`` when absent; a truncated or garbled file raises
    ``StoreFileError`` naming the file and ``recover`` (what the user can do about it)."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreFileError(f"MetaStore file {path} is damaged (truncated or not JSON: {e}); "
                             f"{recover or 'restore it from a backup'}") from None


MANIFEST = "manifest.jsonl"
OLD_MANIFEST = "manifest.json"


def _line(rec: dict) -> bytes:
    """One manifest record: CRC32 (hex) of the JSON, a space, the JSON, a newline."""
    body = json.dumps(rec, separators=(",", ":")).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def read_manifest(path: Path, recover: str) -> tuple[dict, int]:
    """The manifest the log at ``path`` describes, and the length of its valid part (an unterminated last
    line, a crash mid-append, is not part of it). A damaged complete line raises ``StoreFileError``."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    manifest: dict = {"mode": None, "T": None, "shards": []}
    for k, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
        try:
            crc, body = line.split(b" ", 1)
            if int(crc, 16) != zlib.crc32(body):
                raise ValueError("checksum mismatch")
            rec = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise StoreFileError(f"MetaStore file {path} is damaged (line {k}: {e}); {recover}") from None
        if "meta" in rec:
            manifest.update(rec["meta"])
        elif "add" in rec:
            manifest["shards"].append(rec["add"])
        elif "drop" in rec:
            gone = set(rec["drop"])
            manifest["shards"] = [sh for sh in manifest["shards"] if sh["file"] not in gone]
    return manifest, end


def _header(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "shards"}


def _shard_checksum(sh: dict, data) -> tuple[str, int]:
    """(kind, value) of ``data`` with the checksum ``sh`` was written with (XXH3-64, or CRC32 of old shards)."""
    kind = "xxh3" if "xxh3" in sh else "crc32"
    update, value = _checksum(kind)
    update(data)
    return kind, value()


def _shard_ok(sh: dict, data) -> bool:
    kind, v = _shard_checksum(sh, data)
    return len(data) == sh["bytes"] and v == sh[kind]


class ShardWriter:
    """One background thread that writes shards while training goes on; a bounded queue.

    At most ``max_pending`` shards wait or are being written; ``submit`` blocks beyond that, so memory stays
    bounded when the disk is slower than training. Errors stay in the returned futures: ``LayerShards``
    re-raises them at its next flush and in ``sync()``.
    """

    def __init__(self, max_pending: int = 4):
        self._ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metastore-writer")
        self._slots = threading.BoundedSemaphore(max(1, int(max_pending)))

    def submit(self, fn: Callable, *args: Any) -> Future:
        self._slots.acquire()
        try:
            fut = self._ex.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda _: self._slots.release())
        return fut

    def shutdown(self, wait: bool = True) -> None:
        self._ex.shutdown(wait=wait)


class ShardCache:
    """LRU cache of loaded shards, bounded in bytes."""

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = int(max_bytes)
        self._d: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: str):
        if key in self._d:
            self._d.move_to_end(key)
            self.hits += 1
            return self._d[key]
        self.misses += 1
        return None

    def put(self, key: str, value: dict[str, np.ndarray]) -> None:
        size = sum(v.nbytes for v in value.values())
        if size > self.max_bytes:
            return
        self._d[key] = value
        self._sizes[key] = size
        while sum(self._sizes.values()) > self.max_bytes:
            old, _ = self._d.popitem(last=False)
            self._sizes.pop(old)

    def drop(self, prefix: str) -> None:
        for k in [k for k in self._d if k.startswith(prefix)]:
            self._d.pop(k)
            self._sizes.pop(k)

    def __contains__(self, key: str) -> bool:
        return key in self._d

    def clear(self) -> None:
        self._d.clear()
        self._sizes.clear()


class LayerShards(ShardWrites):
    """The shards of one (checkpoint, sub-layer): append rows, look up ids, iterate blocks."""

    def __init__(self, root: Path, cache: ShardCache, dtype: str = "float32", shard_bytes: int = 16 << 20,
                 storage: str = "auto", writer: Any = None, check_reads: bool = True):
        self.root = Path(root)
        self.check_reads = check_reads   # False: sizes are checked at open, checksums only by verify_all()
        self.storage = storage
        self.writer = writer          # a ShardWriter: shards are written off the training thread
        self._pending: list = []
        self._ahead: dict[int, Future] = {}    # shards ``prefetch`` started mapping + checking
        self._lock = threading.Lock()
        self.cache = cache
        self.dtype = DTYPES[dtype]
        self.shard_bytes = shard_bytes
        self.manifest_path = self.root / MANIFEST
        self.manifest = self._load_manifest(f"delete the folder {self.root} (this sub-layer's factors of this "
                                            "checkpoint) and run collect() again for the checkpoint: the missing "
                                            "items are recollected, nothing else is touched")
        self._ix: tuple | None = None
        self._verify_files()
        self._buf: list[dict[str, np.ndarray]] = []
        self._buf_rows = 0
        listed = [int(sh["file"][6:12]) for sh in self.manifest["shards"] if sh["file"][6:12].isdigit()]
        self._next_shard = max(listed, default=-1) + 1      # shard names are never reused
        self._build_index()

    # -- integrity ----------------------------------------------------------------------------
    def _verify_files(self) -> None:
        """Drop manifest entries whose file is missing or of the wrong size; delete orphans and temps."""
        good, bad = [], []
        for sh in self.manifest["shards"]:
            p = self.root / sh["file"]
            if p.exists() and p.stat().st_size == sh["bytes"]:
                good.append(sh)
            else:
                bad.append(sh["file"])
        listed = {sh["file"] for sh in good}
        if self.root.exists():
            for p in self.root.iterdir():
                if p.name.startswith("shard-") and (p.name.endswith(".tmp") or p.name not in listed):
                    bad.append(p.name)
                    p.unlink()
        if bad:
            warnings.warn(f"MetaStore: {len(set(bad))} incomplete or unlisted shard(s) in {self.root} were "
                          "discarded (crash during collection?); their items will be recollected", stacklevel=3)
            self.manifest["shards"] = good
            self._save_manifest()

    def _load_manifest(self, recover: str) -> dict:
        """The manifest log (a torn last line cut off), or the former JSON manifest converted to a log."""
        old = self.root / OLD_MANIFEST
        if self.manifest_path.exists():
            manifest, valid = read_manifest(self.manifest_path, recover)
            if valid < self.manifest_path.stat().st_size:
                with open(self.manifest_path, "r+b") as f:   # a crash mid-append: the record never counted
                    f.truncate(valid)
                    os.fsync(f.fileno())
            self._logged = _header(manifest)
            old.unlink(missing_ok=True)          # a conversion that crashed before removing it
            return manifest
        manifest = read_json(old, {"mode": None, "T": None, "shards": []}, recover=recover)
        self._logged: dict | None = None
        if old.exists():
            self.manifest = manifest
            try:
                self._save_manifest()
                old.unlink()
            except OSError:                      # a folder that cannot be written: read the old one as it is
                pass
        return manifest

    def _save_manifest(self) -> None:
        """Rewrite the whole log (atomic): for conversions and discards, never per shard."""
        head = _header(self.manifest)
        atomic_write(self.manifest_path, _line({"meta": head}) + b"".join(_line({"add": sh})
                                                                         for sh in self.manifest["shards"]))
        self._logged = head

    def _append(self, *recs: dict) -> None:
        """Append records to the log and fsync (the mode record first when it changed)."""
        head = _header(self.manifest)
        lines = ([] if head == self._logged else [_line({"meta": head})]) + [_line(r) for r in recs]
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.manifest_path, "ab") as f:
            _write_all(f, b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
        self._logged = head

    def _build_index(self) -> None:
        """Forget the id index; it is rebuilt at its next use (not once per shard written: that was
        quadratic in the shards too)."""
        self._ix = None

    def _index(self) -> tuple:
        ix = self._ix
        if ix is not None:
            return ix
        with self._lock:
            shards = list(self.manifest["shards"])
        ids, shard, row = [], [], []
        for si, sh in enumerate(shards):
            a = np.asarray(sh["ids"], dtype=np.int64)
            ids.append(a)
            shard.append(np.full(len(a), si, np.int64))
            row.append(np.arange(len(a), dtype=np.int64))
        if ids:
            ids_a = np.concatenate(ids)
            order = np.argsort(ids_a, kind="stable")
            sorted_ids = ids_a[order]
            first = np.ones(len(order), bool)      # an id stored twice counts once (its first shard)
            first[1:] = sorted_ids[1:] != sorted_ids[:-1]
            order = order[first]
            ix = (sorted_ids[first], np.concatenate(shard)[order], np.concatenate(row)[order], int((~first).sum()))
        else:
            empty = np.zeros(0, np.int64)
            ix = (empty, empty, empty, 0)
        self._ix = ix
        return ix

    @property
    def _ids(self) -> np.ndarray:
        return self._index()[0]

    @property
    def _shard(self) -> np.ndarray:
        return self._index()[1]

    @property
    def _row(self) -> np.ndarray:
        return self._index()[2]

    @property
    def duplicates(self) -> int:
        """Ids stored twice (by stores written before resume skipped per sub-layer); read once."""
        return self._index()[3]

    # -- read ---------------------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        """Sorted ids stored here."""
        self.sync()
        return self._ids

    def nbytes_on_disk(self) -> int:
        self.sync()
        return sum(sh["bytes"] for sh in self.manifest["shards"])

    def _map_checked(self, sh: dict) -> tuple[Any, bool]:
        """(read-only memory map of the shard, whether its size and checksum match the manifest); touches no
        shared state, so it may run on the reader thread."""
        # the checksum's own page faults map the pages (with fault-around, 25 vs 29 ms for 246 MB here); without
        # it MAP_POPULATE maps them at once instead of one fault per page in the products
        flags = mmap.MAP_SHARED | (0 if self.check_reads else mmap.MAP_POPULATE)
        with open(self.root / sh["file"], "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ, flags=flags) if size else b""
        return data, len(data) == sh["bytes"] and (not self.check_reads or _shard_ok(sh, data))

    def _prefetch(self, si: int) -> Future | None:
        """Start mapping + checking shard ``si`` on the reader thread (None when it is cached already)."""
        if si in self._ahead:
            return self._ahead.pop(si)
        sh = self.manifest["shards"][si]
        if f"{self.root}/{sh['file']}" in self.cache:
            return None
        return _READER.submit(self._map_checked, sh)

    def prefetch(self, ids: np.ndarray | None = None) -> None:
        """Start mapping + checking the first shard ``blocks(ids)`` will read, so that a query's next
        checkpoint or sub-layer is ready when the current one's products end."""
        self.sync()
        if not self.manifest["shards"]:
            return
        if ids is None:
            si = 0
        else:
            loc = np.searchsorted(self._ids, np.asarray(ids, np.int64))
            if len(loc) == 0 or len(self._ids) == 0:
                return
            si = int(self._shard[np.clip(loc, 0, len(self._ids) - 1)].min())
        if si not in self._ahead:
            f = self._prefetch(si)
            if f is not None:
                self._ahead[si] = f

    def load_shard(self, si: int, mapped: Future | None = None) -> dict[str, np.ndarray]:
        """One shard's arrays (read-only views of a memory map), checked against the manifest's checksum at
        the first read in this process (then kept in the LRU cache); ``mapped``: its ``_prefetch``."""
        self.sync()
        sh = self.manifest["shards"][si]
        key = f"{self.root}/{sh['file']}"
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        data, ok = mapped.result() if mapped is not None else self._map_checked(sh)
        if not ok:
            self._discard([sh["file"]])
            raise OSError(f"shard {self.root / sh['file']} was corrupt (size/checksum mismatch with its manifest) and "
                          f"has been discarded without being read; its {sh['rows']} items are now missing: "
                          "run collect() again for this checkpoint to recollect them")
        if "arrays" in sh:
            arrays = {k: np.frombuffer(data, dtype=np.dtype(dt), count=int(np.prod(shape)), offset=off).reshape(shape)
                      for k, (dt, shape, off) in sh["arrays"].items()}
        else:   # npz shards of the first format
            with np.load(io.BytesIO(bytes(data))) as z:
                arrays = {k: z[k] for k in z.files}
        self.cache.put(key, arrays)
        return arrays

    def verify_all(self) -> list[str]:
        """Check every shard's checksum; drop bad ones from the manifest (so they are recollected)."""
        self.sync()
        bad = []
        for sh in list(self.manifest["shards"]):
            p = self.root / sh["file"]
            data = p.read_bytes() if p.exists() else b""
            if not _shard_ok(sh, data):
                bad.append(sh["file"])
        self._discard(bad)
        return bad

    def _discard(self, files: list[str]) -> None:
        if not files:
            return
        self.manifest["shards"] = [s for s in self.manifest["shards"] if s["file"] not in files]
        self._append({"drop": list(files)})          # listed as gone before the files go
        for f in files:
            (self.root / f).unlink(missing_ok=True)
        self._ahead.clear()
        self._build_index()
        self.cache.drop(str(self.root))

    def missing(self, ids: np.ndarray) -> np.ndarray:
        """Those of ``ids`` not stored here."""
        self.sync()
        ids = np.asarray(ids, np.int64)
        return ids[~np.isin(ids, self._ids)]

    def blocks(self, ids: np.ndarray | None = None,
               then: Callable[[], None] | None = None) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Yield (positions into ``ids``, arrays of those rows) shard by shard; all stored ids if None.
        ``then`` is called as the last shard is handed out (to ``prefetch`` what the caller reads next)."""
        self.sync()
        if ids is None:
            start = 0
            shards = self.manifest["shards"]
            nxt = self._prefetch(0) if shards else None
            for si, sh in enumerate(shards):
                cur, nxt = nxt, (self._prefetch(si + 1) if si + 1 < len(shards) else None)
                if si + 1 == len(shards) and then is not None:
                    then()
                arr = self.load_shard(si, cur)
                n = sh["rows"]
                yield np.arange(start, start + n), arr
                start += n
            return
        ids = np.asarray(ids, np.int64)
        loc = np.searchsorted(self._ids, ids)
        loc = np.clip(loc, 0, max(len(self._ids) - 1, 0))
        if len(self._ids) == 0 or not np.all(self._ids[loc] == ids):
            raise KeyError("ids not stored")
        shard, row = self._shard[loc], self._row[loc]
        order = [int(si) for si in np.unique(shard)]
        nxt = self._prefetch(order[0]) if order else None
        for k, si in enumerate(order):
            cur, nxt = nxt, (self._prefetch(order[k + 1]) if k + 1 < len(order) else None)
            if k + 1 == len(order) and then is not None:
                then()
            pos = np.nonzero(shard == si)[0]
            arr = self.load_shard(si, cur)
            r = row[pos]
            if len(r) == len(arr["ids"]) and np.array_equal(r, np.arange(len(r))):
                yield pos, arr      # the whole shard in order: no copy
            else:
                yield pos, {k: v[r] for k, v in arr.items()}

    def labels(self) -> dict[int, float]:
        """id -> label stored with the item at collection (NaN when unknown), from the manifest alone."""
        self.sync()
        out: dict[int, float] = {}
        for sh in self.manifest["shards"]:
            ys = sh.get("y")
            if ys is None:      # older manifest: read the shard
                arr = self.load_shard(self.manifest["shards"].index(sh))
                ys = arr["y"].tolist()
            out.update(zip(sh["ids"], ys))
        return out

    def all_ids_in_order(self) -> np.ndarray:
        """Ids in shard order (matching ``blocks(None)`` positions)."""
        self.sync()
        if not self.manifest["shards"]:
            return np.zeros(0, np.int64)
        return np.concatenate([np.asarray(sh["ids"], np.int64) for sh in self.manifest["shards"]])
