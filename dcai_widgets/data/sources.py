"""The Session's constructors by source: the demo, arrays of images, texts, embeddings, tables, and files
(``Session.open``). A mixin so that session.py keeps the shared state and these keep the loading rules.

Loaders hand their labels over as explicit class positions (``Positions``): a bare number is refused
where class names look like numbers (``['1', '2', '3']``), see ``_validate.to_class_indices``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._validate import Positions, check_classes, check_embeddings
from . import loaders
from .items import ImageItems, ItemSet, TableItems, TextItems, VectorItems


def _integral_floats_as_ints(col: pd.Series) -> pd.Series:
    """A float column whose values are all whole numbers (pandas reads an integer CSV column with an
    empty cell as floats) as nullable ints, so that class names are '1', not '1.0'."""
    if col.dtype.kind == "f":
        known = col.dropna()
        if len(known) and np.isfinite(known).all() and (known == np.round(known)).all():
            return col.astype("Int64")
    return col



class SessionSources:
    """``Session.demo/from_images/from_texts/from_embeddings/from_table/open`` (they call ``cls(...)``)."""

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def demo(cls, store=None, **kw) -> Any:
        """The bundled demo: scikit-learn's 1,797 8x8 digit images, with their true labels as y_true."""
        images, y, names = loaders.load_digits()
        kw.setdefault("warn_temp_store", False)  # the demo is meant to be thrown away (DESIGN.md)
        return cls(ImageItems(images), names, y_true=y, store=store, **kw)

    @classmethod
    def from_images(cls, images, classes, *, y_true=None, store=None, encoder=None, **kw) -> Any:
        """Images as an (N, H, W[, C]) array; embeddings from `encoder` (default: pixels + PCA)."""
        return cls(ImageItems(images), classes, y_true=y_true, store=store, encoder=encoder, **kw)

    @classmethod
    def from_texts(cls, texts, classes, *, encoder="all-MiniLM-L6-v2", y_true=None, store=None,
                   **kw) -> Any:
        """Texts; embeddings from a sentence-transformers model (name or local path), 'tfidf', or a callable."""
        return cls(TextItems(texts), classes, y_true=y_true, store=store, encoder=encoder, **kw)

    @classmethod
    def from_embeddings(cls, X, classes, *, items=None, y_true=None, store=None, **kw) -> Any:
        """Precomputed features (or a numeric table) as the embedding; `items` optionally shows the raw items."""
        X = check_embeddings(X, name="X")
        if items is None:
            items = VectorItems(X)
        elif not isinstance(items, ItemSet):
            if isinstance(items, pd.DataFrame):
                items = TableItems(items)
            elif isinstance(items, np.ndarray) and items.ndim in (3, 4):
                items = ImageItems(items)
            else:
                items = TextItems(items)
        if len(items) != len(X):
            raise ValueError(f"items has {len(items)} entries but X has {len(X)} rows")
        return cls(items, classes, y_true=y_true, store=store, embeddings=X, **kw)

    @classmethod
    def from_table(cls, frame: pd.DataFrame, classes=None, *, label_column: str | None = None,
                   text_column: str | None = None, feature_columns: Sequence[str] | None = None,
                   store=None, encoder=None, **kw) -> Any:
        """A DataFrame: a text column (text session) or feature columns, and an optional label column.
        A text session keeps the names of the columns it does not use in ``items.unused_columns_``."""
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
        for col in (label_column, text_column, *(feature_columns or [])):
            if col is not None and col not in frame.columns:
                raise ValueError(f"column {col!r} is not in the table; columns are {list(frame.columns)}")
        y_true = None
        if label_column is not None:
            raw = _integral_floats_as_ints(frame[label_column])
            if classes is None:
                classes = sorted(raw.dropna().astype(str).unique().tolist())
            classes = check_classes(classes)
            known = raw.notna()
            bad = sorted(set(raw[known].astype(str)) - set(classes))
            if bad:
                raise ValueError(f"label column {label_column!r} has values {bad[:5]} not among classes {classes}")
            codes = raw.astype(str).map({c: i for i, c in enumerate(classes)}).fillna(-1).astype(np.int64)
            y_true = Positions(np.where(known, codes, -1))
        if text_column is not None:
            texts = frame[text_column]
            if texts.isna().any():
                raise ValueError(f"text column {text_column!r} has {int(texts.isna().sum())} empty cell(s)")
            items = TextItems(texts.astype(str).tolist())
            # the file's other columns are neither embedded nor shown: the page says so (DataNotes)
            items.unused_columns_ = [str(c) for c in frame.columns if c not in (text_column, label_column)]
            return cls(items, classes, y_true=y_true, store=store,
                       encoder=encoder if encoder is not None else "all-MiniLM-L6-v2", **kw)
        drop = [c for c in (label_column,) if c is not None]
        feats = frame[list(feature_columns)] if feature_columns else frame.drop(columns=drop)
        return cls(TableItems(feats), classes, y_true=y_true, store=store, encoder=encoder, **kw)

    @classmethod
    def open(cls, source: str | os.PathLike, *, classes=None, store=None, label_column: str | None = None,
             text_column: str | None = None, image_size: int | None = None, **kw) -> Any:
        """Open "digits", an .npz (X, y), an MNIST idx folder, a CSV/Parquet file or an image folder.

        An image folder with images of several sizes is resized to one size (``image_size``, default the
        most common size, at most 128 px) with an ``ImagesResizedWarning``; ``s.items.resized_`` records
        which images were resized from what size."""
        if str(source) == "digits":
            return cls.demo(store=store, **kw)
        p = Path(source).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"data {str(p)!r} does not exist; give 'digits', an .npz, a CSV/Parquet "
                                    "file, an MNIST folder or an image folder")
        if image_size is not None and not (p.is_dir() and not loaders.is_mnist_folder(p)):
            raise ValueError(f"image_size applies to a folder of image files; {str(p)!r} is not one")
        if p.is_dir() and loaders.is_mnist_folder(p):
            images, y = loaders.load_mnist(p)
            return cls.from_images(images, classes or [str(i) for i in range(10)], y_true=Positions(y),
                                   store=store, **kw)
        if p.is_dir():
            images, y, found, files, resized = loaders.read_image_folder(p, size=image_size, stacklevel=3)
            if classes is None and found is None:
                raise ValueError(f"{str(p)!r} has no class sub-folders; pass classes=[...]")
            items = ImageItems(images)
            items.paths, items.resized_ = files, resized
            return cls(items, classes or found, y_true=Positions(y) if classes is None else None,
                       store=store, **kw)
        suffix = p.suffix.lower()
        if suffix == ".npz":
            X, y = loaders.load_npz(p)
            if classes is None:
                if y is None:
                    raise ValueError(f"{str(p)!r} has no y; pass classes=[...]")
                values = np.unique(y)
                classes = [str(v.item() if hasattr(v, "item") else v) for v in values]
                y = Positions(np.searchsorted(values, y))
            return cls.from_embeddings(X, classes, y_true=y, store=store, **kw)
        if suffix in (".csv", ".tsv", ".parquet", ".pq"):
            frame = loaders.load_table(p)
            if label_column is None and "label" in frame.columns:
                label_column = "label"
            if text_column is None and "text" in frame.columns:
                text_column = "text"
            return cls.from_table(frame, classes, label_column=label_column, text_column=text_column,
                                  store=store, **kw)
        raise ValueError(f"don't know how to open {str(p)!r}; use .npz, .csv, .parquet, an MNIST folder "
                         "or a folder of images")
