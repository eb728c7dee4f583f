"""Loaders for the formats users bring: .npz (X, y), MNIST idx-gzip, CSV/Parquet, image folders."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _existing(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist; check the path")
    return p


def load_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's bundled 1,797 8x8 digit images (uint8 0..255), labels and class names.

    Reads the file scikit-learn ships directly: importing sklearn.datasets costs seconds at open.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if path.exists():
        with gzip.open(path, "rb") as f:
            text = f.read().decode("ascii")
        rows = text.split()
        table = np.array(",".join(rows).split(","), dtype=np.int64).reshape(len(rows), -1)
        pixels, target = table[:, :-1], table[:, -1]
    else:  # a future scikit-learn may move the file: fall back to its loader
        from sklearn.datasets import load_digits as _ld

        d = _ld()
        pixels, target = d.data, d.target.astype(np.int64)
    images = np.clip(pixels.reshape(-1, 8, 8) * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    return images, target, [str(c) for c in range(10)]


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """An .npz holding `X` (features) and optionally `y` (labels)."""
    p = _existing(path, "npz file")
    try:
        z = np.load(p, allow_pickle=False)
        files = list(z.files)
    except Exception as e:
        raise ValueError(f"{str(p)!r} is not a readable .npz file ({type(e).__name__}: {e})") from e
    with z:
        if "X" not in files:
            raise ValueError(f"{str(p)!r} has arrays {files} but no 'X'; save features as X (and labels as y)")
        try:
            X = z["X"]
            y = z["y"] if "y" in files else None
        except Exception as e:
            raise ValueError(f"{str(p)!r} is corrupt ({type(e).__name__}: {e})") from e
    if y is not None and len(y) != len(X):
        raise ValueError(f"{str(p)!r}: X has {len(X)} rows but y has {len(y)}")
    return X, y


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{str(path)!r} is not a readable idx file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{str(path)!r} is not an idx file of uint8 (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise ValueError(f"{str(path)!r} is truncated or corrupt: header says {dims}, "
                         f"found {len(raw) - offset} of {expected} bytes")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def load_mnist(folder: str | os.PathLike, split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """MNIST-style idx files in `folder`: `{split}-images-idx3-ubyte[.gz]` and the labels file."""
    d = _existing(folder, "MNIST folder")

    def find(kind: str) -> Path:
        for name in (f"{split}-{kind}-ubyte.gz", f"{split}-{kind}-ubyte", f"{split}-{kind}.gz"):
            if (d / name).exists():
                return d / name
        raise FileNotFoundError(f"no {split}-{kind}-ubyte[.gz] in {str(d)!r}")

    images = _read_idx(find("images-idx3"))
    labels = _read_idx(find("labels-idx1")).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{str(d)!r}: {len(images)} images but {len(labels)} labels")
    return images, labels


def is_mnist_folder(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*-images-idx3-ubyte*"))


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame."""
    p = _existing(path, "table file")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(p)
        return pd.read_csv(p)
    except Exception as e:
        raise ValueError(f"could not read table {str(p)!r} ({type(e).__name__}: {e})") from e


class ImagesResizedWarning(UserWarning):
    """Images of an image folder had different sizes and some were resized to one size."""


def load_image_folder(folder: str | os.PathLike, size: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None, list[str] | None, list[str]]:
    """Images under `folder`; one sub-folder per class is read as labels.

    Returns (images (N,H,W,C) or (N,H,W) uint8, y or None, classes or None, file paths). Images of
    different sizes are resized to `size` (default: the most common size, at most 128 px), with an
    ``ImagesResizedWarning`` saying how many from which sizes; ``read_image_folder`` also returns the record.
    """
    images, y, classes, files, _ = read_image_folder(folder, size=size, stacklevel=3)
    return images, y, classes, files


def read_image_folder(folder: str | os.PathLike, size: int | None = None, stacklevel: int = 2
                      ) -> tuple[np.ndarray, np.ndarray | None, list[str] | None, list[str], pd.DataFrame]:
    """``load_image_folder`` plus what resizing did: a DataFrame with one row per resized image
    (id, path, from_size "WxH", to_size "WxH"), empty when every image kept its size."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    root = _existing(folder, "image folder")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        files = [(f, sd.name) for sd in subdirs for f in sorted(sd.iterdir())
                 if f.suffix.lower() in IMAGE_SUFFIXES]
        classes = [sd.name for sd in subdirs]
    else:
        files = [(f, None) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        classes = None
    if not files:
        raise ValueError(f"no PNG/JPEG images in {str(root)!r} (or in its class sub-folders)")
    if size is not None and (not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1):
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    pics = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                pics.append(im.convert("L") if im.mode in ("L", "1", "P", "I;16", "I") else im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"corrupt or unreadable image {str(f)!r} ({e}); remove or replace it") from e
    if any(p.mode == "RGB" for p in pics):
        pics = [p.convert("RGB") for p in pics]
    sizes = pd.Series([p.size for p in pics]).value_counts()
    if size is not None:
        target = (int(size), int(size))
    elif len(sizes) == 1:
        target = sizes.index[0]  # all alike: keep them as they are
    else:
        w, h = sizes.index[0]
        target = (min(w, 128), min(h, 128))
    arr = np.stack([np.asarray(p if p.size == target else p.resize(target, Image.BILINEAR)) for p in pics])
    resized = pd.DataFrame(
        [(i, str(f), _wh(p.size), _wh(target)) for i, ((f, _), p) in enumerate(zip(files, pics)) if p.size != target],
        columns=["id", "path", "from_size", "to_size"]).astype({"id": "int64"})
    if len(resized):
        by = resized["from_size"].value_counts()
        warnings.warn(f"{len(resized)} of {len(pics)} images in {str(root)!r} were resized to {_wh(target)} "
                      f"(from {', '.join(f'{k} ({v})' for k, v in by.items())}); choose the size with "
                      "image_size=..., and see items.resized_ for which ones", ImagesResizedWarning,
                      stacklevel=stacklevel)
    if classes is not None:
        y = np.array([classes.index(c) for _, c in files], dtype=np.int64)
    else:
        y = None
    return arr, y, classes, [str(f) for f, _ in files], resized


def _wh(size: tuple[int, int]) -> str:
    """PIL's (width, height) as 'WxH'."""
    return f"{size[0]}x{size[1]}"
