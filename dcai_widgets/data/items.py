"""Item sets by modality: what the expert looks at (images, texts, table rows, or bare vectors)."""
from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cached_property, lru_cache

import numpy as np
import pandas as pd

from ..store.cache import content_hash

KINDS = ("image", "text", "table", "vector")


def _check_finite(name: str, arr: np.ndarray) -> None:
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).reshape(len(arr), -1).any(axis=1).sum())
        raise ValueError(f"{name} has NaN or infinite values in {bad} item(s); clean or drop them first")


class ItemSet:
    """The raw items of a dataset, one modality; positions 0..N-1 are the item ids."""

    kind: str = "vector"

    def __len__(self) -> int:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """A short text for item i (tooltips, alt text)."""
        return f"item {i}"

    def thumbnail(self, i: int, size: int = 96) -> bytes | None:
        """PNG bytes showing item i, or None when the modality has no picture."""
        return None


class ImageItems(ItemSet):
    """Images as one array (N, H, W) or (N, H, W, C), uint8 or floats in [0, 1] / [0, 255].

    ``paths``: the source files when read from a folder (else None). ``resized_``: one row per image that
    loading resized to the common size (id, path, from_size, to_size); empty when none was.
    """

    kind = "image"

    def __init__(self, images: np.ndarray):
        images = np.asarray(images)
        if images.dtype == object:
            raise TypeError("images must be one numeric array (N, H, W) or (N, H, W, C); "
                            "for files use dcai_widgets.data.load_image_folder")
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
            raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C) with C in 1/3/4; "
                             f"got {images.shape}")
        if len(images) == 0:
            raise ValueError("images is empty; a session needs at least one item")
        if images.dtype.kind not in "uif" or images.dtype == bool:
            raise TypeError(f"images must be numeric, got dtype {images.dtype}")
        _check_finite("images", images)
        self.images = images
        self.paths: list[str] | None = None
        self.resized_ = pd.DataFrame({"id": np.zeros(0, np.int64), "path": [], "from_size": [], "to_size": []})

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        return content_hash("image", self.images)

    def as_uint8(self, i: int) -> np.ndarray:
        """Item i as uint8 pixels scaled to 0..255 (floats in [0,1] or any range are rescaled)."""
        img = self.images[i]
        if img.dtype == np.uint8:
            return img
        return np.clip(img.astype(np.float32) * self._scale, 0, 255).astype(np.uint8)

    @cached_property
    def _scale(self) -> float:
        """Factor to 0..255 for non-uint8 images, from the whole set's maximum (computed once)."""
        hi = float(self.images.max())
        return 255.0 if hi <= 1.0 else (255.0 / hi if hi > 255 else 1.0)

    def describe(self, i: int) -> str:
        return f"image {i} ({'x'.join(map(str, self.images.shape[1:]))})"

    def thumbnail(self, i: int, size: int = 96) -> bytes:
        return _png(self.as_uint8(int(i)), size)


@lru_cache(maxsize=1)
def _pil():
    from PIL import Image

    return Image


def _png(pixels: np.ndarray, size: int) -> bytes:
    """Encode pixels as PNG, upscaled with nearest-neighbour so small images stay crisp."""
    Image = _pil()
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    im = Image.fromarray(pixels)
    h, w = pixels.shape[:2]
    scale = max(1, size // max(h, w))
    if scale > 1:
        im = im.resize((w * scale, h * scale), Image.NEAREST)
    elif max(h, w) > size:
        im.thumbnail((size, size), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


class TextItems(ItemSet):
    """A list of strings."""

    kind = "text"

    def __init__(self, texts: Sequence[str]):
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a list of strings, not one string")
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty; a session needs at least one item")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must all be str; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        return content_hash("text", self.texts)

    def describe(self, i: int) -> str:
        t = self.texts[int(i)]
        return t if len(t) <= 200 else t[:197] + "..."


class TableItems(ItemSet):
    """Rows of a DataFrame (feature columns)."""

    kind = "table"

    def __init__(self, frame: pd.DataFrame):
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
        if len(frame) == 0:
            raise ValueError("the table has no rows; a session needs at least one item")
        self.frame = frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)

    def fingerprint(self) -> str:
        f = self.frame
        return content_hash("table", list(map(str, f.columns)),
                            pd.util.hash_pandas_object(f, index=False).to_numpy())

    def describe(self, i: int) -> str:
        row = self.frame.iloc[int(i)]
        return ", ".join(f"{k}={v}" for k, v in list(row.items())[:8])


class VectorItems(ItemSet):
    """Items known only by a feature vector (precomputed embeddings)."""

    kind = "vector"

    def __init__(self, X: np.ndarray):
        self.X = X

    def __len__(self) -> int:
        return len(self.X)

    def fingerprint(self) -> str:
        # a memory-mapped matrix is hashed from its pages as stored (a float16 file is not widened in RAM)
        X = self.X if isinstance(self.X, np.memmap) else np.asarray(self.X, dtype=np.float32)
        return content_hash("vector", X)

    def describe(self, i: int) -> str:
        v = self.X[int(i)]
        head = ", ".join(f"{x:.3g}" for x in v[:6])
        return f"vector {i}: [{head}{', ...' if len(v) > 6 else ''}]"
