import numpy as np

from dcai_widgets.store import ArrayCache, content_hash


def test_get_or_compute_computes_once(tmp_path):
    calls = []
    c = ArrayCache(tmp_path)

    def compute():
        calls.append(1)
        return np.arange(6.0).reshape(3, 2)

    a = c.get_or_compute("x", compute)
    b = ArrayCache(tmp_path).get_or_compute("x", compute)
    assert calls == [1] and np.array_equal(a, b)


def test_corrupt_entry_is_recomputed(tmp_path):
    c = ArrayCache(tmp_path)
    c.path("x").parent.mkdir(parents=True, exist_ok=True)
    c.path("x").write_bytes(b"garbage")
    out = c.get_or_compute("x", lambda: np.ones(3))
    assert np.array_equal(out, np.ones(3))
    assert np.array_equal(np.load(c.path("x")), np.ones(3))


def test_content_hash_sees_content_dtype_and_shape():
    a = np.zeros((2, 3), np.float32)
    assert content_hash(a) == content_hash(a.copy())
    assert content_hash(a) != content_hash(a.reshape(3, 2))
    assert content_hash(a) != content_hash(a.astype(np.float64))
    b = a.copy()
    b[1, 2] = 1
    assert content_hash(a) != content_hash(b)
    assert content_hash(["a", "b"]) != content_hash(["ab"])
