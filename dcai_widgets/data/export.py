"""Export of the current labels where people go next: CSV, Parquet, JSONL, Hugging Face ``datasets``, and
a folder per class (ImageFolder layout for images).

Every format carries the same label columns: id, label, annotator, source (human | review | import |
propagated), ts, confidence (propagated labels), model_version, excluded (kept out of training). ``ts`` is
ISO 8601 in UTC (``2026-11-30T18:48:31.123456+00:00``) in the text formats (CSV, JSONL, metadata.csv) and a
UTC timestamp in the typed ones (Parquet, Hugging Face). Human, review and import labels win over
propagated ones (``Session.current_labels``). A folder export refuses an existing non-empty folder (stale
files from an earlier export would mix with the new ones) and is written beside it, then renamed into
place, like the file exports, so a failed export leaves nothing half-written.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMATS = ("csv", "parquet", "jsonl", "hf", "imagefolder")
_BY_SUFFIX = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}
_HUMAN = ("human", "review", "import")
COLUMNS = ["id", "label", "annotator", "source", "ts", "confidence", "model_version", "excluded"]


def label_table(session: Any, sources: Sequence[str] = (*_HUMAN, "propagated")) -> pd.DataFrame:
    """One row per labeled item (COLUMNS), ``ts`` as a UTC datetime; human labels win over propagated."""
    sources = tuple(sources)
    bad = [s for s in sources if s not in (*_HUMAN, "propagated")]
    if bad or not sources:
        raise ValueError(f"sources must be some of {(*_HUMAN, 'propagated')}, got {list(sources)}")
    human_src = tuple(s for s in sources if s in _HUMAN)
    parts = []
    if human_src:
        parts.append(session.store.current(human_src))
    if "propagated" in sources:
        prop = session.store.current(("propagated",))
        if parts:
            prop = prop[~prop["id"].isin(parts[0]["id"])]
        parts.append(prop)
    df = pd.concat([p for p in parts], ignore_index=True).sort_values("id", ignore_index=True)
    df = df.astype({"id": "int64"})
    df["ts"] = pd.to_datetime(df["ts"].astype(float), unit="s", utc=True)
    df["confidence"] = df["confidence"].astype(float)
    df["excluded"] = df["id"].isin(np.asarray(session.excluded(), dtype=np.int64))
    return df[COLUMNS]


def iso(ts: pd.Series) -> pd.Series:
    """UTC datetimes as ISO 8601 strings with microseconds and an explicit +00:00 offset."""
    return ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def export_labels(session: Any, path: str | os.PathLike, format: str | None = None,
                  sources: Sequence[str] = (*_HUMAN, "propagated"), table: pd.DataFrame | None = None) -> Path:
    """Write ``label_table(session, sources)`` to ``path`` in ``format`` (see the module docstring); returns
    the path. ``table``: that table already read (a caller that also counts its rows reads the store once)."""
    path = Path(path).expanduser()
    if format is None:
        format = _BY_SUFFIX.get(path.suffix.lower())
        if format is None:
            raise ValueError(f"can't tell the format from {path.name!r}; use a .csv, .parquet or .jsonl file, "
                             f"or pass format= one of {FORMATS}")
    format = {"huggingface": "hf", "datasets": "hf", "folder": "imagefolder", "pq": "parquet"}.get(format, format)
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of {FORMATS}")
    if not path.parent.exists():
        raise ValueError(f"folder {str(path.parent)!r} does not exist; create it or choose another path")
    df = label_table(session, sources) if table is None else table
    if format in ("hf", "imagefolder"):
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ValueError(f"{str(path)!r} already exists and is not an empty folder; export to a new folder "
                             "(an earlier export's files would mix with this one's)")
        writer = _write_hf if format == "hf" else _write_folder
        return _into_place(path, lambda tmp: writer(session, df, tmp), folder=True)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder; give a file name such as labels.{format}")
    writer = {"csv": _write_csv, "parquet": _write_parquet, "jsonl": _write_jsonl}[format]
    return _into_place(path, lambda tmp: writer(session, df, tmp), folder=False)


def _into_place(path: Path, write, folder: bool) -> Path:
    """Write to a temporary name beside ``path`` and rename it over ``path`` once complete."""
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.")) if folder else \
        Path(tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")[1])
    try:
        write(tmp)
        if folder and path.exists():
            path.rmdir()       # checked empty above
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if folder else tmp.unlink(missing_ok=True)
        raise
    return path


def _text_form(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(ts=iso(df["ts"]))


def _write_csv(session: Any, df: pd.DataFrame, out: Path) -> None:
    _text_form(df).to_csv(out, index=False)


def _write_parquet(session: Any, df: pd.DataFrame, out: Path) -> None:
    df.to_parquet(out, index=False)


def _with_items(session: Any, df: pd.DataFrame, images: bool) -> pd.DataFrame:
    """The label rows plus the items themselves: text, table columns, or PNG bytes of images."""
    items, ids = session.items, df["id"].to_numpy()
    if items.kind == "text":
        return df.assign(text=[items.texts[i] for i in ids])
    if items.kind == "table":
        feats = items.frame.iloc[ids].reset_index(drop=True)
        feats.columns = [f"feature_{c}" if str(c) in df.columns else str(c) for c in feats.columns]
        return pd.concat([df.reset_index(drop=True), feats], axis=1)
    if items.kind == "image" and images:
        return df.assign(image=[{"bytes": png(items, i), "path": None} for i in ids])
    return df


def _write_jsonl(session: Any, df: pd.DataFrame, out: Path) -> None:
    rows = _with_items(session, _text_form(df), images=False)
    rows.to_json(out, orient="records", lines=True, force_ascii=False)


def _write_hf(session: Any, df: pd.DataFrame, out: Path) -> None:
    try:
        import datasets
    except ImportError as e:
        raise ImportError("format='hf' needs the Hugging Face datasets library: pip install datasets") from e
    rows = _with_items(session, df, images=True)
    features = None
    if "image" in rows.columns:
        ds = datasets.Dataset.from_pandas(rows.drop(columns="image"), preserve_index=False)
        ds = ds.add_column("image", list(rows["image"]))
        features = ds.features.copy()
        features["image"] = datasets.Image()
        ds = ds.cast(features)
    else:
        ds = datasets.Dataset.from_pandas(rows, preserve_index=False)
    ds.save_to_disk(str(out))


def png(items: Any, i: int) -> bytes:
    """Item i of an ImageItems as PNG bytes at its own size."""
    from PIL import Image

    px = items.as_uint8(int(i))
    if px.ndim == 3 and px.shape[-1] == 1:
        px = px[..., 0]
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="PNG")
    return buf.getvalue()


def folder_names(classes: Sequence[str]) -> dict[str, str]:
    """A safe, distinct folder name per class (path separators and odd characters become '_')."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for c in classes:
        name = re.sub(r"[^\w.\- ]", "_", str(c)).strip() or "_"
        if name in (".", ".."):
            name = name.replace(".", "_")
        base, k = name, 1
        while name.lower() in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name.lower())
        out[str(c)] = name
    return out


def _write_folder(session: Any, df: pd.DataFrame, out: Path) -> None:
    """A folder per class: <class>/<id>.png (images), <class>/<id>.txt (texts), <class>/rows.csv (tables),
    <class>/vectors.npy (vectors, rows in metadata order); metadata.csv maps file_name to the label columns
    (the Hugging Face "imagefolder" loader reads it)."""
    items = session.items
    names = folder_names(session.classes)
    meta = _text_form(df)
    files = []
    for c, group in meta.groupby("label", sort=False):
        sub = out / names[str(c)]
        sub.mkdir()
        ids = group["id"].to_numpy()
        if items.kind == "image":
            for i in ids:
                (sub / f"{i:06d}.png").write_bytes(png(items, i))
            files += [(i, f"{names[str(c)]}/{i:06d}.png") for i in ids]
        elif items.kind == "text":
            for i in ids:
                (sub / f"{i:06d}.txt").write_text(items.texts[i], encoding="utf-8")
            files += [(i, f"{names[str(c)]}/{i:06d}.txt") for i in ids]
        elif items.kind == "table":
            items.frame.iloc[ids].assign(id=ids).to_csv(sub / "rows.csv", index=False)
            files += [(i, f"{names[str(c)]}/rows.csv") for i in ids]
        else:
            np.save(sub / "vectors.npy", np.asarray(items.X, dtype=np.float32)[ids])
            files += [(i, f"{names[str(c)]}/vectors.npy") for i in ids]
    where = dict(files)
    meta.insert(0, "file_name", [where[i] for i in meta["id"]])
    meta.to_csv(out / "metadata.csv", index=False)
