"""Session: the one shared state of a labeling project.

It holds the items, their embeddings (cached on disk by content hash), the FAISS index, the 2-D map,
the persistent LabelStore and the models, and it emits typed events ("labels", "model", "exclusions";
see ``events.py``) that panels and engines subscribe to. Item ids are positions 0..N-1. What engines and
panels may rely on is written down in ``protocols.py`` (``EngineSession``, ``PanelSession``).
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import events as ev
from ._validate import (
    Positions,
    ambiguous_numbers,
    check_classes,
    check_embeddings,
    check_ids,
    to_class_indices,
)
from .data.items import ItemSet
from .data.sources import SessionSources
from .protocols import LabelStoreLike, missing_members
from .store import ArrayCache, LabelStore, content_hash

log = logging.getLogger(__name__)

HUMAN = ("human", "review", "import")
EMBED_MEMMAP_ROWS = 500_000   # from this many items, encoder output goes to a memory-mapped file (see embeddings)
EVENTS = tuple(ev.EVENT_TYPES)   # the built-in events; events.register_event adds more


@dataclass(frozen=True)
class LabelCounts:
    """The numbers panels show about labels, defined once (``Session.counts()``).

    items: N. labeled: items with a current human, review or import label (review wins over human/import,
    as in ``Session.labeled()``). by_source: those per source of the current label. by_class: those per
    class (every class listed, 0 for none). by_annotator: those per annotator ("" for anonymous).
    propagated: items whose only label is a model's propagated one. unlabeled: items - labeled -
    propagated. excluded: items currently kept out of training (labeled or not).
    """

    items: int
    labeled: int
    by_source: dict[str, int]
    by_class: dict[str, int]
    by_annotator: dict[str, int]
    propagated: int
    unlabeled: int
    excluded: int

    @property
    def classes_without_labels(self) -> list[str]:
        """Classes with no human/review/import label yet (what a status line warns about)."""
        return [c for c, n in self.by_class.items() if n == 0]


class TemporaryStoreWarning(UserWarning):
    """Labels are going to a temporary file that is deleted when the session ends."""


def default_cache_root() -> Path:
    """Where embeddings, indexes and maps are cached: $DCAI_WIDGETS_CACHE or ~/.cache/dcai-widgets."""
    env = os.environ.get("DCAI_WIDGETS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dcai-widgets"


def open_label_store(store: str | os.PathLike | LabelStoreLike) -> LabelStoreLike:
    """A label store from a path or URL (``store.open_store`` where the store package has it: a
    ``postgresql://`` URL gives the PostgreSQL backend), or a store object passed through after checking
    that it has what the Session calls (``protocols.LabelStoreLike``)."""
    if isinstance(store, (str, os.PathLike)):
        from . import store as store_pkg

        opener = getattr(store_pkg, "open_store", None)
        return opener(store) if opener is not None else LabelStore(store)
    missing = missing_members(store, LabelStoreLike)
    if missing:
        raise TypeError(f"store must be a path, a postgresql:// URL or a label store; {type(store).__name__} "
                        f"lacks {missing}")
    return store


class Session(SessionSources):
    """Items + embeddings + neighbours + map + labels + models, shared by every panel and engine."""

    def __init__(self, items: ItemSet, classes: Sequence[str], *, y_true=None, embeddings=None,
                 encoder: Any = None, store: str | os.PathLike | LabelStoreLike | None = None,
                 cache_dir: str | os.PathLike | None = None, metric: str = "l2",
                 annotator: str | None = None, map_neighbors: int = 15, warn_temp_store: bool = True,
                 embedding_dtype: str = "float32", executor: Any = None):
        if not isinstance(items, ItemSet):
            raise TypeError(f"items must be an ItemSet, got {type(items).__name__}")
        n = len(items)
        if n == 0:
            raise ValueError("the dataset is empty; a session needs at least one item")
        self.items = items
        self.classes = check_classes(classes)
        self.y_true = None if y_true is None else self._check_y(y_true, n)
        self.metric = metric
        self.annotator = annotator
        self.map_neighbors = int(map_neighbors)
        if np.dtype(embedding_dtype) not in (np.float32, np.float16):
            raise ValueError(f"embedding_dtype must be 'float32' or 'float16'; got {embedding_dtype!r}")
        self.embedding_dtype = np.dtype(embedding_dtype).name
        self._embeddings = None if embeddings is None else check_embeddings(embeddings, n)
        from .embed.encoders import resolve

        self.encoder = None if self._embeddings is not None else resolve(encoder, items)
        # where embedding and kNN building run: None/"local" here, "ray" / "ray://host:port" on Ray
        self.executor = executor
        if executor is not None and getattr(self.encoder, "executor", "n/a") is None:
            self.encoder.executor = executor          # a CallableEncoder runs its batches there too
        self.fingerprint = items.fingerprint()
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
        self.cache_dir = root / self.fingerprint[:20]
        self.cache = ArrayCache(self.cache_dir)
        self._tmpdir = None
        if store is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="dcai-widgets-")
            store = Path(self._tmpdir.name) / "labels.db"
            if warn_temp_store:
                import warnings

                warnings.warn("no store= given: labels go to a temporary file that is deleted with this "
                              "session; pass store='project.db' to keep them", TemporaryStoreWarning,
                              stacklevel=3)
        self.store = open_label_store(store)
        self.store.bind(self.fingerprint, n, self.classes)
        self.models: dict[str, Any] = {}
        self._handlers: dict[str, list[Callable]] = defaultdict(list)
        self._lock = threading.RLock()
        self._index = None
        self._map = None
        self._knn_tables: dict[int, np.ndarray] = {}
        self._emb_key = None

    def _check_y(self, y, n: int) -> np.ndarray:
        """Known labels as class positions (-1 = unknown): names, or positions where they cannot be
        mistaken for names (see ``_validate.ambiguous_numbers``), or ``Positions(...)`` from a loader."""
        explicit = isinstance(y, Positions)
        y = y.values if explicit else np.asarray(y)
        if y.shape != (n,):
            raise ValueError(f"y_true must have shape ({n},) like the items, got {y.shape}")
        clash = [] if explicit else ambiguous_numbers(self.classes)
        if clash and y.dtype.kind in "iuf":
            raise ValueError(f"y_true holds numbers but the class names {self.classes} look like numbers "
                             f"({clash[:5]} are not their own positions), so a number could be a position or a "
                             "name. Give y_true as class names (strings), e.g. np.asarray(classes)[positions]")
        if y.dtype.kind in "iu":
            if ((y < -1) | (y >= len(self.classes))).any():
                raise ValueError(f"y_true has class indices outside 0..{len(self.classes) - 1} (-1 = unknown)")
            return y.astype(np.int64)
        return to_class_indices(list(y), self.classes, n, name="y_true")

    # -- arrays --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    @property
    def embeddings(self) -> np.ndarray:
        """(N, d) float32 embeddings, computed once by the encoder and cached on disk.

        A memory-mapped matrix given as ``embeddings=`` (an ``np.memmap`` or a ``.npy`` path; float32, or
        float16 where chosen) stays a memory map.  From ``EMBED_MEMMAP_ROWS`` items up, an encoder that
        encodes batches (``encode_range``) and has a cache key writes its output in chunks to a
        memory-mapped file in the cache (``embed.memmap.write_embeddings``, ``embedding_dtype``), so the
        matrix never sits in RAM."""
        with self._lock:
            if self._embeddings is None:
                enc = self.encoder
                if enc.key is not None and len(self) >= EMBED_MEMMAP_ROWS and hasattr(enc, "encode_range"):
                    from .distributed.executor import is_local
                    from .embed.memmap import EMBED_CHUNK, open_embeddings, write_embeddings

                    path = self.cache_dir / f"emb-{enc.key}-{np.dtype(self.embedding_dtype).name}.npy"
                    try:
                        X = open_embeddings(path)
                    except (FileNotFoundError, ValueError):
                        feed = lambda lo, hi: enc.encode_range(self.items, lo, hi)
                        if not is_local(getattr(enc, "executor", None)):   # chunks encoded on Ray actors
                            from .distributed.embed import RangeFeed

                            feed = RangeFeed(enc, self.items, enc.executor, EMBED_CHUNK)
                        X = write_embeddings(feed, len(self), path, dtype=self.embedding_dtype, chunk=EMBED_CHUNK)
                elif enc.key is None:
                    X = enc.encode(self.items)
                else:
                    X = self.cache.get_or_compute(f"emb-{enc.key}", lambda: enc.encode(self.items))
                self._embeddings = check_embeddings(X, len(self), name="encoder output")
            return self._embeddings

    @property
    def has_embeddings(self) -> bool:
        return self._embeddings is not None or self.encoder is not None

    def _embedding_key(self) -> str:
        if self._emb_key is None:
            key = getattr(self.encoder, "key", None)
            self._emb_key = key or content_hash(self.embeddings)[:16]
        return self._emb_key

    @property
    def index(self):
        """The FAISS NeighborIndex over the embeddings; saved beside them and reopened, not rebuilt."""
        from .neighbors import NeighborIndex

        with self._lock:
            if self._index is None:
                X = self.embeddings
                path = self.cache_dir / f"index-{self._embedding_key()}-{self.metric}.faiss"
                try:
                    self._index = NeighborIndex.load(path, X)
                except (FileNotFoundError, ValueError, RuntimeError):
                    self._index = NeighborIndex(metric=self.metric).fit(X)
                    try:
                        self._index.save(path)
                    except OSError as e:  # a read-only cache must not stop the session
                        log.warning("could not save the index to %s: %s", path, e)
            return self._index

    def neighbors(self, ids_or_vectors, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """k nearest neighbours of item ids (the item itself excluded) or of query vectors."""
        arr = np.asarray(ids_or_vectors)
        if arr.dtype.kind == "f" and arr.ndim >= 1 and (arr.ndim == 2 or arr.shape[0] == self.embeddings.shape[1]):
            return self.index.search(arr, k)
        ids = check_ids(ids_or_vectors, len(self))
        return self.index.search_ids(ids, k)

    def knn_table(self, k: int) -> np.ndarray:
        """(N, k) int32: each item's k nearest other items (``NeighborIndex.knn_table``); computed once
        per embeddings, metric and k, cached on disk beside the index (SEALS' ``neighbors="graph"``)."""
        k = int(k)
        with self._lock:
            tables = self._knn_tables
            if k not in tables:
                key = f"knn-{self._embedding_key()}-{self.metric}-k{k}"
                table = self.cache.get_or_compute(key, lambda: self.index.knn_table(k, executor=self.executor))
                if table.shape != (len(self), k) or table.dtype.kind not in "iu":   # a stale or foreign file
                    table = self.index.knn_table(k, executor=self.executor)
                    self.cache.put(key, table)
                tables[k] = table
            return tables[k]

    @property
    def map(self) -> np.ndarray:
        """(N, 2) map (t-SNE for small sets, else UMAP on the FAISS kNN graph); computed once, cached on disk."""
        with self._lock:
            if self._map is None:
                k = min(self.map_neighbors, len(self) - 1)
                key = f"map-{self._embedding_key()}-{self.metric}-k{k}"
                self._map = self.cache.get_or_compute(key, lambda: self._compute_map(k)).astype(np.float32)
            return self._map

    def _compute_map(self, k: int) -> np.ndarray:
        from tqdm.auto import tqdm

        from .mapping import project_2d

        # PCA / t-SNE / UMAP on the FAISS kNN graph by size (see dcai_widgets.mapping)
        with tqdm(total=1, desc="map", leave=False, disable=len(self) < 5000) as bar:
            graph = lambda kk: self.index.knn_graph(kk, executor=self.executor)
            emb = project_2d(self.embeddings, graph, k=k, metric=self.metric,
                             seed=0 if len(self) <= 20_000 else None)
            bar.update(1)
        return emb

    # -- labels --------------------------------------------------------------------------------
    def label(self, ids, labels, annotator: str | None = None, source: str = "human", *,
              claimed: bool = False) -> int:
        """Record labels for items (class names or indices); committed to disk before this returns.

        ``claimed=True`` (a team page labeling items it claimed): if another annotator now holds the
        claim on one of them (this one's lease ran out), nothing is written and the store's
        ``ClaimLostError`` names the holder.

        Where class names look like numbers but are not their positions (``['1', '2', '3']``) a number is
        refused (it could be either): pass names, ``self.classes[i]`` for position ``i``."""
        if source == "propagated":
            raise ValueError("use set_propagated(...) for model labels; label() is for people")
        ids = check_ids(ids, len(self))
        if len(ids) == 0:
            return 0
        idx = to_class_indices(labels, self.classes, len(ids))
        names = [self.classes[i] for i in idx]
        annotator = annotator if annotator is not None else self.annotator
        if annotator is not None and not isinstance(annotator, str):
            raise TypeError(f"annotator must be a string, got {type(annotator).__name__}")
        batch = self.store.append(ids, names, annotator=annotator, source=source, claimed=bool(claimed))
        self.emit("labels", ids=ids.tolist(), labels=names, source=source, annotator=annotator)
        return batch

    def undo(self, annotator: str | None = None) -> pd.DataFrame | None:
        """Retract the annotator's latest batch of human/review labels, whatever panel wrote it (a bulk
        label is one batch); returns what was undone (DataFrame id, label, annotator, source, ts) or None.

        ``annotator`` defaults to the session's ``annotator``; with neither, the latest batch of anyone.
        Emits a "labels" event with ``source="undo"``, the affected ids and each item's label after the
        retraction (an earlier label comes back; None where none is left), so every view can update."""
        who = annotator if annotator is not None else self.annotator
        if who is not None and not isinstance(who, str):
            raise TypeError(f"annotator must be a string, got {type(who).__name__}")
        undone = self.store.undo(annotator=who)
        if undone.empty:
            return None
        ids = [int(i) for i in undone["id"]]
        now = self.store.current(HUMAN, ids=ids).set_index("id")["label"].to_dict()
        authors = undone["annotator"].dropna().unique()
        self.emit("labels", ids=ids, labels=[now.get(i) for i in ids], source="undo",
                  annotator=who if who is not None or len(authors) != 1 else str(authors[0]))
        return undone

    def labeled(self, sources: Sequence[str] = HUMAN, ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Current label per labeled item: DataFrame id, label, annotator, source, ts (``ids``: only
        those items, e.g. one page of a grid)."""
        return self.store.current(sources, ids=self._ids_arg(ids))[["id", "label", "annotator", "source", "ts"]]

    def label_vector(self, sources: Sequence[str] = HUMAN) -> np.ndarray:
        """(N,) int64: the class index of each item's current label, -1 where unlabeled."""
        cur = self.store.current(sources)
        out = np.full(len(self), -1, dtype=np.int64)
        if len(cur):
            lookup = {c: i for i, c in enumerate(self.classes)}
            out[cur["id"].to_numpy()] = cur["label"].map(lookup).fillna(-1).astype(np.int64).to_numpy()
        return out

    def set_propagated(self, ids, labels, confidence, model_version: str | None = None) -> int:
        """Write model-propagated labels (source="propagated"), with confidences in [0, 1].

        Everything is checked before anything is written. The round is then stored as one snapshot
        version (``store.write_propagated``, schema 3): one transaction that writes rows only for the
        items whose (label, confidence) changed, instead of N events in parts (12-15 s and N rows per
        round at 900k). Returns the version's batch id."""
        ids = check_ids(ids, len(self))
        idx = to_class_indices(labels, self.classes, len(ids))
        conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
        if conf.shape != ids.shape:
            raise ValueError(f"confidence has {conf.size} values but there are {len(ids)} ids")
        if not np.isfinite(conf).all() or (conf < 0).any() or (conf > 1).any():
            raise ValueError("confidence values must be finite and within [0, 1]")
        names = pd.Categorical.from_codes(np.asarray(idx, dtype=np.int64), categories=self.classes)
        write = getattr(self.store, "write_propagated", None)
        if write is not None:
            batch = write(ids, names, conf, model_version=model_version)
        else:                      # a store object with only LabelStoreLike's methods: events, as before
            batch = self.store.append_bulk(ids.tolist(), names.astype(object).tolist(), source="propagated",
                                           confidence=conf.tolist(), model_version=model_version)
        self.emit("labels", ids=ids.tolist(), labels=names.astype(object).tolist(), source="propagated",
                  annotator=None)
        return batch

    def propagated(self, ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Latest propagated label per item: DataFrame id, label, confidence, model_version (``ids``: only
        those items; a model may have propagated to all N, and reading N rows takes seconds at 1M)."""
        return self.store.current(("propagated",), ids=self._ids_arg(ids))[["id", "label", "confidence",
                                                                           "model_version"]]

    def _ids_arg(self, ids: Sequence[int] | None) -> np.ndarray | None:
        """Item ids checked against this dataset (a clear error for an unknown id), or None for all."""
        return None if ids is None else check_ids(ids, len(self))

    def current_labels(self) -> pd.DataFrame:
        """Every item's label with human/review/import labels taking precedence over propagated ones."""
        human = self.store.current(HUMAN)
        prop = self.store.current(("propagated",))
        prop = prop[~prop["id"].isin(human["id"])]
        return pd.concat([human, prop], ignore_index=True).sort_values("id", ignore_index=True)

    def counts(self) -> LabelCounts:
        """The label numbers every panel shows, from one definition (see ``LabelCounts``).

        Reads the current labels once (a full read of the propagated ones: about 3 s at 1M items), so
        call it on a "labels" event, not per keystroke."""
        human = self.store.current(HUMAN)
        prop_ids = self.store.current(("propagated",))["id"].to_numpy()
        human_ids = human["id"].to_numpy()
        n_prop = len(np.setdiff1d(prop_ids, human_ids, assume_unique=True))
        by_source = {src: int((human["source"] == src).sum()) for src in HUMAN}
        by_class = {c: 0 for c in self.classes}
        by_class.update({str(k): int(v) for k, v in human["label"].value_counts().items()})
        by_annotator = {("" if pd.isna(k) else str(k)): int(v)
                        for k, v in human["annotator"].value_counts(dropna=False).items()}
        return LabelCounts(items=len(self), labeled=len(human), by_source=by_source, by_class=by_class,
                           by_annotator=by_annotator, propagated=n_prop,
                           unlabeled=len(self) - len(human) - n_prop, excluded=len(self.store.excluded()))

    def export(self, path: str | os.PathLike, format: str | None = None,
               sources: Sequence[str] = (*HUMAN, "propagated")) -> Path:
        """Write the current labels where people go next; see ``dcai_widgets.data.export``.

        ``format``: "csv", "parquet", "jsonl" (by the file's suffix when None), "hf" (a Hugging Face
        ``datasets`` folder, ``Dataset.load_from_disk``), or "imagefolder" (a folder per class: PNGs for
        images, .txt for texts, rows.csv for tables, vectors.npy for vectors, plus metadata.csv). Every
        format has the columns id, label, annotator, source, ts (ISO 8601, UTC), confidence, model_version,
        excluded; "hf" and "jsonl" also carry the item (text, image or table columns)."""
        from .data.export import export_labels

        return export_labels(self, path, format=format, sources=sources)

    def import_labels(self, y=None, annotator: str = "import") -> int:
        """Write known labels (y_true by default; -1 = unknown) into the store as source="import"."""
        y = self.y_true if y is None else self._check_y(y, len(self))
        if y is None:
            raise ValueError("no labels to import: this session has no y_true; pass y=")
        ids = np.where(y >= 0)[0]
        return self.label(ids, Positions(y[ids]), annotator=annotator, source="import") if len(ids) else 0

    # -- exclusions (additive, used by the Inspect panel) ------------------------------------------
    def exclude(self, ids, excluded: bool = True, annotator: str | None = None, reason: str | None = None) -> None:
        """Keep items out of training (``excluded=False`` brings them back); persisted in the store, append-only."""
        ids = check_ids(ids, len(self))
        who = annotator if annotator is not None else self.annotator
        self.store.set_excluded(ids.tolist(), excluded, annotator=who, reason=reason)
        self.emit("exclusions", ids=ids.tolist(), excluded=bool(excluded), annotator=who, reason=reason)

    def excluded(self) -> np.ndarray:
        """Ids currently excluded from training (sorted int64)."""
        return np.asarray(self.store.excluded(), dtype=np.int64)

    # -- events and models ---------------------------------------------------------------------
    def on(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Subscribe callback(**payload) to an event ("labels", "model", "exclusions"; the payloads are
        the dataclasses in ``events.py``); returns the callback."""
        if event not in ev.EVENT_TYPES:
            raise ValueError(f"unknown event {event!r}; expected one of {tuple(ev.EVENT_TYPES)}")
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._handlers[event].append(callback)
        return callback

    def off(self, event: str, callback: Callable[..., Any]) -> None:
        if callback in self._handlers.get(event, []):
            self._handlers[event].remove(callback)

    def emit(self, event: str, payload: Any = None, /, **fields: Any) -> None:
        """Check the payload against the event's type (``events.py``: a ``PayloadError`` for a missing,
        unexpected or wrongly typed field, whether or not anyone listens), then call every subscriber as
        ``callback(**fields)``; a failing subscriber is logged and never undoes what was stored.
        The payload is given as keyword fields or as one instance of the event's dataclass."""
        kwargs = ev.fields_of(ev.build(event, payload, fields))
        for cb in list(self._handlers.get(event, [])):
            try:
                cb(**kwargs)
            except Exception:  # a broken view must not break labeling
                log.exception("handler %r for event %r failed", cb, event)

    def set_model(self, name: str, model: Any) -> None:
        """Keep a model under `name` and tell subscribers ("model" event)."""
        self.models[name] = model
        self.emit("model", name=name, model=model)

    def __repr__(self) -> str:
        n_lab = int((self.label_vector() >= 0).sum())
        where = getattr(self.store, "path", None) or getattr(self.store, "url", None) or type(self.store).__name__
        return (f"Session({len(self)} {self.items.kind} items, {len(self.classes)} classes, {n_lab} labeled, "
                f"store={str(where)!r})")
