"""Propagated labels as versioned snapshots (schema 3): one row per model round, not one event per item.

A model round (a LANCET fit) used to append one event per item it labeled: N rows per round (12-15 s and
about 100 bytes per item at 900k), for labels that mostly did not change. Now a round is

- one row of ``propagated_versions`` (the history): ``members``, the items the round labeled, as a
  zlib-compressed bitmap (a few hundred bytes for "every item but the labeled ones", at most N/8 bytes);
  ``changes``, only the items whose (label, confidence) differs from their current propagated one, as a
  column blob (ids as a compressed bitmap, label codes in 1-4 bytes, raw float64 confidences: about 9
  bytes per changed item); its place among the label events
  (``seq``, drawn from the events' own counter, so "which came last" between a person's label and a
  model's is answered as before); ``model_version``, ``annotator``, ``ts``, ``n``, ``n_changed``;
- an update of ``propagated_chunks``, the current state in column blocks of ``CHUNK`` items (label code,
  confidence, latest version that labeled the item: about 9 bytes per item), rewritten in place: reading
  some items' current propagated label is an index lookup of their blocks, every item's a read of N x 9
  bytes.

So the file grows by O(changed) per round (the change blob; the blocks are rewritten in place), and a
round is one transaction (a crash never leaves half a round) of about N/CHUNK block rows. Every reader
gets the frames the events gave: ``current`` the latest round's label per item with that round's
``model_version`` and ``ts``, ``events(("propagated",))`` every item of every round again.
Label names are kept once per store (``meta['propagated_labels']``); codes index that list.
"""
from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

CHUNK = 256                       # items per block of propagated_chunks
VERSION_COLS = "version, seq, model_version, annotator, ts, n, n_changed, members, changes"
IDS_PER_QUERY = 900
_CHANGES = struct.Struct("<qBq")          # items, code width, bitmap bytes
_BLOCK = struct.Struct("<BBq")            # code width, 1 if every item has the same version, that version


# -- column blobs --------------------------------------------------------------------------------
def encode_members(ids: np.ndarray) -> bytes:
    """A set of item ids as a zlib-compressed bitmap (length prefix + ``np.packbits``)."""
    size = int(ids.max()) + 1 if len(ids) else 0
    mask = np.zeros(size, dtype=bool)
    mask[ids] = True
    return zlib.compress(struct.pack("<q", size) + np.packbits(mask).tobytes(), 1)


def decode_members(blob: bytes) -> np.ndarray:
    raw = zlib.decompress(bytes(blob))
    size = struct.unpack_from("<q", raw)[0]
    bits = np.frombuffer(raw, dtype=np.uint8, offset=8)
    return np.flatnonzero(np.unpackbits(bits, count=size)).astype(np.int64)


def _width(top: int) -> str:
    """The narrowest unsigned dtype for label codes + 1 up to ``top`` (0 means "no label")."""
    return "<u1" if top < 2**8 else "<u2" if top < 2**16 else "<u4"


def encode_changes(ids: np.ndarray, codes: np.ndarray, conf: np.ndarray) -> bytes:
    """Changed items: their ids as a compressed bitmap (``encode_members``), then label codes in the
    narrowest width and raw float64 confidences (NaN: none). No general compression: a model's
    confidences barely compress, and zlib on them took most of a round's write time."""
    w = _width(int(codes.max()) + 1 if len(codes) else 0)
    m = encode_members(ids)
    return (_CHANGES.pack(len(ids), int(w[-1]), len(m)) + m + (codes.astype(np.int64) + 1).astype(w).tobytes()
            + conf.astype("<f8").tobytes())


def decode_changes(blob: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    blob = bytes(blob)
    n, width, m = _CHANGES.unpack_from(blob)
    at = _CHANGES.size
    ids = decode_members(blob[at:at + m])
    at += m
    codes = np.frombuffer(blob, f"<u{width}", n, at).astype(np.int32) - 1
    conf = np.frombuffer(blob, "<f8", n, at + width * n).astype(np.float64)
    return ids, codes, conf


class Blocks:
    """Some blocks of the current state, decoded: ``code`` (-1: no propagated label), ``conf``,
    ``version`` per item, blocks ``chunks`` (sorted) laid end to end."""

    def __init__(self, chunks: np.ndarray, rows: Iterable[Sequence] = ()):
        self.chunks = np.asarray(chunks, dtype=np.int64)
        k = len(self.chunks)
        self.code = np.full(k * CHUNK, -1, dtype=np.int32)
        self.conf = np.full(k * CHUNK, np.nan)
        self.version = np.zeros(k * CHUNK, dtype=np.int64)
        rows = list(rows)
        if not rows:
            return
        slots = np.searchsorted(self.chunks, np.array([r[0] for r in rows], dtype=np.int64))
        by_width: dict[int, tuple[list, list]] = {}
        confs, vslots, vals = [], [], []
        for slot, (_, data) in zip(slots.tolist(), rows):
            data = bytes(data)
            width, uniform, version = _BLOCK.unpack_from(data)
            off = _BLOCK.size + width * CHUNK
            got = by_width.setdefault(width, ([], []))
            got[0].append(slot)
            got[1].append(data[_BLOCK.size:off])
            if uniform:
                vslots.append(slot)
                vals.append(version)
            else:
                self.version[slot * CHUNK:(slot + 1) * CHUNK] = np.frombuffer(data, "<i8", CHUNK, off)
                off += 8 * CHUNK
            confs.append(data[off:off + 8 * CHUNK])
        for width, (sl, parts) in by_width.items():      # decoded per width at once, not block by block
            codes = np.frombuffer(b"".join(parts), f"<u{width}").astype(np.int32).reshape(-1, CHUNK) - 1
            self.code.reshape(-1, CHUNK)[np.asarray(sl)] = codes
        if vslots:
            self.version.reshape(-1, CHUNK)[np.asarray(vslots)] = np.asarray(vals, dtype=np.int64)[:, None]
        self.conf.reshape(-1, CHUNK)[slots] = np.frombuffer(b"".join(confs), "<f8").reshape(-1, CHUNK)

    def pos(self, ids: np.ndarray) -> np.ndarray:
        k = len(self.chunks)
        if k and self.chunks[-1] - self.chunks[0] == k - 1:      # consecutive blocks: no search
            return ids - int(self.chunks[0]) * CHUNK
        return np.searchsorted(self.chunks, ids // CHUNK) * CHUNK + ids % CHUNK

    def items(self) -> np.ndarray:
        """Every item with a propagated label, sorted."""
        at = np.flatnonzero(self.code >= 0)
        return self.chunks[at // CHUNK] * CHUNK + at % CHUNK

    def encoded(self) -> list[tuple[int, int, bytes]]:
        """(chunk, latest version in it, blob) per block: a header, label codes + 1 in the narrowest width,
        the versions (one number when every item has the same one), raw float64 confidences."""
        w = _width(int(self.code.max()) + 1 if len(self.code) else 0)
        codes = (self.code.astype(np.int64) + 1).astype(w).reshape(-1, CHUNK)
        ver = self.version.reshape(-1, CHUNK)
        top, uniform = ver.max(1), (ver == ver[:, :1]).all(1)
        conf = self.conf.astype("<f8").reshape(-1, CHUNK)
        out = []
        for k, chunk in enumerate(self.chunks.tolist()):
            parts = [_BLOCK.pack(int(w[-1]), int(uniform[k]), int(ver[k, 0])), codes[k].tobytes()]
            if not uniform[k]:
                parts.append(ver[k].astype("<i8").tobytes())
            parts.append(conf[k].tobytes())
            out.append((chunk, int(top[k]), b"".join(parts)))
        return out


def _nan_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _in_parts(q: Callable[..., list], sql: str, values: list[int]) -> list:
    """``sql`` (with one ``IN ({})``) run over ``values`` in parts of IDS_PER_QUERY."""
    out: list = []
    for a in range(0, len(values), IDS_PER_QUERY):
        part = values[a:a + IDS_PER_QUERY]
        out += q(sql.format(",".join("?" * len(part))), part)
    return out


def _read_blocks(q: Callable[..., list], chunks: np.ndarray | None) -> Blocks:
    """Blocks ``chunks`` (None: all) as stored; absent ones empty."""
    if chunks is None:
        rows = q("SELECT chunk, data FROM propagated_chunks ORDER BY chunk")
        return Blocks(np.array([r[0] for r in rows], dtype=np.int64), rows)
    if len(chunks) > IDS_PER_QUERY:          # many blocks (a round over most items): one range scan
        rows = q("SELECT chunk, data FROM propagated_chunks WHERE chunk BETWEEN ? AND ?",
                 (int(chunks[0]), int(chunks[-1])))
        wanted = set(chunks.tolist())
        rows = [r for r in rows if r[0] in wanted]
    else:
        rows = _in_parts(q, "SELECT chunk, data FROM propagated_chunks WHERE chunk IN ({})", chunks.tolist())
    return Blocks(chunks, rows)


class SnapshotMixin:
    """Writes and reads of propagated labels as versions; relies on the store's transactions
    (``_write``, ``_read``, ``_read_all``, ``_next_batch``, ``_reserve_seq``, ``_already_written``)."""

    _write: Callable[..., Any]
    _read: Callable[..., list]
    _next_batch: Callable[..., int]
    _already_written: Callable[..., bool]
    _yield_to_people: Callable[[], None]

    def _read_all(self, fn: Callable[[Callable[..., list]], Any]) -> Any:
        """fn(query) with every query in one consistent read snapshot (a backend hook)."""
        raise NotImplementedError

    def _reserve_seq(self, c: Any) -> int:
        """The next number of the events' seq counter, taken for a version (a backend hook)."""
        raise NotImplementedError

    # -- writing -------------------------------------------------------------------------------
    def write_propagated(self, items: Iterable[int] | np.ndarray, labels: Iterable[str] | np.ndarray,
                         confidence: Iterable[float | None] | np.ndarray | None = None, *,
                         model_version: str | None = None, annotator: str | None = None) -> int:
        """Write one model round's labels as one version; returns its batch id (0 for none).

        Everything is checked first. The round is compared with the current labels outside any lock; its
        version row (the history keeps only the items whose label or confidence changed) is one short
        transaction, and the rewritten blocks follow in parts of about ``PART_S`` seconds each, people's
        labels going first between them (``_yield_to_people``), so a person's label never waits for the
        whole round. Rounds from several processes are written one after another. An item given twice
        keeps its last label."""
        ids = np.asarray(items if isinstance(items, np.ndarray) else list(items))
        ids = ids.astype(np.int64).reshape(-1) if ids.size else np.zeros(0, np.int64)
        if isinstance(labels, pd.Categorical):      # class indices already (Session): no string hashing
            codes, names = labels.codes.astype(np.int64), [str(x) for x in labels.categories]
        else:
            arr = np.asarray(labels if isinstance(labels, np.ndarray) else [str(x) for x in labels], dtype=object)
            codes, uniq = pd.factorize(arr.reshape(-1)) if arr.size else (np.zeros(0, np.int64), [])
            names = [str(x) for x in uniq]
        if (codes < 0).any():
            raise ValueError("labels must not be missing")
        if len(ids) != len(codes):
            raise ValueError(f"{len(ids)} items but {len(codes)} labels; give one label per item")
        if confidence is None:
            conf = np.full(len(ids), np.nan)
        else:
            raw = confidence if isinstance(confidence, np.ndarray) else \
                [np.nan if x is None else float(x) for x in confidence]
            conf = np.asarray(raw, dtype=np.float64).reshape(-1)
            if len(conf) != len(ids):
                raise ValueError(f"{len(ids)} items but {len(conf)} confidences")
        if len(ids) and ids.min() < 0:
            raise ValueError(f"item ids must be >= 0, got {int(ids.min())}")
        if not len(ids):
            return 0
        if not (ids[1:] > ids[:-1]).all():        # sorted ids, each item's last label
            last = len(ids) - 1 - np.unique(ids[::-1], return_index=True)[1]
            ids, codes, conf = ids[last], codes[last], conf[last]
        members = encode_members(ids)
        deadline = time.monotonic() + float(getattr(self, "timeout", 10.0))
        while True:
            self._yield_to_people()
            base, known, blocks = self._read_all(lambda q: self._snapshot_of(q, ids))
            g, known = self._global_codes(known, names, codes)
            at = blocks.pos(ids)
            changed = (blocks.code[at] != g) | ~_nan_equal(blocks.conf[at], conf)
            blob = encode_changes(ids[changed], g[changed], conf[changed])
            row = (model_version, annotator, len(ids), int(changed.sum()), members, blob)
            version = self._write(lambda c, b=base, k=known, r=row: self._begin_version(c, b, k, r), bulk=True)
            if version is not None:
                break
            if time.monotonic() > deadline:       # another round unfinished for too long (its process died):
                return self._write(lambda c: self._one_transaction(c, ids, names, codes, conf, members,
                                                                   model_version, annotator), bulk=True)
            time.sleep(0.05)                       # another round is being written: wait for it, then rediff
        version = abs(version)                     # negative: a retried first transaction had committed
        blocks.code[at], blocks.conf[at], blocks.version[at] = g, conf, version
        self._write_blocks(version, blocks.encoded())
        return version

    def _snapshot_of(self, q: Callable[..., list], ids: np.ndarray) -> tuple[int, list[str], Blocks]:
        """(latest version, label names, the current blocks of ``ids``) from one read snapshot."""
        top = q("SELECT COALESCE(MAX(version), 0) FROM propagated_versions")[0][0]
        row = q("SELECT value FROM meta WHERE key = 'propagated_labels'")
        ch = ids // CHUNK                                  # ids are sorted: their blocks without a sort
        return int(top), json.loads(row[0][0]) if row else [], _read_blocks(q, ch[np.r_[True, ch[1:] != ch[:-1]]])

    @staticmethod
    def _global_codes(known: list[str], names: list[str], codes: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Store-wide codes of this round's labels, and the store's names with the new ones appended."""
        known = list(known)
        index = {name: k for k, name in enumerate(known)}
        for x in names:
            if x not in index:
                index[x] = len(known)
                known.append(x)
        lut = np.array([index[x] for x in names], dtype=np.int32)
        return (lut[codes] if len(codes) else np.zeros(0, np.int32)), known

    def _begin_version(self, c: Any, base: int, known: list[str], row: tuple) -> int | None:
        """The round's first transaction: its version row (history), marked unapplied. None (nothing
        written) when another version was begun since the snapshot or is still being applied: the caller
        reads again. A negative number: this very write committed before (a retry; PostgreSQL)."""
        version = self._next_batch(c)
        if self._already_written(c, version):
            return -version
        top, busy = c.execute("SELECT COALESCE(MAX(version), 0), COUNT(CASE WHEN applied = 0 THEN 1 END) "
                              "FROM propagated_versions").fetchone()
        if int(top) != base or busy:
            return None
        c.execute("INSERT INTO meta (key, value) VALUES ('propagated_labels', ?) ON CONFLICT (key) DO UPDATE "
                  "SET value = excluded.value", (json.dumps(known),))
        c.execute(f"INSERT INTO propagated_versions ({VERSION_COLS}, applied) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                  (version, self._reserve_seq(c), row[0], row[1], time.time(), *row[2:]))
        return version

    def _write_blocks(self, version: int, encoded: list[tuple[int, int, bytes]]) -> None:
        """The round's blocks in parts that each hold the write lock about ``PART_S`` seconds, people's
        labels going first between parts (as ``append_bulk`` did); the last part marks the version applied.
        Readers meanwhile see each item either before or after the round, as with the events in parts."""
        part_s = float(getattr(self, "PART_S", 0.05))
        k, size = 0, 64
        while k < len(encoded):
            self._yield_to_people()
            part, last = encoded[k:k + size], k + size >= len(encoded)

            def put(c: Any, part: list = part, last: bool = last) -> bool:
                mine = c.execute("SELECT applied FROM propagated_versions WHERE version = ?", (version,)).fetchone()
                if mine is None or mine[0]:        # rebuilt from the history meanwhile: nothing left to do
                    return False
                c.executemany("INSERT INTO propagated_chunks (chunk, version, data) VALUES (?, ?, ?) ON CONFLICT "
                              "(chunk) DO UPDATE SET version = excluded.version, data = excluded.data", part)
                if last:
                    c.execute("UPDATE propagated_versions SET applied = 1 WHERE version = ?", (version,))
                return True

            t = time.perf_counter()
            if not self._write(put, bulk=True):
                return
            k += size
            size = max(8, min(4096, int(size * part_s / max(time.perf_counter() - t, 1e-4))))

    def _one_transaction(self, c: Any, ids: np.ndarray, names: list[str], codes: np.ndarray, conf: np.ndarray,
                         members: bytes, model_version: str | None, annotator: str | None) -> int:
        """The whole round in one transaction, after bringing unapplied versions in (a round whose
        process died mid-way); the fallback when waiting for another round took too long."""
        version = self._next_batch(c)
        if self._already_written(c, version):
            return version
        self._rebuild_propagated_if_missing(c)
        self._apply_round(c, version, ids, names, codes, conf, members, model_version, annotator)
        return version

    def _label_codes(self, c: Any, names: list[str]) -> np.ndarray:
        """Store-wide codes of ``names`` (``meta['propagated_labels']``, extended with new names)."""
        row = c.execute("SELECT value FROM meta WHERE key = 'propagated_labels'").fetchone()
        known = json.loads(row[0]) if row else []
        lut, grown = self._global_codes(known, names, np.arange(len(names)))
        if grown != known:
            c.execute("INSERT INTO meta (key, value) VALUES ('propagated_labels', ?) ON CONFLICT (key) DO UPDATE "
                      "SET value = excluded.value", (json.dumps(grown),))
        return lut

    def _apply_round(self, c: Any, version: int, ids: np.ndarray, names: list[str], codes: np.ndarray,
                     conf: np.ndarray, members: bytes, model_version: str | None, annotator: str | None,
                     seq: int | None = None, ts: float | None = None) -> int:
        """Inside a write transaction: the version row (history: changed items only) and the rewritten
        blocks of ``ids`` (sorted, unique). Returns how many items changed."""
        g = self._label_codes(c, names)[codes] if len(codes) else np.zeros(0, np.int32)
        ch = ids // CHUNK                                  # ids are sorted: their blocks without a sort
        blocks = _read_blocks(lambda sql, p=(): c.execute(sql, p).fetchall(), ch[np.r_[True, ch[1:] != ch[:-1]]])
        at = blocks.pos(ids)
        changed = (blocks.code[at] != g) | ~_nan_equal(blocks.conf[at], conf)
        blocks.code[at], blocks.conf[at], blocks.version[at] = g, conf, version
        seq = self._reserve_seq(c) if seq is None else seq
        c.execute(f"INSERT INTO propagated_versions ({VERSION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (version, seq, model_version, annotator, time.time() if ts is None else ts, len(ids),
                   int(changed.sum()), members, encode_changes(ids[changed], g[changed], conf[changed])))
        c.executemany("INSERT INTO propagated_chunks (chunk, version, data) VALUES (?, ?, ?) ON CONFLICT (chunk) "
                      "DO UPDATE SET version = excluded.version, data = excluded.data", blocks.encoded())
        return int(changed.sum())

    # -- migration and repair ------------------------------------------------------------------
    def _migrate_propagated(self, c: Any) -> int:
        """Schema 2 -> 3 inside the migrating transaction: every old batch of propagated events becomes one
        version with the same items, labels, confidences, model version, annotator, time and place among
        the events (its last event's seq); then those events leave ``events`` and ``propagated_latest``
        (derived) is dropped. Returns the versions made."""
        batches = c.execute("SELECT batch, MAX(seq), MIN(ts), MAX(model_version), MAX(annotator) FROM events "
                            "WHERE source = 'propagated' AND label IS NOT NULL GROUP BY batch ORDER BY batch").fetchall()
        for batch, seq, ts, mv, ann in batches:
            rows = c.execute("SELECT item, label, confidence FROM events WHERE source = 'propagated' AND "
                             "label IS NOT NULL AND batch = ? ORDER BY seq", (batch,)).fetchall()
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            last = len(ids) - 1 - np.unique(ids[::-1], return_index=True)[1]
            labels = np.array([r[1] for r in rows], dtype=object)[last]
            conf = np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64)[last]
            codes, names = pd.factorize(labels)
            self._apply_round(c, int(batch), ids[last], [str(x) for x in names], codes, conf,
                              encode_members(ids[last]), mv, ann, seq=int(seq), ts=float(ts))
        c.execute("DELETE FROM events WHERE source = 'propagated'")
        c.execute("DROP TABLE IF EXISTS propagated_latest")
        return len(batches)

    @staticmethod
    def _current_behind(c: Any) -> bool:
        """Whether the current blocks miss a version: one not (fully) applied, its process gone, or the
        derived rows lost."""
        want, busy = c.execute("SELECT MAX(version), COUNT(CASE WHEN applied = 0 THEN 1 END) "
                               "FROM propagated_versions").fetchone()
        have = c.execute("SELECT MAX(version) FROM propagated_chunks").fetchone()[0]
        return want is not None and (want != have or busy > 0)

    def _rebuild_propagated_if_missing(self, c: Any) -> None:
        """Refill the current blocks from the versions if they are behind them."""
        if not self._current_behind(c):
            return
        versions = c.execute(f"SELECT {VERSION_COLS} FROM propagated_versions ORDER BY version").fetchall()
        top = max((int(decode_members(r[7]).max(initial=-1)) for r in versions), default=-1)
        blocks = Blocks(np.arange(top // CHUNK + 1))
        for version, *_, members, changes in versions:
            ids, codes, conf = decode_changes(changes)
            blocks.code[ids], blocks.conf[ids] = codes, conf         # blocks 0.. laid end to end: pos = id
            blocks.version[decode_members(members)] = version
        c.execute("DELETE FROM propagated_chunks")
        c.executemany("INSERT INTO propagated_chunks (chunk, version, data) VALUES (?, ?, ?)",
                      [r for r in blocks.encoded() if r[1] > 0])
        c.execute("UPDATE propagated_versions SET applied = 1 WHERE applied = 0")

    # -- reading -------------------------------------------------------------------------------
    def _version_meta(self, versions: np.ndarray) -> dict[int, tuple]:
        """version -> (seq, model_version, annotator, ts); version rows never change, so kept once read."""
        cache = self.__dict__.setdefault("_version_cache", {})
        missing = [int(v) for v in np.unique(versions) if int(v) not in cache]
        if missing:
            for v, *rest in _in_parts(self._read, "SELECT version, seq, model_version, annotator, ts FROM "
                                                  "propagated_versions WHERE version IN ({})", missing):
                cache[int(v)] = tuple(rest)
        return cache

    def _propagated_frame(self, ids: list[int] | None) -> pd.DataFrame:
        """The current propagated label of ``ids`` (None: every item that has one), with the latest
        version that labeled each item: DataFrame seq, id, label, annotator, source, ts, confidence,
        model_version."""
        def read(q: Callable[..., list]) -> tuple[Blocks, list[str]]:
            row = q("SELECT value FROM meta WHERE key = 'propagated_labels'")
            chunks = None if ids is None else np.unique(np.asarray(ids, dtype=np.int64) // CHUNK)
            return _read_blocks(q, chunks), json.loads(row[0][0]) if row else []

        blocks, names = self._read_all(read)
        if ids is None:
            got = blocks.items()
        else:
            want = np.unique(np.asarray(ids, dtype=np.int64))
            got = want[blocks.code[blocks.pos(want)] >= 0] if len(want) else want
        at = blocks.pos(got)
        ver = blocks.version[at]
        meta = self._version_meta(ver)
        uv, inv = np.unique(ver, return_inverse=True)
        cols = [np.asarray([meta[int(v)][k] for v in uv], dtype=object)[inv] if len(uv) else np.zeros(0, object)
                for k in range(4)]
        return pd.DataFrame({"seq": cols[0].astype(np.int64), "id": got, "label": np.asarray(names, dtype=object)
                             [blocks.code[at]] if len(got) else np.zeros(0, object),
                             "annotator": cols[2], "source": "propagated", "ts": cols[3].astype(np.float64),
                             "confidence": blocks.conf[at], "model_version": cols[1]})

    def _propagated_events(self) -> pd.DataFrame:
        """Every item of every version as the events gave them: seq (the version's), id, label, annotator,
        source, ts, confidence, model_version, batch (= version), retracts (None)."""
        def read(q: Callable[..., list]) -> tuple[list, list[str]]:
            row = q("SELECT value FROM meta WHERE key = 'propagated_labels'")
            return q(f"SELECT {VERSION_COLS} FROM propagated_versions ORDER BY version"), \
                json.loads(row[0][0]) if row else []

        rows, names = self._read_all(read)
        top = max((int(decode_members(r[7]).max(initial=-1)) for r in rows), default=-1)
        code, conf = np.full(top + 1, -1, dtype=np.int32), np.full(top + 1, np.nan)
        names_arr = np.asarray(names, dtype=object)
        parts = []
        for version, seq, mv, ann, ts, _n, _nc, members, changes in rows:
            ch, cc, cf = decode_changes(changes)
            code[ch], conf[ch] = cc, cf
            ids = decode_members(members)
            if len(ids):
                parts.append(pd.DataFrame({
                    "seq": np.int64(seq), "id": ids, "label": names_arr[code[ids]], "annotator": ann,
                    "source": "propagated", "ts": float(ts), "confidence": conf[ids], "model_version": mv,
                    "batch": np.int64(version), "retracts": None}))
        cols = ["seq", "id", "label", "annotator", "source", "ts", "confidence", "model_version", "batch", "retracts"]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)

    def propagated_versions(self) -> pd.DataFrame:
        """One row per stored model round: version (its batch id), seq, model_version, annotator, ts,
        n (items it labeled), n_changed (items whose label or confidence it changed)."""
        rows = self._read("SELECT version, seq, model_version, annotator, ts, n, n_changed FROM propagated_versions "
                          "ORDER BY version")
        return pd.DataFrame(rows, columns=["version", "seq", "model_version", "annotator", "ts", "n", "n_changed"])

    def _n_propagated(self) -> int:
        rows = self._read("SELECT COALESCE(SUM(n), 0) FROM propagated_versions")
        return int(rows[0][0]) if rows else 0
