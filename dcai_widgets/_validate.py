"""Argument checks that name the bad argument, what was expected and what was given."""
from __future__ import annotations

import numbers
import os
from collections.abc import Sequence

import numpy as np

from .rows import ROW_DTYPES, nonfinite_rows


def check_classes(classes) -> list[str]:
    """Class names as a list of distinct non-empty strings (at least two)."""
    if classes is None:
        raise ValueError("classes is required: give the list of class names, e.g. classes=['cat', 'dog']")
    if isinstance(classes, (str, bytes)):
        raise TypeError(f"classes must be a list of names, not one string {classes!r}")
    try:
        out = [str(c) for c in classes]
    except TypeError as e:
        raise TypeError(f"classes must be a list of names, not {type(classes).__name__}") from e
    if len(out) < 2:
        raise ValueError(f"classes needs at least two names, got {out}")
    if any(not c.strip() for c in out):
        raise ValueError(f"class names must be non-empty, got {out}")
    dup = sorted({c for c in out if out.count(c) > 1})
    if dup:
        raise ValueError(f"class names must be distinct; repeated: {dup}")
    return out


def check_ids(ids, n: int, name: str = "ids") -> np.ndarray:
    """Item ids as int64, each in 0..n-1; a single id is accepted."""
    if isinstance(ids, (numbers.Integral, np.integer)) and not isinstance(ids, (bool, np.bool_)):
        arr = np.array([int(ids)], dtype=np.int64)
    else:
        if isinstance(ids, (str, bytes, float, bool, np.bool_)):
            raise TypeError(f"{name} must be integer item ids, got {ids!r}")
        arr = np.asarray(ids)
        if arr.ndim == 0:
            raise TypeError(f"{name} must be integer item ids, got {ids!r}")
        if arr.dtype == bool or (arr.dtype.kind not in "iu" and arr.size > 0):
            wide = arr.astype(np.float64) if arr.dtype.kind == "f" else None
            if (wide is not None and arr.size and np.isfinite(wide).all() and (np.abs(wide) < 2**53).all()
                    and (wide == np.round(wide)).all()):
                arr = arr.astype(np.int64)
            else:
                raise TypeError(f"{name} must be integer item ids, got dtype {arr.dtype} ({arr.ravel()[:3].tolist()}...)")
        arr = arr.astype(np.int64).reshape(-1)
    bad = arr[(arr < 0) | (arr >= n)]
    if len(bad):
        raise ValueError(f"unknown item id(s) {bad[:5].tolist()} in {name}; ids run from 0 to {n - 1}")
    return arr


class Positions:
    """Class labels given explicitly as positions into ``classes`` (what loaders produce).

    A bare integer is a class *position* only where that cannot be mistaken for a class *name*; with class
    names that look like numbers (``['1', '2', '3']``) a bare 2 could mean either, so it is refused.
    Wrapping an array in ``Positions`` says "these are positions" (-1 = unknown where allowed).
    """

    __slots__ = ("values",)

    def __init__(self, values) -> None:
        arr = np.asarray(values)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"Positions takes integer class positions, got dtype {arr.dtype}")
        self.values = arr.astype(np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.values)


def _looks_numeric(name: str) -> bool:
    try:
        return bool(np.isfinite(float(name)))
    except ValueError:
        return False


def ambiguous_numbers(classes: Sequence[str]) -> list[str]:
    """Class names that look like numbers but are not their own position (``'1'`` at position 0).

    With such names a bare integer label could mean a position or a name, so integers are refused and
    the caller must pass names (``s.classes[i]`` for position ``i``). Names equal to their position
    (``['0', '1', ..., '9']``, or ``['cat', '1']``) are unambiguous and integers stay accepted."""
    return [c for j, c in enumerate(classes) if _looks_numeric(c) and c != str(j)]


def _ambiguity_error(v, classes: Sequence[str], name: str, clash: list[str]) -> ValueError:
    return ValueError(
        f"{name}: {v!r} is ambiguous: the class names {list(classes)} look like numbers "
        f"({clash[:5]} are not their own positions), so a number could be a position or a name. Pass the "
        f"class name as a string (e.g. {str(classes[0])!r}), or turn a position i into its name with "
        "session.classes[i]")


def to_class_indices(labels, classes: Sequence[str], n: int | None = None, name: str = "labels") -> np.ndarray:
    """Labels given as class names or class indices -> int64 indices; a scalar is repeated n times.

    A number is read as a class position, except where class names look like numbers and differ from their
    positions (``ambiguous_numbers``): then it is an error, never a guess. ``Positions(...)`` marks explicit
    positions."""
    k = len(classes)
    if isinstance(labels, Positions):
        idx = labels.values
        if n is not None and len(idx) == 1 and n != 1:
            idx = np.repeat(idx, n)
        if n is not None and len(idx) != n:
            raise ValueError(f"{name} has {len(idx)} entries but there are {n} ids")
        bad = idx[(idx < 0) | (idx >= k)]
        if len(bad):
            raise ValueError(f"{name}: class position(s) {bad[:5].tolist()} out of range; there are {k} classes")
        return idx.copy()
    lookup = {c: i for i, c in enumerate(classes)}
    clash = ambiguous_numbers(classes)

    def one(v) -> int:
        if isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name}: {v!r} is not a class; use a class name from {list(classes)} or its index")
        if isinstance(v, (numbers.Integral, np.integer)):
            if clash:
                raise _ambiguity_error(v, classes, name, clash)
            if 0 <= int(v) < k:
                return int(v)
            raise ValueError(f"{name}: class index {v} is out of range; there are {k} classes {list(classes)}")
        if isinstance(v, (float, np.floating)):
            if clash and np.isfinite(v):
                raise _ambiguity_error(v, classes, name, clash)
            if np.isfinite(v) and float(v).is_integer() and 0 <= int(v) < k:
                return int(v)
            raise ValueError(f"{name}: {v!r} is not a class; expected one of {list(classes)}")
        if isinstance(v, (str, np.str_)):
            if str(v) in lookup:
                return lookup[str(v)]
            raise ValueError(f"{name}: unknown class {str(v)!r}; expected one of {list(classes)}")
        raise TypeError(f"{name}: {v!r} ({type(v).__name__}) is not a class name or index")

    if isinstance(labels, (str, bytes, numbers.Number, np.generic)) or labels is None:
        if labels is None:
            raise TypeError(f"{name} is None; give a class name or index")
        idx = one(labels)
        return np.full(1 if n is None else n, idx, dtype=np.int64)
    seq = list(np.asarray(labels, dtype=object).reshape(-1)) if not isinstance(labels, list) else labels
    if n is not None and len(seq) != n:
        raise ValueError(f"{name} has {len(seq)} entries but there are {n} ids; give one label per id (or one for all)")
    return np.array([one(v) for v in seq], dtype=np.int64)


def check_embeddings(X, n: int | None = None, name: str = "embeddings") -> np.ndarray:
    """A finite float32 (N, d) matrix (with N == n when given).

    A memory-mapped float32 or float16 matrix (``np.memmap``, or the path of a ``.npy`` file, opened
    read-only with ``embed.memmap.open_embeddings``) is checked in row chunks and returned as it is, so
    it stays on disk (float16 rows are converted when read)."""
    if X is None:
        raise ValueError(f"{name} is None; give an (N, d) array")
    if isinstance(X, (str, os.PathLike)):
        from .embed.memmap import open_embeddings

        if not os.path.isfile(X):
            raise ValueError(f"{name} is {str(X)[:80]!r}, which is not an existing .npy file; give an (N, d) "
                             "array, an np.memmap or the path of a .npy file")
        X = open_embeddings(X)
    mapped = isinstance(X, np.memmap) and X.dtype in ROW_DTYPES and X.ndim == 2 and X.flags.c_contiguous
    X = X if mapped else np.asarray(X)
    if X.dtype == object or X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must have shape (N, d); got {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape}); a session needs at least one item and one feature")
    if n is not None and X.shape[0] != n:
        raise ValueError(f"{name} has {X.shape[0]} rows but there are {n} items")
    rows = _nonfinite_rows(X)
    if len(rows):
        raise ValueError(f"{name} has NaN or infinite values in {len(rows)} row(s) (first: {rows[:5].tolist()}); "
                         "clean or drop those items first")
    if mapped:
        return X
    wider = X.dtype.kind == "f" and X.dtype.itemsize > 4     # only a wider float can overflow float32
    with np.errstate(over="ignore"):
        X = np.ascontiguousarray(X, dtype=np.float32)
    rows = _nonfinite_rows(X) if wider else rows
    if len(rows):
        raise ValueError(f"{name} has values beyond float32's range (|x| > 3.4e38) in {len(rows)} row(s) (first: "
                         f"{rows[:5].tolist()}); rescale them (embeddings are stored as float32)")
    return X


def _nonfinite_rows(X: np.ndarray) -> np.ndarray:
    """Rows of a 2-D array holding a NaN or an infinity (checked in row chunks: no N x d temporary)."""
    return nonfinite_rows(X)


def excluded_mask(session, n: int | None = None) -> np.ndarray:
    """Boolean mask (length ``n``, default ``len(session)``) of the items the session keeps out of training
    (``Session.exclude``, e.g. anomalies confirmed in the Clean tab): engines neither offer them as
    candidates nor train on their labels. A session-like object without ``excluded()`` excludes nothing."""
    n = len(session) if n is None else int(n)
    mask = np.zeros(n, dtype=bool)
    get = getattr(session, "excluded", None)
    if callable(get):
        ids = np.asarray(get(), dtype=np.int64).ravel()
        mask[ids[(ids >= 0) & (ids < n)]] = True
    return mask


def propagated_arrays(session) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The session's usable propagated labels as arrays (ids, class indices, confidences): rows whose label
    is one of the session's classes and whose confidence is above 0, for training with confidences as
    sample weights (the Inspect model, the Trainer)."""
    prop = session.propagated()
    if not len(prop):
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32)
    lookup = {c: i for i, c in enumerate(session.classes)}
    ids = prop["id"].to_numpy(np.int64)
    lab = prop["label"].map(lookup).fillna(-1).astype(np.int64).to_numpy()
    conf = prop["confidence"].fillna(0.0).to_numpy(np.float32)
    ok = (lab >= 0) & (conf > 0)
    return ids[ok], lab[ok], conf[ok]
