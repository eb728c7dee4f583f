"""Shared set-up of the LANCET tests."""
import numpy as np
import pytest

import dcai_widgets as dw


@pytest.fixture
def blobs_session(tmp_path):
    """``make(n_per=40, k=3, d=5, seed=0)``: a Session of ``k`` well-separated Gaussian blobs in ``d``
    dimensions (classes c0..c{k-1}, true labels known), stored in ``tmp_path/l.db``."""
    def make(n_per: int = 40, k: int = 3, d: int = 5, seed: int = 0) -> dw.Session:
        rng = np.random.default_rng(seed)
        centers = rng.normal(0, 10, (k, d))
        X = np.vstack([c + rng.normal(0, 1, (n_per, d)) for c in centers]).astype(np.float32)
        y = np.repeat(np.arange(k), n_per)
        return dw.Session.from_embeddings(X, [f"c{i}" for i in range(k)], y_true=y, store=tmp_path / "l.db")
    return make
