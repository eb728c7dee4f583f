import gzip
import struct

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import dcai_widgets as dw
from dcai_widgets.data import load_image_folder, load_mnist, load_npz


def _idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_npz_roundtrip_and_errors(tmp_path):
    X = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    y = np.array([0, 1, 1] * 10)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    s = dw.Session.open(tmp_path / "d.npz")
    assert s.classes == ["0", "1"] and np.array_equal(s.embeddings, X) and s.y_true.tolist() == y.tolist()
    np.savez(tmp_path / "nox.npz", A=X)
    with pytest.raises(ValueError, match="no 'X'"):
        load_npz(tmp_path / "nox.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_npz(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dw.Session.open(tmp_path / "missing.npz")


def test_mnist_idx_synthetic_and_truncated(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (20, 28, 28))
    labels = np.arange(20) % 10
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    x, y = load_mnist(tmp_path)
    assert x.shape == (20, 28, 28) and np.array_equal(x, imgs) and y.tolist() == labels.tolist()
    s = dw.Session.open(tmp_path)
    assert s.items.kind == "image" and len(s) == 20
    raw = gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz").read()
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(tmp_path)


def test_real_mnist(shared_data):
    x, y = load_mnist(shared_data / "mnist-test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    counts = np.bincount(y)
    assert len(counts) == 10 and counts.sum() == 10000 and counts.min() == 892  # digit 5 is rarest


def test_csv_text_and_parquet_features(tmp_path):
    pd.DataFrame({"text": ["a cat", "a dog", "cats purr", "dogs bark"], "label": ["cat", "dog", "cat", None]}
                 ).to_csv(tmp_path / "t.csv", index=False)
    s = dw.Session.open(tmp_path / "t.csv", encoder="tfidf")
    assert s.items.kind == "text" and s.classes == ["cat", "dog"] and s.y_true.tolist() == [0, 1, 0, -1]
    pd.DataFrame({"f1": [0.1, 0.2, 0.3], "f2": [1, 2, 3], "label": ["a", "b", "a"]}).to_parquet(tmp_path / "f.parquet")
    t = dw.Session.open(tmp_path / "f.parquet")
    assert t.items.kind == "table" and t.embeddings.shape == (3, 2)
    (tmp_path / "broken.parquet").write_bytes(b"nope")
    with pytest.raises(ValueError, match="could not read"):
        dw.Session.open(tmp_path / "broken.parquet")


def test_image_folder_with_classes_and_corrupt_file(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    imgs, y, classes, files = load_image_folder(tmp_path)
    assert imgs.shape == (6, 10, 12, 3) and classes == ["cat", "dog"] and y.tolist() == [0, 0, 0, 1, 1, 1]
    s = dw.Session.open(tmp_path)
    assert s.classes == ["cat", "dog"] and s.embeddings.shape[0] == 6
    assert s.items.thumbnail(0)[:4] == b"\x89PNG"
    (tmp_path / "dog" / "9.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="corrupt or unreadable image .*9.jpg"):
        load_image_folder(tmp_path)


def test_images_validation():
    with pytest.raises(ValueError, match="shape"):
        dw.Session.from_images(np.zeros((3, 4)), ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        dw.Session.from_images(np.zeros((0, 4, 4)), ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        dw.Session.from_images(np.full((2, 4, 4), np.nan), ["a", "b"])
    with pytest.raises(TypeError, match="one string"):
        dw.Session.from_texts("just one", ["a", "b"], encoder="tfidf")


def test_thumbnail_is_crisp_upscale(demo):
    from io import BytesIO

    png = demo.items.thumbnail(0, size=96)
    im = Image.open(BytesIO(png))
    assert im.size == (96, 96)
    px = np.asarray(im)
    assert len(np.unique(px)) <= 17  # nearest-neighbour keeps the 8x8 grey levels, no blur


def test_mixed_image_sizes_are_resized_with_a_warning_and_a_record(tmp_path):
    from dcai_widgets.data import ImagesResizedWarning

    rng = np.random.default_rng(0)
    sizes = {"a": [(10, 12), (10, 12), (20, 20)], "b": [(10, 12), (7, 5)]}     # (height, width)
    for cls, shapes in sizes.items():
        (tmp_path / cls).mkdir()
        for i, (h, w) in enumerate(shapes):
            Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    with pytest.warns(ImagesResizedWarning, match=r"2 of 5 images .* resized to 12x10 \(from 20x20 \(1\), 5x7 \(1\)\)"):
        s = dw.Session.open(tmp_path)
    assert s.items.images.shape == (5, 10, 12)
    rec = s.items.resized_
    assert rec["id"].tolist() == [2, 4] and rec["from_size"].tolist() == ["20x20", "5x7"]
    assert set(rec["to_size"]) == {"12x10"} and rec["path"].iloc[0].endswith("2.png")
    assert s.items.paths[4].endswith("1.png")
    with pytest.warns(ImagesResizedWarning, match="5 of 5 images"):
        t = dw.Session.open(tmp_path, image_size=16)
    assert t.items.images.shape == (5, 16, 16)
    with pytest.raises(ValueError, match="size must be a positive"):
        dw.Session.open(tmp_path, image_size=0)
    np.savez(tmp_path.parent / "x.npz", X=np.eye(3))
    with pytest.raises(ValueError, match="image_size applies to a folder of image files"):
        dw.Session.open(tmp_path.parent / "x.npz", image_size=16)
    with pytest.warns(ImagesResizedWarning):
        load_image_folder(tmp_path)
    import warnings

    (tmp_path / "b" / "1.png").unlink()
    Image.open(tmp_path / "a" / "2.png").resize((12, 10)).save(tmp_path / "a" / "2.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # all one size: nothing resized, nothing said
        same = dw.Session.open(tmp_path, store=tmp_path / "labels.db")
    assert same.items.resized_.empty
